//! The VAE's `vae/config.json` (diffusers' `AutoencoderKL`), read with diffusers' defaults for
//! absent keys, and the latent scaling that diffusers' pipelines derive from it.
use crate::engine::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Tensor;

/// `sample_size`: one number or `[height, width]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(i64),
    Rect(Vec<i64>),
}

/// diffusers' `AutoencoderKL` config. Each field reads the config.json key of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// `in_channels`: image channels in.
    pub in_channels: i64,
    /// `out_channels`: image channels out.
    pub out_channels: i64,
    /// `down_block_types`: only DownEncoderBlock2D.
    pub down_block_types: Vec<String>,
    /// `up_block_types`: only UpDecoderBlock2D.
    pub up_block_types: Vec<String>,
    /// `block_out_channels`: channels per resolution level; each level after the first halves
    /// the image size.
    pub block_out_channels: Vec<i64>,
    /// `layers_per_block`: resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: i64,
    /// `act_fn`: only silu (alias swish).
    pub act_fn: String,
    /// `latent_channels`.
    pub latent_channels: i64,
    /// `norm_num_groups`.
    pub norm_num_groups: i64,
    /// `sample_size`: the image size the VAE was trained at (used for tiling).
    pub sample_size: SampleSize,
    /// `scaling_factor`: latents are multiplied by it before the UNet sees them.
    pub scaling_factor: f64,
    /// `shift_factor`: subtracted before scaling (SD3/Flux VAEs); null for SD 1.x/2.x/XL.
    pub shift_factor: Option<f64>,
    /// `latents_mean`: per-channel means that SDXL pipelines subtract, when set.
    pub latents_mean: Option<Vec<f64>>,
    /// `latents_std`: per-channel deviations that SDXL pipelines divide by, when set.
    pub latents_std: Option<Vec<f64>>,
    /// `force_upcast`: diffusers' pipelines decode in fp32 when the VAE is fp16 and this is set
    /// (the caller's decision: the model computes in its weights' kind).
    pub force_upcast: bool,
    /// `use_quant_conv`: a 1x1 conv after the encoder.
    pub use_quant_conv: bool,
    /// `use_post_quant_conv`: a 1x1 conv before the decoder.
    pub use_post_quant_conv: bool,
    /// `mid_block_add_attention`: the mid blocks have their self-attention.
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: SampleSize::Square(32),
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

fn unsupported(message: String) -> EngineError {
    EngineError::Invalid(format!(
        "the VAE's {message}; easel cannot run this VAE. Use a Stable Diffusion AutoencoderKL"
    ))
}

impl VaeConfig {
    /// Reads and checks `vae/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::engine::loader::read_config(path, |config: &Self| config.validate())
    }

    /// Checks what the model builder relies on.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(unsupported("block_out_channels is empty".into()));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(unsupported(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) differ in length",
                self.down_block_types.len(),
                self.up_block_types.len()
            )));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(unsupported(format!(
                "down block type {t:?} is not supported (only DownEncoderBlock2D)"
            )));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(unsupported(format!(
                "up block type {t:?} is not supported (only UpDecoderBlock2D)"
            )));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(unsupported(format!(
                "act_fn {:?} is not supported (only silu)",
                self.act_fn
            )));
        }
        let g = self.norm_num_groups;
        if g <= 0 {
            return Err(unsupported(format!("norm_num_groups is {g}")));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c <= 0 || **c % g != 0)
        {
            return Err(unsupported(format!(
                "block_out_channels entry {c} is not a positive multiple of norm_num_groups {g}"
            )));
        }
        for (key, value) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
        ] {
            if value <= 0 {
                return Err(unsupported(format!("{key} is {value}")));
            }
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            return Err(unsupported(format!(
                "scaling_factor is {}",
                self.scaling_factor
            )));
        }
        match (&self.latents_mean, &self.latents_std) {
            (None, None) => {}
            (Some(m), Some(s))
                if m.len() as i64 == self.latent_channels
                    && s.len() as i64 == self.latent_channels => {}
            _ => {
                return Err(unsupported(format!(
                    "latents_mean and latents_std must both be set, with {} values each",
                    self.latent_channels
                )))
            }
        }
        Ok(())
    }

    /// How many image pixels one latent pixel spans per side: 2^(levels - 1).
    pub fn latent_scale_factor(&self) -> i64 {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Per-channel statistics as a `[1, C, 1, 1]` tensor like `latents`.
    fn channel_stats(values: &[f64], like: &Tensor) -> Tensor {
        Tensor::from_slice(values)
            .to_kind(like.kind())
            .to_device(like.device())
            .view([1, -1, 1, 1])
    }

    /// From the VAE's latent space to the UNet's, as diffusers' pipelines do after `encode`:
    /// `(z - shift_factor) * scaling_factor`, or `(z - latents_mean) * scaling_factor /
    /// latents_std` when the config has per-channel statistics (SDXL pipelines).
    pub fn scale_latents(&self, latents: &Tensor) -> Tensor {
        match (&self.latents_mean, &self.latents_std) {
            (Some(mean), Some(std)) => {
                (latents - Self::channel_stats(mean, latents)) * self.scaling_factor
                    / Self::channel_stats(std, latents)
            }
            _ => (latents - self.shift_factor.unwrap_or(0.0)) * self.scaling_factor,
        }
    }

    /// The inverse of [`scale_latents`](Self::scale_latents), as diffusers' pipelines apply it
    /// before `decode`: `z / scaling_factor + shift_factor`, or
    /// `z * latents_std / scaling_factor + latents_mean`.
    pub fn unscale_latents(&self, latents: &Tensor) -> Tensor {
        match (&self.latents_mean, &self.latents_std) {
            (Some(mean), Some(std)) => {
                latents * Self::channel_stats(std, latents) / self.scaling_factor
                    + Self::channel_stats(mean, latents)
            }
            _ => latents / self.scaling_factor + self.shift_factor.unwrap_or(0.0),
        }
    }
}
