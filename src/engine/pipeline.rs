//! Text to image, img2img and inpainting: prompt encoding, the denoising loop with guidance,
//! and decoding, in the same order and with the same random draws as diffusers'
//! `StableDiffusionPipeline` (and its img2img and inpainting pipelines, see `img2img`).
use super::error::{EngineError, Result};
pub use super::family::ModelDefaults;
use super::family::{Family, ModelInfo};
use super::img2img::{self, InitImage};
use super::loader::{ModelSource, VaeOverride};
use super::lora::{LoraSet, LoraSpec};
use super::memory_estimate;
use super::models::attention::attention_slicing;
use super::models::autoencoder_tiny::AutoencoderTiny;
use super::models::clip::ClipTextModel;
use super::models::clip_config::ClipTextConfig;
use super::models::embeddings::guidance_scale_embedding;
use super::models::unet::{UNet2DConditionModel, UNetConditioning};
use super::models::unet_config::UNetConfig;
use super::models::vae::{AutoencoderKl, VaeTiling};
use super::models::vae_config::VaeConfig;
use super::offload::{Component, Move, Offload};
use super::oom;
use super::pipeline_sdxl::{SdxlConditioning, SdxlPrompt, SdxlText};
use super::preview::latent_preview;
use super::prompt::{PromptEncoder, TextualInversions};
use super::random::SeededNoise;
use super::schedulers::config::TimestepSpacing;
use super::schedulers::{self, SamplerKind, SamplerOptions, Schedule, SchedulerConfig};
use super::tokenizer::ClipTokenizer;
use super::weights::Weights;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Everything one render needs, with every default already resolved. Despite the name it
/// carries img2img and inpainting too: `init` holds the image (and mask) to start from.
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
    /// How noise levels are spaced; `Default` follows the model's scheduler config.
    pub schedule: Schedule,
    /// Overrides the model's `timestep_spacing` (None: the config's, or the sampler's default).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Send a latent preview every this many steps (0: never), as previews cost a device sync.
    pub preview_every: usize,
    /// AUTOMATIC1111's clip skip: 0 or 1 use the text encoder's last layer, N > 1 the N-th from
    /// the end through the final layer norm (diffusers' `clip_skip` is this minus one).
    pub clip_skip: u32,
    /// diffusers' `guidance_rescale` (0 is off, 0.7 is typical for zero-terminal-SNR models).
    pub guidance_rescale: f64,
    /// Textual-inversion embeddings the prompts may name: `.safetensors` files or folders.
    pub embeddings: Vec<PathBuf>,
    /// img2img / inpainting: the image to start from, at `width` x `height`.
    pub init: Option<InitImage>,
}

impl Default for TextToImage {
    /// diffusers' pipeline defaults at SD 1.x's native size, with no prompt.
    fn default() -> Self {
        TextToImage {
            prompt: String::new(),
            negative_prompt: String::new(),
            steps: 50,
            guidance_scale: 7.5,
            seed: 0,
            width: 512,
            height: 512,
            batch_size: 1,
            sampler: SamplerKind::Euler,
            schedule: Schedule::Default,
            timestep_spacing: None,
            preview_every: 0,
            clip_skip: 0,
            guidance_rescale: 0.0,
            embeddings: Vec::new(),
            init: None,
        }
    }
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
    /// What the user should hear about this render (a decode retried in tiles).
    pub notes: Vec<String>,
}

/// What a load takes besides the model: LoRAs fused into the weights, a replacement VAE, and
/// for single-file checkpoints a diffusers folder whose configs replace the embedded ones.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub loras: Vec<LoraSpec>,
    pub vae: Option<PathBuf>,
    pub config: Option<PathBuf>,
    /// How renders save memory; with `offload` the weights load into host memory.
    pub memory: MemoryOptions,
}

/// How far a load has come, for a progress display: the component now loading and the share
/// of the whole load done before it (by the components' usual sizes: the UNet is most of it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadProgress {
    pub component: &'static str,
    pub fraction: f32,
}

/// The share of a load each component takes, in load order (roughly their parameter counts).
fn load_shares(family: Family) -> &'static [(&'static str, f32)] {
    match family {
        Family::Sd1 | Family::Sd2 => &[
            ("tokenizer", 0.01),
            ("text encoder", 0.11),
            ("unet", 0.78),
            ("vae", 0.10),
        ],
        Family::Sdxl => &[
            ("tokenizer", 0.01),
            ("text encoder", 0.04),
            ("text encoder 2", 0.19),
            ("unet", 0.70),
            ("vae", 0.06),
        ],
    }
}

/// How renders trade speed for memory (docs/PERFORMANCE.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Decode (and encode init images) in tiles, as diffusers' `vae.enable_tiling()`. Renders
    /// above [`AUTO_TILING_PIXELS`] are tiled whatever this says.
    pub vae_tiling: bool,
    /// Attention in slices (diffusers' `enable_attention_slicing()`), and VAE tiling.
    pub low_memory: bool,
    /// Model CPU offload (diffusers' `enable_model_cpu_offload()`, see `engine::offload`):
    /// weights wait in host memory and each component moves to the device only while it runs.
    /// It does on any device what it says; on a CPU that is only bookkeeping, so
    /// [`MemoryOptions::new`] turns it on for CUDA alone.
    pub offload: bool,
}

