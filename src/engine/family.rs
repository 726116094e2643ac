//! Which kind of Stable Diffusion a diffusers folder holds, read from its configs (never from
//! the folder's name), and the render defaults that kind implies.
//!
//! `model_index.json`'s `_class_name` says SD 1.x/2.x or SDXL; within the SD 1.x/2.x pipeline,
//! the text encoder's activation tells OpenAI CLIP (SD 1.x, quick_gelu) from OpenCLIP (SD 2.x,
//! gelu). A UNet with 9 input channels is an inpainting model, and a scheduler with trailing
//! timestep spacing marks the few-step distilled models (SD-Turbo, SDXL-Turbo).
use super::checkpoint::Version;
use super::error::{EngineError, Result};
use super::loader::{read_json, ModelSource};
use super::models::clip_config::ClipTextConfig;
use super::models::unet_config::{PerBlock, UNetConfig};
use super::schedulers::config::{PredictionType, TimestepSpacing};
use super::schedulers::SchedulerConfig;
use crate::recipe::{DEFAULT_CFG, DEFAULT_STEPS};
use std::path::Path;

/// The pipelines (model_index.json `_class_name`) whose folders easel renders from.
pub const SUPPORTED_PIPELINES: &[&str] = &[
    "StableDiffusionPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLInpaintPipeline",
];

/// The architecture generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: OpenAI CLIP-L text encoder, 512 px.
    Sd1,
    /// SD 2.x: OpenCLIP-H text encoder, 512 or 768 px, epsilon or v-prediction.
    Sd2,
    /// SDXL base: two text encoders and size conditioning, 1024 px.
    Sdxl,
}

/// What a model folder is, as far as rendering is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub family: Family,
    /// model_index.json's `_class_name`.
    pub pipeline_class: String,
    /// From the scheduler config: what the UNet predicts.
    pub prediction_type: PredictionType,
    /// The UNet takes 9 channels: latents, a mask, and the masked image's latents.
    pub inpainting: bool,
    /// A few-step distilled model (trailing timestep spacing): SD-Turbo, SDXL-Turbo.
    pub turbo: bool,
}

/// Render settings a model implies when the user gives none.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDefaults {
    pub width: i64,
    pub height: i64,
    pub steps: usize,
    pub cfg: f64,
}

impl ModelInfo {
    /// A folder's info from its configs ([`ModelInfo::detect`]); a single-file checkpoint's
    /// from the version its tensors show and the configs it is read with.
    pub fn from_source(source: &ModelSource) -> Result<Self> {
        let checkpoint = match source {
            ModelSource::Folder(f) => return Self::detect(&f.root),
            ModelSource::SingleFile(c) => c,
        };
        let (family, class) = match checkpoint.version() {
            Version::Sd1 => (Family::Sd1, "StableDiffusionPipeline"),
            Version::Sd2 => (Family::Sd2, "StableDiffusionPipeline"),
            Version::Sdxl => (Family::Sdxl, "StableDiffusionXLPipeline"),
        };
        let unet: UNetConfig = source.config("unet", "config.json", |_: &UNetConfig| Ok(()))?;
        let scheduler: SchedulerConfig = source.config(
            "scheduler",
            "scheduler_config.json",
            |_: &SchedulerConfig| Ok(()),
        )?;
        Ok(Self {
            family,
            pipeline_class: class.to_string(),
            prediction_type: scheduler.prediction_type,
            inpainting: unet.in_channels == 9,
            turbo: scheduler.timestep_spacing == Some(TimestepSpacing::Trailing),
        })
    }

