//! Text to image: prompt encoding, the denoising loop with guidance, and decoding, in the same
//! order and with the same random draws as diffusers' `StableDiffusionPipeline`.
use super::error::{EngineError, Result};
pub use super::family::ModelDefaults;
use super::family::{Family, ModelInfo};
use super::loader::ModelFolder;
use super::models::clip::ClipTextModel;
use super::models::clip_config::ClipTextConfig;
use super::models::unet::{UNet2DConditionModel, UNetConditioning};
use super::models::unet_config::UNetConfig;
use super::models::vae::AutoencoderKl;
use super::models::vae_config::VaeConfig;
use super::pipeline_sdxl::{SdxlConditioning, SdxlText};
use super::preview::latent_preview;
use super::random::SeededNoise;
use super::schedulers::{self, SamplerKind, SchedulerConfig};
use super::tokenizer::ClipTokenizer;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Everything one text-to-image render needs, with every default already resolved.
#[derive(Debug, Clone)]
pub struct TextToImage {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub width: i64,
    pub height: i64,
    pub batch_size: i64,
    pub sampler: SamplerKind,
    /// Send a latent preview every this many steps (0: never), as previews cost a device sync.
    pub preview_every: usize,
}

/// An 8-bit RGB image, row-major.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// What the per-step callback sees.
#[derive(Debug)]
pub struct Progress {
    /// Steps done so far, 1..=steps.
    pub step: usize,
    pub steps: usize,
    pub timestep: f64,
    /// A cheap linear projection of the first image's latents, at latent resolution.
    pub preview: Option<Image>,
}

#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub encode_s: f64,
    pub denoise_s: f64,
    pub decode_s: f64,
}

#[derive(Debug)]
pub struct Output {
    pub images: Vec<Image>,
    /// The decoded images as floats in [0, 1], NHWC, before 8-bit rounding (for comparisons).
    pub float_images: Tensor,
    pub timings: Timings,
}

/// A loaded Stable Diffusion pipeline: the models stay loaded across renders.
pub struct StableDiffusion {
    folder: ModelFolder,
    device: Device,
    kind: Kind,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: UNet2DConditionModel,
    unet_config: UNetConfig,
    vae: AutoencoderKl,
    vae_config: VaeConfig,
    /// An fp32 copy of the VAE, loaded the first time a half-precision decode overflows.
    vae_fp32: OnceLock<AutoencoderKl>,
    scheduler_config: SchedulerConfig,
    info: ModelInfo,
    /// SDXL's second text encoder; None for SD 1.x/2.x.
    sdxl: Option<SdxlText>,
}

impl StableDiffusion {
    /// Loads every component of a diffusers folder onto `device`, computing in `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let folder = ModelFolder::open(dir)?;
        let info = ModelInfo::detect(dir)?;
        let tokenizer_dir = folder.component("tokenizer");
        let tokenizer = if tokenizer_dir.join("vocab.json").is_file() {
            ClipTokenizer::from_folder(&tokenizer_dir)?
        } else {
            // SD 2.x's OpenCLIP tokenizer pads with "!"; SD 1.x's and SDXL's first with EOS.
            let pad = match info.family {
                Family::Sd2 => "!",
                Family::Sd1 | Family::Sdxl => "<|endoftext|>",
            };
            ClipTokenizer::embedded(pad)?
        };

        // Every component is built before any mismatch is reported, so one error lists them all.
        let mut mismatches = Vec::new();
        let clip_config = ClipTextConfig::from_file(&folder.config("text_encoder", "config.json"))?;
        let weights = folder.weights("text_encoder", "model", device, kind)?;
        let text_encoder = ClipTextModel::new(&weights.root(), &clip_config)?;
        mismatches.extend(weights.finish().err());
        let sdxl = match info.family {
            Family::Sdxl => Some(SdxlText::load(&folder, device, kind, &mut mismatches)?),
            Family::Sd1 | Family::Sd2 => None,
        };

        let unet_config = UNetConfig::from_file(&folder.config("unet", "config.json"))?;
        let weights = folder.weights("unet", "diffusion_pytorch_model", device, kind)?;
        let unet = UNet2DConditionModel::new(&weights.root(), &unet_config)?;
        mismatches.extend(weights.finish().err());

