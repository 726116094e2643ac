//! Text to image: prompt encoding, the denoising loop with guidance, and decoding.
use super::error::{EngineError, Result};
use super::schedulers::SamplerKind;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind};

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
    pub timings: Timings,
}

/// Defaults a model's configs imply.
#[derive(Debug, Clone)]
pub struct ModelDefaults {
    pub width: i64,
    pub height: i64,
}

/// A loaded Stable Diffusion pipeline.
pub struct StableDiffusion {
    _private: (),
}

impl StableDiffusion {
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let _ = (dir, device, kind);
        Err(EngineError::Invalid("the pipeline is being built".into()))
    }

    pub fn defaults(&self) -> ModelDefaults {
        ModelDefaults {
            width: 512,
            height: 512,
        }
    }

    pub fn device(&self) -> Device {
        Device::Cpu
    }

    pub fn kind(&self) -> Kind {
        Kind::Float
    }

    /// Renders; `on_step` runs after every step, and `cancel` is checked before each step.
    pub fn generate(
        &self,
        request: &TextToImage,
        on_step: &mut dyn FnMut(&Progress),
        cancel: &AtomicBool,
    ) -> Result<Output> {
        let _ = (request, on_step, cancel);
        Err(EngineError::Invalid("the pipeline is being built".into()))
    }
}