impl MemoryOptions {
    /// The options the `--vae-tiling` and `--low-memory` flags ask for on `device`:
    /// `low_memory` adds model CPU offload on a GPU, and nothing more on a CPU.
    pub fn new(vae_tiling: bool, low_memory: bool, device: Device) -> Self {
        Self {
            vae_tiling,
            low_memory,
            offload: false,
        }
        .on(device)
    }

    /// These options where the device is known: offload follows from `low_memory` on CUDA.
    pub fn on(self, device: Device) -> Self {
        Self {
            offload: self.low_memory && device.is_cuda(),
            ..self
        }
    }
}

/// Images with more pixels than this (1024x1024) are decoded in tiles even without
/// `--vae-tiling`: a whole SD decode at that size needs several GB for its activations alone.
pub const AUTO_TILING_PIXELS: i64 = 1024 * 1024;

/// A loaded Stable Diffusion pipeline: the models stay loaded across renders.
pub struct StableDiffusion {
    memory: MemoryOptions,
    /// TAESD replacing the VAE's decoder (`--fast-decoder`).
    fast_decoder: Option<AutoencoderTiny>,
    /// TAESD drawing the step previews instead of the cheap latent-to-RGB map.
    preview_decoder: Option<AutoencoderTiny>,
    source: ModelSource,
    vae_override: Option<VaeOverride>,
    loras: Vec<LoraSpec>,
    device: Device,
    kind: Kind,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    clip_config: ClipTextConfig,
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
    /// Every component's tensors, moved between host and device when offload is on.
    offload: Offload,
}

