//! `easel generate`'s memory flags, kept apart so that generate.rs carries one line for them.
use crate::engine::models::autoencoder_tiny::AutoencoderTiny;
use crate::engine::pipeline::{MemoryOptions, StableDiffusion};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Args)]
pub struct MemoryArgs {
    /// Decode in overlapping tiles (as diffusers' enable_tiling): bounded memory at any size.
    /// Always on above 1024x1024.
    #[arg(long)]
    pub vae_tiling: bool,

    /// Save memory at some cost in speed: attention in slices and VAE tiling.
    #[arg(long)]
    pub low_memory: bool,

    /// Decode with TAESD (a diffusers AutoencoderTiny folder, e.g. madebyollin/taesd) instead
    /// of the VAE: much faster, slightly less detailed.
    #[arg(long, value_name = "PATH")]
    pub fast_decoder: Option<PathBuf>,
}

impl MemoryArgs {
    pub fn options(&self) -> MemoryOptions {
        MemoryOptions {
            vae_tiling: self.vae_tiling,
            low_memory: self.low_memory,
        }
    }

    /// Applies the flags to a loaded pipeline.
    pub fn apply(&self, sd: &mut StableDiffusion) -> Result<()> {
        sd.set_memory_options(self.options());
        if let Some(dir) = &self.fast_decoder {
            let taesd = AutoencoderTiny::load(dir, sd.device(), sd.kind())
                .with_context(|| format!("cannot load the fast decoder {}", dir.display()))?;
            sd.set_fast_decoder(Some(taesd))?;
        }
        Ok(())
    }
}