    /// Reads `model_index.json` and the component configs of the folder at `root`.
    pub fn detect(root: &Path) -> Result<Self> {
        let index_path = root.join("model_index.json");
        let index: serde_json::Value = read_json(&index_path)?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let family = match class.as_str() {
            "StableDiffusionPipeline" | "StableDiffusionInpaintPipeline" => {
                let text = ClipTextConfig::from_file(&root.join("text_encoder/config.json"))?;
                if text.hidden_act == "quick_gelu" {
                    Family::Sd1
                } else {
                    Family::Sd2
                }
            }
            "StableDiffusionXLPipeline" | "StableDiffusionXLInpaintPipeline" => {
                if !root.join("text_encoder_2").is_dir() || !root.join("tokenizer_2").is_dir() {
                    return Err(EngineError::Invalid(format!(
                        "{} is an SDXL model without text_encoder_2/ or tokenizer_2/: the download may be incomplete",
                        root.display()
                    )));
                }
                if !root.join("text_encoder").is_dir() {
                    return Err(EngineError::Invalid(format!(
                        "{} has no text_encoder/: SDXL models with only the second text encoder (the refiner) are not supported; use an SDXL base model",
                        root.display()
                    )));
                }
                Family::Sdxl
            }
            "StableDiffusionXLImg2ImgPipeline" => {
                return Err(EngineError::Invalid(format!(
                    "{} is an SDXL img2img model (the refiner, most likely), which easel does not run: use an SDXL base model (StableDiffusionXLPipeline)",
                    root.display()
                )))
            }
            "" => {
                return Err(EngineError::Invalid(format!(
                    "{} has no _class_name: it is not a diffusers pipeline folder, or it is damaged",
                    index_path.display()
                )))
            }
            other => {
                return Err(EngineError::Invalid(format!(
                    "{} is a {other:?} model, which easel cannot render: it runs Stable Diffusion 1.x, 2.x and XL models ({})",
                    root.display(),
                    SUPPORTED_PIPELINES.join(", ")
                )))
            }
        };
        let unet = UNetConfig::from_file(&root.join("unet/config.json"))?;
        let inpainting = match unet.in_channels {
            4 => false,
            9 => true,
            n => {
                return Err(EngineError::Invalid(format!(
                    "the UNet takes {n} input channels; easel knows 4 (text to image) and 9 (inpainting)"
                )))
            }
        };
        let scheduler = SchedulerConfig::from_file(&root.join("scheduler/scheduler_config.json"))?;
        Ok(Self {
            family,
            pipeline_class: class,
            prediction_type: scheduler.prediction_type,
            inpainting,
            turbo: scheduler.timestep_spacing == Some(TimestepSpacing::Trailing),
        })
    }

    /// A short human name: "SDXL", "SD 2.x (v-prediction)", "SD 1.x inpainting", ...
    pub fn label(&self) -> String {
        let mut s = match self.family {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        }
        .to_string();
        if self.turbo {
            s.push_str(" turbo");
        }
        if self.inpainting {
            s.push_str(" inpainting");
        }
        if self.prediction_type == PredictionType::VPrediction {
            s.push_str(" (v-prediction)");
        }
        s
    }

    /// Fails for models that text to image cannot drive.
    pub fn check_text_to_image(&self) -> Result<()> {
        if self.inpainting {
            return Err(EngineError::Invalid(format!(
                "this is an {} model: it needs an image and a mask, so it cannot render from text alone. Use the non-inpainting version of the model",
                self.label()
            )));
        }
        Ok(())
    }

    /// The native size (the UNet's sample size in pixels), and steps and guidance: one step
    /// without guidance for turbo models, diffusers' SDXL guidance of 5 for SDXL, else easel's.
    pub fn defaults(&self, unet: &UNetConfig, latent_scale_factor: i64) -> ModelDefaults {
        // A config without sample_size gets SD 1.x's 64 latent pixels.
        let (h, w) = match &unet.sample_size {
            Some(PerBlock::One(s)) => (*s, *s),
            Some(PerBlock::Each(v)) if v.len() == 2 => (v[0], v[1]),
            _ => (64, 64),
        };
        let (steps, cfg) = match (self.turbo, self.family) {
            (true, _) => (1, 0.0),
            (false, Family::Sdxl) => (DEFAULT_STEPS, 5.0),
            (false, _) => (DEFAULT_STEPS, DEFAULT_CFG),
        };
        ModelDefaults {
            width: w * latent_scale_factor,
            height: h * latent_scale_factor,
            steps,
            cfg,
        }
    }
}