impl StableDiffusion {
    /// Loads every component of a diffusers folder onto `device`, computing in `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Self::load_with(dir, device, kind, &LoadOptions::default())
    }

    /// Loads a diffusers folder or a single-file checkpoint, with LoRAs and a VAE override.
    pub fn load_with(
        path: &Path,
        device: Device,
        kind: Kind,
        options: &LoadOptions,
    ) -> Result<Self> {
        Self::load_with_progress(path, device, kind, options, &mut |_| {})
    }

    /// `load_with`, telling `progress` as each component starts loading. Running out of
    /// memory is an `OutOfMemory` error, not a panic.
    pub fn load_with_progress(
        path: &Path,
        device: Device,
        kind: Kind,
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self> {
        oom::enter("loading the model");
        oom::catch(|| Self::load_unguarded(path, device, kind, options, progress))
    }

    fn load_unguarded(
        path: &Path,
        device: Device,
        kind: Kind,
        options: &LoadOptions,
        progress: &mut dyn FnMut(LoadProgress),
    ) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let source = ModelSource::open(path, options.config.as_deref())?;
        let info = ModelInfo::from_source(&source)?;
        let shares = load_shares(info.family);
        let mut stage = |component: &'static str| {
            let before = shares.iter().take_while(|(c, _)| *c != component);
            progress(LoadProgress {
                component,
                fraction: before.fold(0.0, |done, (_, share)| done + share),
            });
        };
        stage("tokenizer");
        // SD 2.x's OpenCLIP tokenizer pads with "!"; SD 1.x's and SDXL's first with EOS.
        let pad = match info.family {
            Family::Sd2 => "!",
            Family::Sd1 | Family::Sdxl => "<|endoftext|>",
        };
        let tokenizer = source.tokenizer("tokenizer", pad)?;
        let loras = LoraSet::load(&options.loras)?.with_unet_config(unet_json(&source)?);
        loras.check_components(lora_components(info.family))?;

        // With offload the weights load into host memory: the device may not hold them all.
        let host = options.memory.offload.then_some(Device::Cpu);
        let offload = Offload::new(device);
        offload.set_enabled(options.memory.offload)?;
        // Every component is built before any mismatch is reported, so one error lists them all.
        let mut mismatches = Vec::new();
        let clip_config: ClipTextConfig =
            source.config("text_encoder", "config.json", ClipTextConfig::validate)?;
        stage("text encoder");
        let (text_encoder, tensors) = load_text_encoder(
            &source,
            &clip_config,
            &loras,
            (device, kind, host),
            &mut mismatches,
        )?;
        offload.register(Component::TextEncoder, tensors, host.is_some())?;
        let sdxl = match info.family {
            Family::Sdxl => Some({
                stage("text encoder 2");
                let text =
                    SdxlText::load_placed(&source, &loras, device, kind, host, &mut mismatches)?;
                offload.register(
                    Component::TextEncoder2,
                    text.text_encoder_2_tensors(),
                    host.is_some(),
                )?;
                text
            }),
            Family::Sd1 | Family::Sd2 => None,
        };
        let unet_config: UNetConfig = source.config("unet", "config.json", |c: &UNetConfig| {
            c.layout().map(|_| ())
        })?;
        stage("unet");
        let (unet, tensors) = load_unet(
            &source,
            &unet_config,
            &loras,
            (device, kind, host),
            &mut mismatches,
        )?;
        offload.register(Component::Unet, tensors, host.is_some())?;

        stage("vae");
        let vae_override = options.vae.clone().map(|path| VaeOverride { path });
        let vae_config = vae_config(&source, vae_override.as_ref())?;
        let loaded = load_vae(
            &source,
            vae_override.as_ref(),
            &vae_config,
            (device, kind, host),
        );
        let vae = match loaded {
            Ok((vae, tensors)) => {
                offload.register(Component::Vae, tensors, host.is_some())?;
                Some(vae)
            }
            Err(e @ EngineError::WeightMismatch { .. }) => {
                mismatches.push(e);
                None
            }
            Err(e) => return Err(e),
        };
        if !mismatches.is_empty() {
            let report = mismatches
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n");
            return Err(EngineError::Invalid(report));
        }
        let vae = vae.ok_or_else(|| EngineError::Invalid("the VAE did not load".into()))?;

        let (text, where_) = source.config_text("scheduler", "scheduler_config.json")?;
        let scheduler_config = SchedulerConfig::from_json(&text).map_err(|e| match e {
            EngineError::Invalid(m) => EngineError::Invalid(format!("{}: {m}", where_.display())),
            other => other,
        })?;
        Ok(Self {
            memory: options.memory,
            fast_decoder: None,
            preview_decoder: None,
            source,
            vae_override,
            loras: options.loras.clone(),
            device,
            kind,
            tokenizer,
            text_encoder,
            clip_config,
            unet,
            unet_config,
            vae,
            vae_config,
            vae_fp32: OnceLock::new(),
            scheduler_config,
            info,
            sdxl,
            offload,
        })
    }

    /// Sets how the next renders save memory. Turning offload on or off moves the weights at
    /// the start of the next render; a load with `LoadOptions::memory` never has them all on
    /// the device at once.
    pub fn set_memory_options(&mut self, memory: MemoryOptions) {
        self.memory = memory;
    }

    /// The offload moves made since the last call, oldest first (see `engine::offload`).
    pub fn offload_log(&self) -> Vec<Move> {
        self.offload.take_log()
    }

    /// For tests without a GPU: see [`Offload::park_as`].
    #[doc(hidden)]
    pub fn park_offloaded_as(&self, kind: Kind) -> Result<()> {
        self.offload.park_as(kind)
    }

    /// Where this model's weights wait when offload is on (None: on the device).
    fn host(&self) -> Option<Device> {
        self.memory.offload.then_some(Device::Cpu)
    }

    /// Loads a TAESD folder (diffusers' `AutoencoderTiny`) as the fast decoder, in host memory
    /// when offload is on so that it too moves to the device only to decode.
    pub fn load_fast_decoder(&mut self, dir: &Path) -> Result<()> {
        let (taesd, tensors) =
            AutoencoderTiny::load_placed(dir, self.device, self.kind, self.host())?;
        self.check_tiny_decoder(&taesd, "fast decoder")?;
        self.offload
            .register(Component::FastDecoder, tensors, self.host().is_some())?;
        self.fast_decoder = Some(taesd);
        Ok(())
    }

    pub fn memory_options(&self) -> MemoryOptions {
        self.memory
    }

    /// Decodes with TAESD (diffusers' `AutoencoderTiny`) instead of the VAE; None restores the VAE.
    pub fn set_fast_decoder(&mut self, decoder: Option<AutoencoderTiny>) -> Result<()> {
        if let Some(d) = &decoder {
            self.check_tiny_decoder(d, "fast decoder")?;
        }
        // One built elsewhere stays where it was built.
        self.offload.unregister(Component::FastDecoder);
        self.fast_decoder = decoder;
        Ok(())
    }

    /// Draws step previews with TAESD (full size, close to the final image) instead of the
    /// latent-to-RGB map; None restores the map.
    pub fn set_preview_decoder(&mut self, decoder: Option<AutoencoderTiny>) -> Result<()> {
        if let Some(d) = &decoder {
            self.check_tiny_decoder(d, "preview decoder")?;
        }
        self.preview_decoder = decoder;
        Ok(())
    }

    fn check_tiny_decoder(&self, d: &AutoencoderTiny, what: &str) -> Result<()> {
        let (theirs, ours) = (d.latent_scale_factor(), self.latent_scale_factor());
        let channels = d.config().latent_channels;
        if theirs != ours || channels != self.vae_config.latent_channels {
            return Err(EngineError::Invalid(format!(
                "this {what} takes {channels}-channel latents at 1/{theirs} scale but the \
                 model makes {}-channel latents at 1/{ours}: use the TAESD made for this model \
                 family (taesd for SD 1.x/2.x, taesdxl for SDXL)",
                self.vae_config.latent_channels
            )));
        }
        Ok(())
    }

    /// The first image of `latents` as a step preview.
    fn preview(&self, latents: &Tensor) -> Image {
        if let Some(taesd) = &self.preview_decoder {
            let first = latents.narrow(0, 0, 1) / taesd.config().scaling_factor;
            // A preview that cannot be drawn is not worth failing the render for.
            if let Ok(image) = taesd.decode(&first) {
                if let Some(image) = to_rgb8(&to_unit_nhwc(&image)).into_iter().next() {
                    return image;
                }
            }
        }
        latent_preview(latents)
    }

    /// The VAE's tiles when this render of `pixels` pixels is to be tiled.
    fn tiling_for(&self, vae: &AutoencoderKl, pixels: i64) -> Option<VaeTiling> {
        let m = self.memory;
        (m.vae_tiling || m.low_memory || pixels > AUTO_TILING_PIXELS).then(|| vae.default_tiling())
    }

    /// What this render's activations need (see `memory_estimate`); the weights are loaded.
    pub fn estimate_memory(
        &self,
        request: &TextToImage,
    ) -> (memory_estimate::RenderSize, memory_estimate::Estimate) {
        let pixels = request.width * request.height;
        let size = memory_estimate::RenderSize {
            width: request.width,
            height: request.height,
            batch: request.batch_size,
            guided: request.guidance_scale > 1.0,
            vae_tile: self.tiling_for(&self.vae, pixels).map(|t| t.latent_tile),
            sliced_attention: self.memory.low_memory,
        };
        let shape = memory_estimate::ModelShape::from_configs(&self.unet_config, &self.vae_config);
        let estimate = memory_estimate::estimate(&shape, &size, self.kind)
            .with_weights(&self.weight_phases(), self.memory.offload);
        (size, estimate)
    }

    /// The bytes of what sits on the device together in each stage of a render: the text
    /// encoders, the UNet, the VAE, the fast decoder, the fp32 VAE (those loaded).
    fn weight_phases(&self) -> Vec<u64> {
        let bytes = |c| self.offload.bytes(c).unwrap_or(0);
        vec![
            bytes(Component::TextEncoder) + bytes(Component::TextEncoder2),
            bytes(Component::Unet),
            bytes(Component::Vae),
            bytes(Component::FastDecoder),
            bytes(Component::VaeFp32),
        ]
    }

    /// Refuses a render that cannot fit in the memory free now (RAM on a CPU; on CUDA the
    /// GPU's, from nvidia-smi, where it answers).
    fn check_memory(&self, request: &TextToImage) -> Result<()> {
        let (size, mut estimate) = self.estimate_memory(request);
        if self.device == Device::Cpu {
            // Host and device are one: nothing more is needed to move a component in.
            estimate.to_load = 0;
        }
        let free = match self.device {
            Device::Cuda(n) => crate::memory::gpu_mb(&format!("cuda:{n}"))
                .map(|(used, total)| total.saturating_sub(used) << 20),
            _ => memory_estimate::available_ram(),
        };
        memory_estimate::check_fits(&estimate, free, &size)
    }

    /// What the model is (family, prediction type, inpainting, turbo).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The LoRAs fused into the weights now.
    pub fn loras(&self) -> &[LoraSpec] {
        &self.loras
    }

    /// Replaces the fused LoRAs: the text encoder and UNet are rebuilt from the model's files
    /// with the new LoRAs (none: the base weights, bit for bit).
    pub fn set_loras(&mut self, loras: &[LoraSpec]) -> Result<()> {
        if loras == self.loras.as_slice() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let set = LoraSet::load(loras)?.with_unet_config(unet_json(&self.source)?);
        set.check_components(lora_components(self.info.family))?;
        let mut mismatches = Vec::new();
        let target = (self.device, self.kind, self.host());
        let (text_encoder, text_tensors) = load_text_encoder(
            &self.source,
            &self.clip_config,
            &set,
            target,
            &mut mismatches,
        )?;
        let (unet, unet_tensors) = load_unet(
            &self.source,
            &self.unet_config,
            &set,
            target,
            &mut mismatches,
        )?;
        if let Some(e) = mismatches.into_iter().next() {
            return Err(e);
        }
        let on_host = target.2.is_some();
        if let Some(sdxl) = &mut self.sdxl {
            sdxl.set_loras(&self.source, &set, target.2)?;
            self.offload.register(
                Component::TextEncoder2,
                sdxl.text_encoder_2_tensors(),
                on_host,
            )?;
        }
        // The rebuilt models replace the old ones, whose tensors the registry must not keep.
        self.offload
            .register(Component::TextEncoder, text_tensors, on_host)?;
        self.offload
            .register(Component::Unet, unet_tensors, on_host)?;
        self.text_encoder = text_encoder;
        self.unet = unet;
        self.loras = loras.to_vec();
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The model's name for metadata: its folder's name or its file's stem.
    pub fn name(&self) -> String {
        self.source.name()
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
    /// Running out of memory anywhere is an `OutOfMemory` error saying what was tried.
    pub fn generate(
        &self,
        request: &TextToImage,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &AtomicBool,
    ) -> Result<Output> {
        oom::enter("preparing the render");
        oom::catch(|| self.render(request, on_step, cancel)).map_err(|e| {
            let (size, estimate) = self.estimate_memory(request);
            oom::with_tried(e, &size, &estimate)
        })
    }

    fn render(
        &self,
        request: &TextToImage,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &AtomicBool,
    ) -> Result<Output> {
        let _guard = tch::no_grad_guard();
        let _slicing = attention_slicing(self.memory.low_memory);
        self.check_size(request.width, request.height)?;
        let init = request.init.as_ref();
        let mask = init.and_then(|i| i.mask.as_ref());
        if let Some(init) = init {
            init.check(request.width, request.height)?;
        }
        // An inpainting UNet needs both an image and a mask; a regular one blends latents.
        if !(self.info.inpainting && mask.is_some()) {
            self.info.check_text_to_image()?;
        }
        if request.batch_size < 1 {
            return Err(EngineError::Invalid(
                "the batch size must be at least 1".into(),
            ));
        }
        let batch = request.batch_size;
        self.check_memory(request)?;
        self.offload.set_enabled(self.memory.offload)?;
        // LCM-style UNets (time_cond_proj_dim) take the guidance scale as an embedding and run
        // without classifier-free guidance, as diffusers' pipelines do.
        let conditioning = UNetConditioning {
            timestep_cond: self.unet_config.time_cond_proj_dim.map(|dim| {
                let w = Tensor::full(
                    [batch],
                    request.guidance_scale - 1.0,
                    (Kind::Float, Device::Cpu),
                );
                guidance_scale_embedding(&w, dim)
                    .to_kind(self.kind)
                    .to_device(self.device)
            }),
            ..UNetConditioning::default()
        };
        let guided = request.guidance_scale > 1.0 && conditioning.timestep_cond.is_none();

        let started = Instant::now();
        let text_on = self
            .offload
            .run(&[Component::TextEncoder, Component::TextEncoder2])?;
        oom::enter("encoding the prompt");
        let (context, conditioning) = if let Some(sdxl) = &self.sdxl {
            let prompt = SdxlPrompt {
                prompt: &request.prompt,
                negative: &request.negative_prompt,
                clip_skip: request.clip_skip,
                embeddings: &request.embeddings,
            };
            let SdxlConditioning { context, added } = sdxl.condition_with(
                &self.tokenizer,
                &self.text_encoder,
                &prompt,
                guided,
                batch,
                request.height,
                request.width,
            )?;
            let added = UNetConditioning {
                timestep_cond: conditioning.timestep_cond,
                ..added
            };
            (context, added)
        } else {
            (self.encode_prompts(request, guided)?, conditioning)
        };
        drop(text_on);
        self.synchronize();
        let encode_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let options = SamplerOptions {
            schedule: request.schedule,
            timestep_spacing: request.timestep_spacing,
            noise_sampler_seed: Some(request.seed),
        };
        let mut scheduler = schedulers::build(
            request.sampler,
            &options,
            &self.scheduler_config,
            request.steps,
        )?;
        let factor = self.latent_scale_factor();
        let (latent_h, latent_w) = (request.height / factor, request.width / factor);
        let shape = [batch, self.vae_config.latent_channels, latent_h, latent_w];
        let draws = SeededNoise::new(request.seed, self.kind, self.device);
        let mut noise = |shape: &[i64]| draws.randn(shape);
        let timesteps = scheduler.timesteps().to_vec();
        let begin = match init {
            Some(init) => {
                let begin = schedulers::img2img_begin(&*scheduler, request.steps, init.strength)?;
                scheduler.set_begin_index(begin);
                begin
            }
            None => 0,
        };
        let start = self.start_latents(
            request,
            &shape,
            scheduler.as_ref(),
            begin,
            guided,
            &mut noise,
        )?;
        let mut latents = start.latents;
        let runs = timesteps.len() - begin;
        let unet_on = self.offload.run(&[Component::Unet])?;
        oom::enter("denoising");
        for (i, &t) in timesteps.iter().enumerate().skip(begin) {
            if cancel.load(Ordering::Relaxed) {
                return Err(EngineError::Cancelled);
            }
            let input = if guided {
                Tensor::cat(&[&latents, &latents], 0)
            } else {
                latents.shallow_clone()
            };
            let mut input = scheduler.scale_model_input(&input, i);
            if let Some((mask, masked)) = &start.unet_extra {
                input = Tensor::cat(&[&input, mask, masked], 1);
            }
            if i == begin {
                self.unet.check_inputs(&input, &context, &conditioning)?;
            }
            crate::fault::out_of_memory("unet", self.device);
            let prediction = self.unet.forward_with(&input, t, &context, &conditioning);
            let prediction = if guided {
                let halves = prediction.chunk(2, 0);
                let guided = &halves[0] + (&halves[1] - &halves[0]) * request.guidance_scale;
                rescale_guidance(guided, &halves[1], request.guidance_rescale)
            } else {
                prediction
            };
            latents = scheduler.step(&prediction, i, &latents, &mut noise);
            // Latent blending (a regular UNet inpainting): outside the mask, the image noised
            // to the next step's level.
            if let Some(blend) = &start.blend {
                let known = if i + 1 < timesteps.len() {
                    scheduler.add_noise(&blend.image_latents, &blend.noise, i + 1)
                } else {
                    blend.image_latents.shallow_clone()
                };
                latents = (blend.mask.ones_like() - &blend.mask) * known + &blend.mask * &latents;
            }
            let step = i + 1 - begin;
            let preview = (request.preview_every > 0 && (step % request.preview_every == 0))
                .then(|| self.preview(&latents));
            on_step(&Progress {
                step,
                steps: runs,
                timestep: t,
                preview,
            });
        }
        drop(unet_on);
        self.synchronize();
        let denoise_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let mut notes = Vec::new();
        let float_images = self.decode(&latents, &mut notes)?;
        let mut images = to_rgb8(&float_images);
        if let (Some(init), Some(mask)) = (init, mask.filter(|m| m.keep_unmasked)) {
            let blurred = mask.blurred();
            images = images
                .iter()
                .map(|image| blurred.overlay(&init.image, image))
                .collect::<Result<_>>()?;
        }
        let decode_s = started.elapsed().as_secs_f64();
        Ok(Output {
            images,
            float_images,
            notes,
            timings: Timings {
                encode_s,
                denoise_s,
                decode_s,
            },
        })
    }

    /// The latents the loop starts from: noise for text to image; for img2img the image's
    /// latents noised to entry `begin`; for inpainting as diffusers' inpaint pipeline, plus the
    /// 9-channel UNet's mask and masked-image latents or a regular UNet's blending inputs.
    /// The VAE's posterior draws and the noise are drawn in diffusers' order.
    fn start_latents(
        &self,
        request: &TextToImage,
        shape: &[i64; 4],
        scheduler: &dyn schedulers::Scheduler,
        begin: usize,
        guided: bool,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Result<StartLatents> {
        let batch = shape[0];
        let Some(init) = &request.init else {
            return Ok(StartLatents {
                latents: noise(shape) * scheduler.init_noise_sigma(),
                unet_extra: None,
                blend: None,
            });
        };
        let image = img2img::image_tensor(&init.image);
        let Some(mask) = &init.mask else {
            let image_latents = img2img::repeat_batch(&self.encode_image(&image, false)?, batch);
            let drawn = noise(shape);
            return Ok(StartLatents {
                latents: scheduler.add_noise(&image_latents, &drawn, begin),
                unet_extra: None,
                blend: None,
            });
        };
        let nine = self.info.inpainting;
        let full = init.strength == 1.0;
        let binarized = mask.blurred().binarized();
        // diffusers encodes the image before drawing the noise only when it needs its latents.
        let image_latents = if !nine || !full {
            Some(img2img::repeat_batch(
                &self.encode_image(&image, true)?,
                batch,
            ))
        } else {
            None
        };
        let drawn = noise(shape);
        let latents = match (&image_latents, full) {
            (Some(known), false) => scheduler.add_noise(known, &drawn, begin),
            _ => &drawn * scheduler.init_noise_sigma(),
        };
        // The masked image is encoded (one more posterior draw) even when a regular UNet never
        // uses it, as diffusers does: later draws stay aligned.
        let masked = self.encode_image(&img2img::masked_image(&image, &binarized), true)?;
        let masked = img2img::repeat_batch(&masked, batch);
        let latent_mask = img2img::to_model(
            &img2img::repeat_batch(&img2img::latent_mask(&binarized, shape[2], shape[3]), batch),
            self.kind,
            self.device,
        );
        if nine {
            let twice = |t: &Tensor| {
                if guided {
                    Tensor::cat(&[t, t], 0)
                } else {
                    t.shallow_clone()
                }
            };
            return Ok(StartLatents {
                latents,
                unet_extra: Some((twice(&latent_mask), twice(&masked))),
                blend: None,
            });
        }
        let image_latents = image_latents.ok_or_else(|| {
            EngineError::Invalid("inpainting lost the image latents: please report this".into())
        })?;
        Ok(StartLatents {
            latents,
            unet_extra: None,
            blend: Some(Blend {
                image_latents,
                noise: drawn,
                mask: latent_mask,
            }),
        })
    }

    /// An image (`[1, 3, H, W]` in [-1, 1]) to scaled latents in the model's kind: the VAE's
    /// posterior sampled with the next draws of the seeded generator (diffusers'
    /// `retrieve_latents(..., generator)`). SDXL pipelines encode with a half-precision VAE
    /// upcast to fp32 when its config says force_upcast, drawing in fp32 then. Inpainting
    /// pipelines scale by `scaling_factor` alone; img2img ones as the VAE config says (SDXL's
    /// per-channel statistics when set).
    fn encode_image(&self, image: &Tensor, inpainting: bool) -> Result<Tensor> {
        let upcast =
            self.sdxl.is_some() && self.kind != Kind::Float && self.vae_config.force_upcast;
        let (vae, kind, component) = if upcast {
            (self.vae_fp32()?, Kind::Float, Component::VaeFp32)
        } else {
            (&self.vae, self.kind, Component::Vae)
        };
        let _on = self.offload.run(&[component])?;
        let image = image.to_kind(kind).to_device(self.device);
        let (_, _, h, w) = image.size4()?;
        let posterior = match self.tiling_for(vae, h * w) {
            Some(tiling) => vae.encode_tiled(&image, &tiling)?,
            None => vae.encode(&image)?,
        };
        // The caller holds the seeded global generator (SeededNoise) for the whole render.
        let draw = Tensor::randn(posterior.mean.size(), (kind, Device::Cpu));
        let sample = posterior.sample(&draw)?.to_kind(self.kind);
        Ok(if inpainting {
            sample * self.vae_config.scaling_factor
        } else {
            vae.scale_latents(&sample)
        })
    }

    /// The fp32 VAE, loaded on first use.
    fn vae_fp32(&self) -> Result<&AutoencoderKl> {
        Ok(match self.vae_fp32.get() {
            Some(vae) => vae,
            None => {
                let (vae, tensors) = load_vae(
                    &self.source,
                    self.vae_override.as_ref(),
                    &self.vae_config,
                    (self.device, Kind::Float, self.host()),
                )?;
                self.offload
                    .register(Component::VaeFp32, tensors, self.host().is_some())?;
                self.vae_fp32.get_or_init(|| vae)
            }
        })
    }

    /// The prompt in AUTOMATIC1111's syntax (see `engine::prompt`), after the negative prompt
    /// when guided (both padded to the same number of chunks), repeated for the batch.
    fn encode_prompts(&self, request: &TextToImage, guided: bool) -> Result<Tensor> {
        let dim = self.text_encoder.hidden_size();
        let embeddings = TextualInversions::load(&request.embeddings, &self.tokenizer, dim)?;
        let encoder = PromptEncoder::new(
            &self.tokenizer,
            &self.text_encoder,
            request.clip_skip,
            &embeddings,
        )?;
        let batch = [request.batch_size, 1, 1];
        if !guided {
            return Ok(encoder.encode(&request.prompt)?.repeat(batch));
        }
        let (positive, negative) =
            encoder.encode_pair(&request.prompt, &request.negative_prompt)?;
        Ok(Tensor::cat(
            &[negative.repeat(batch), positive.repeat(batch)],
            0,
        ))
    }

    /// Latents to images in [0, 1], NHWC, on the CPU. A whole-image decode that runs out of
    /// memory decodes again in tiles (as `--vae-tiling`), with a note saying so.
    fn decode(&self, latents: &Tensor, notes: &mut Vec<String>) -> Result<Tensor> {
        oom::enter("decoding");
        match oom::catch(|| self.decode_with(latents, false)) {
            Err(EngineError::OutOfMemory { detail, .. })
                if self.fast_decoder.is_none() && !self.decodes_in_tiles(latents) =>
            {
                notes.push(format!(
                    "the VAE decode ran out of memory ({detail}): decoded again in tiles, as \
                     --vae-tiling does"
                ));
                oom::enter("decoding in tiles");
                self.decode_with(latents, true)
            }
            other => other,
        }
    }

    /// Whether these latents decode in tiles already (`--vae-tiling`, `--low-memory`, size).
    fn decodes_in_tiles(&self, latents: &Tensor) -> bool {
        self.tiling_for(&self.vae, self.image_pixels(latents))
            .is_some()
    }

    /// The pixels of one image decoded from `latents` ([N, C, H, W]).
    fn image_pixels(&self, latents: &Tensor) -> i64 {
        let factor = self.latent_scale_factor();
        latents.size().iter().rev().take(2).product::<i64>() * factor * factor
    }

    /// The decode; `tiles` forces tiling. A half-precision VAE that overflows (NaN or inf)
    /// decodes again in fp32.
    fn decode_with(&self, latents: &Tensor, tiles: bool) -> Result<Tensor> {
        if let Some(taesd) = &self.fast_decoder {
            let _on = self.offload.run(&[Component::FastDecoder])?;
            let image = taesd.decode(&(latents / taesd.config().scaling_factor))?;
            return Ok(to_unit_nhwc(&image));
        }
        let scaled = self.vae.unscale_latents(latents);
        let pixels = self.image_pixels(&scaled);
        let tiling = |vae: &AutoencoderKl| {
            self.tiling_for(vae, pixels)
                .or_else(|| tiles.then(|| vae.default_tiling()))
        };
        if tiling(&self.vae).is_none() {
            crate::fault::out_of_memory("decode", self.device);
        }
        let decode = |vae: &AutoencoderKl, z: &Tensor| match tiling(vae) {
            Some(tiling) => vae.decode_tiled(z, &tiling),
            None => vae.decode(z),
        };
        let fp32_decode = || -> Result<Tensor> {
            let vae = self.vae_fp32()?;
            let _on = self.offload.run(&[Component::VaeFp32])?;
            decode(vae, &scaled.to_kind(Kind::Float))
        };
        // diffusers' SDXL pipeline upcasts an fp16 VAE whose config says force_upcast (SDXL's
        // overflows in fp16); its SD 1.x/2.x pipeline does not.
        if self.sdxl.is_some() && self.kind == Kind::Half && self.vae_config.force_upcast {
            return Ok(to_unit_nhwc(&fp32_decode()?));
        }
        let mut image = {
            let _on = self.offload.run(&[Component::Vae])?;
            decode(&self.vae, &scaled)?
        };
        if self.kind != Kind::Float && !bool::try_from(image.isfinite().all())? {
            image = fp32_decode()?;
        }
        Ok(to_unit_nhwc(&image))
    }

    fn synchronize(&self) {
        if let Device::Cuda(n) = self.device {
            tch::Cuda::synchronize(n as i64);
        }
    }
}

/// Where the denoising loop starts, and what inpainting adds to each step.
struct StartLatents {
    latents: Tensor,
    /// The 9-channel UNet's extra inputs: the latent-size mask and the masked image's latents
    /// (doubled for guidance), concatenated after the scaled latents.
    unet_extra: Option<(Tensor, Tensor)>,
    /// A regular UNet's latent blending.
    blend: Option<Blend>,
}

/// What latent blending mixes back in after each step.
struct Blend {
    image_latents: Tensor,
    noise: Tensor,
    mask: Tensor,
}

/// Decoder output in [-1, 1] (NCHW) to floats in [0, 1], NHWC, on the CPU.
fn to_unit_nhwc(image: &Tensor) -> Tensor {
    (image.to_kind(Kind::Float) / 2.0 + 0.5)
        .clamp(0.0, 1.0)
        .permute([0, 2, 3, 1])
        .to_device(Device::Cpu)
}

/// diffusers' `rescale_noise_cfg` (Lin et al. 2023, 3.4): the guided prediction rescaled to the
/// standard deviation of the text-conditioned one (per image), mixed in by `rescale`.
pub fn rescale_guidance(guided: Tensor, text: &Tensor, rescale: f64) -> Tensor {
    if rescale <= 0.0 {
        return guided;
    }
    let dims: Vec<i64> = (1..guided.dim() as i64).collect();
    let std_text = text.std_dim(&dims[..], true, true);
    let std_guided = guided.std_dim(&dims[..], true, true);
    let rescaled = &guided * (std_text / std_guided);
    rescaled * rescale + guided * (1.0 - rescale)
}

/// The components a LoRA may touch in a model of `family`.
fn lora_components(family: Family) -> &'static [&'static str] {
    match family {
        Family::Sdxl => &["unet", "text_encoder", "text_encoder_2"],
        Family::Sd1 | Family::Sd2 => &["unet", "text_encoder"],
    }
}

/// Where a component computes, in what kind, and where its weights wait (Some(host): offload).
type Target = (Device, Kind, Option<Device>);

/// `weights` put in host memory when offloading.
fn placed(weights: Weights, host: Option<Device>) -> Weights {
    match host {
        Some(host) => weights.placed_on(host),
        None => weights,
    }
}

/// The text encoder and its tensors (for the offload registry).
fn load_text_encoder(
    source: &ModelSource,
    config: &ClipTextConfig,
    loras: &LoraSet,
    (device, kind, host): Target,
    mismatches: &mut Vec<EngineError>,
) -> Result<(ClipTextModel, Vec<Tensor>)> {
    let weights = source.weights("text_encoder", "model", device, kind)?;
    let patch = loras.patch_for("text_encoder", &weights)?;
    let weights = placed(weights.with_patch(patch), host);
    let model = ClipTextModel::new(&weights.root(), config)?;
    mismatches.extend(weights.finish().err());
    Ok((model, weights.recorded()))
}

/// The UNet and its tensors (for the offload registry).
fn load_unet(
    source: &ModelSource,
    config: &UNetConfig,
    loras: &LoraSet,
    (device, kind, host): Target,
    mismatches: &mut Vec<EngineError>,
) -> Result<(UNet2DConditionModel, Vec<Tensor>)> {
    let weights = source.weights("unet", "diffusion_pytorch_model", device, kind)?;
    let patch = loras.patch_for("unet", &weights)?;
    let weights = placed(weights.with_patch(patch), host);
    let model = UNet2DConditionModel::new(&weights.root(), config)?;
    mismatches.extend(weights.finish().err());
    Ok((model, weights.recorded()))
}

fn unet_json(source: &ModelSource) -> Result<serde_json::Value> {
    let (text, path) = source.config_text("unet", "config.json")?;
    super::loader::parse_config(&text, &path, |_: &serde_json::Value| Ok(()))
}

/// The VAE's config: the override folder's, else the model's.
fn vae_config(source: &ModelSource, vae: Option<&VaeOverride>) -> Result<VaeConfig> {
    let (text, path) = source.config_text("vae", "config.json")?;
    let (text, path) = match vae {
        Some(v) => v.config_text(&text)?,
        None => (text, path),
    };
    super::loader::parse_config(&text, &path, VaeConfig::validate)
}

/// The VAE and its tensors (for the offload registry).
fn load_vae(
    source: &ModelSource,
    vae: Option<&VaeOverride>,
    config: &VaeConfig,
    (device, kind, host): Target,
) -> Result<(AutoencoderKl, Vec<Tensor>)> {
    let weights = match vae {
        Some(v) => {
            let (text, _) = source.config_text("vae", "config.json")?;
            let (text, _) = v.config_text(&text)?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| EngineError::Invalid(format!("VAE config: {e}")))?;
            v.weights(&json, device, kind)?
        }
        None => source.weights("vae", "diffusion_pytorch_model", device, kind)?,
    };
    let weights = placed(weights, host);
    let vae = AutoencoderKl::new(&weights.root(), config)?;
    weights.finish()?;
    Ok((vae, weights.recorded()))
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