        let vae_config = VaeConfig::from_file(&folder.config("vae", "config.json"))?;
        let weights = folder.weights("vae", "diffusion_pytorch_model", device, kind)?;
        let vae = AutoencoderKl::new(&weights.root(), &vae_config)?;
        mismatches.extend(weights.finish().err());
        if !mismatches.is_empty() {
            let report = mismatches
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            return Err(EngineError::Invalid(report));
        }

        let scheduler_config =
            SchedulerConfig::from_file(&folder.config("scheduler", "scheduler_config.json"))?;
        Ok(Self {
            folder,
            device,
            kind,
            tokenizer,
            text_encoder,
            unet,
            unet_config,
            vae,
            vae_config,
            vae_fp32: OnceLock::new(),
            scheduler_config,
            info,
            sdxl,
        })
    }

    /// What the folder holds (family, prediction type, inpainting, turbo).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The model's name for metadata: its folder's name.
    pub fn name(&self) -> String {
        self.folder.name()
    }

    /// How many pixels one latent pixel covers: 2^(VAE levels - 1).
    pub fn latent_scale_factor(&self) -> i64 {
        self.vae_config.latent_scale_factor()
    }

    /// The native size (the UNet's sample size times the latent scale factor), and the steps
    /// and guidance the model family renders well with.
    pub fn defaults(&self) -> ModelDefaults {
        self.info
            .defaults(&self.unet_config, self.latent_scale_factor())
    }

    /// Sizes must be multiples of 8 (as diffusers requires) and of the latent scale factor.
    pub fn check_size(&self, width: i64, height: i64) -> Result<()> {
        let multiple = self.latent_scale_factor().max(8);
        if width <= 0 || height <= 0 || width % multiple != 0 || height % multiple != 0 {
            let round = |v: i64| ((v.max(multiple) + multiple / 2) / multiple) * multiple;
            return Err(EngineError::Invalid(format!(
                "size {width}x{height} is not a multiple of {multiple} on both sides: try {}x{}",
                round(width),
                round(height)
            )));
        }
        Ok(())
    }

    /// Renders; `on_step` runs after every step, and `cancel` is checked before each step.
    pub fn generate(
        &self,
        request: &TextToImage,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &AtomicBool,
    ) -> Result<Output> {
        let _guard = tch::no_grad_guard();
        self.check_size(request.width, request.height)?;
        self.info.check_text_to_image()?;
        if request.batch_size < 1 {
            return Err(EngineError::Invalid(
                "the batch size must be at least 1".into(),
            ));
        }
        let guided = request.guidance_scale > 1.0;
        let batch = request.batch_size;

        let started = Instant::now();
        let (context, conditioning) = if let Some(sdxl) = &self.sdxl {
            let SdxlConditioning { context, added } = sdxl.condition(
                &self.tokenizer,
                &self.text_encoder,
                &request.prompt,
                &request.negative_prompt,
                guided,
                batch,
                request.height,
                request.width,
            )?;
            (context, added)
        } else {
            let positive = self.encode_prompt(&request.prompt, batch)?;
            let context = if guided {
                let negative = self.encode_prompt(&request.negative_prompt, batch)?;
                Tensor::cat(&[negative, positive], 0)
            } else {
                positive
            };
            (context, UNetConditioning::default())
        };
        self.synchronize();
        let encode_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut scheduler =
            schedulers::build(request.sampler, &self.scheduler_config, request.steps)?;
        let factor = self.latent_scale_factor();
        let shape = [
            batch,
            self.unet_config.in_channels,
            request.height / factor,
            request.width / factor,
        ];
        let draws = SeededNoise::new(request.seed, self.kind, self.device);
        let mut noise = |shape: &[i64]| draws.randn(shape);
        let mut latents = noise(&shape) * scheduler.init_noise_sigma();
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)
            } else {
                latents.shallow_clone()
            };
            let input = scheduler.scale_model_input(&input, i);
            if i == 0 {
                self.unet.check_inputs(&input, &context, &conditioning)?;
            }
            let prediction = self.unet.forward_with(&input, t, &context, &conditioning);
            let prediction = if guided {
                let halves = prediction.chunk(2, 0);
                &halves[0] + (&halves[1] - &halves[0]) * request.guidance_scale
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, i, &latents, &mut noise);
            let preview = (request.preview_every > 0 && ((i + 1) % request.preview_every == 0))
                .then(|| latent_preview(&latents));
            on_step(&Progress {
                step: i + 1,
                steps: timesteps.len(),
                timestep: t,
                preview,
            });
        }
        self.synchronize();
        let denoise_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let float_images = self.decode(&latents)?;
        let images = to_rgb8(&float_images);
        let decode_s = started.elapsed().as_secs_f64();
        Ok(Output {
            images,
            float_images,
            timings: Timings {
                encode_s,
                denoise_s,
                decode_s,
            },
        })
    }

    /// The text encoder's last hidden state for one prompt, repeated for the batch.
    fn encode_prompt(&self, prompt: &str, batch: i64) -> Result<Tensor> {
        let ids = self.tokenizer.encode_padded(prompt);
        let ids = Tensor::from_slice(&ids).unsqueeze(0).to_device(self.device);
        let hidden = self.text_encoder.forward(&ids)?.last_hidden_state;
        Ok(hidden.repeat([batch, 1, 1]))
    }

    /// Latents to images in [0, 1], NHWC, on the CPU. A half-precision VAE that overflows
    /// (NaN or inf) decodes again in fp32.
    fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let scaled = self.vae.unscale_latents(latents);
        let fp32_vae = || -> Result<&AutoencoderKl> {
            Ok(match self.vae_fp32.get() {
                Some(vae) => vae,
                None => {
                    let vae = load_vae(&self.folder, &self.vae_config, self.device, Kind::Float)?;
                    self.vae_fp32.get_or_init(|| vae)
                }
            })
        };
        // diffusers' SDXL pipeline upcasts an fp16 VAE whose config says force_upcast (SDXL's
        // overflows in fp16); its SD 1.x/2.x pipeline does not.
        if self.sdxl.is_some() && self.kind == Kind::Half && self.vae_config.force_upcast {
            let image = fp32_vae()?.decode(&scaled.to_kind(Kind::Float))?;
            return Ok(to_unit_nhwc(&image));
        }
        let mut image = self.vae.decode(&scaled)?;
        if self.kind != Kind::Float && !bool::try_from(image.isfinite().all())? {
            image = fp32_vae()?.decode(&scaled.to_kind(Kind::Float))?;
        }
        Ok(to_unit_nhwc(&image))
    }

    fn synchronize(&self) {
        if let Device::Cuda(n) = self.device {
            tch::Cuda::synchronize(n as i64);
        }
    }
}

fn load_vae(
    folder: &ModelFolder,
    config: &VaeConfig,
    device: Device,
    kind: Kind,
) -> Result<AutoencoderKl> {
    let weights = folder.weights("vae", "diffusion_pytorch_model", device, kind)?;
    let vae = AutoencoderKl::new(&weights.root(), config)?;
    weights.finish()?;
    Ok(vae)
}

/// Decoder output in [-1, 1] (NCHW) to floats in [0, 1], NHWC, on the CPU.
fn to_unit_nhwc(image: &Tensor) -> Tensor {
    (image.to_kind(Kind::Float) / 2.0 + 0.5)
        .clamp(0.0, 1.0)
        .permute([0, 2, 3, 1])
        .to_device(Device::Cpu)
}

/// Floats in [0, 1] (NHWC) to 8-bit images, rounding as diffusers' `numpy_to_pil` does.
fn to_rgb8(images: &Tensor) -> Vec<Image> {
    let bytes = (images * 255.0).round().to_kind(Kind::Uint8).contiguous();
    let (n, h, w) = (bytes.size()[0], bytes.size()[1], bytes.size()[2]);
    (0..n)
        .map(|i| {
            let one = bytes.get(i);
            let len = (h * w * 3) as usize;
            let mut rgb = vec![0u8; len];
            one.copy_data(&mut rgb, len);
            Image {
                width: w as u32,
                height: h as u32,
                rgb,
            }
        })
        .collect()
}
