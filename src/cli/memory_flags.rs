//! `easel generate`'s memory flags, kept apart so that generate.rs carries one line for them.
use crate::engine::pipeline::{MemoryOptions, StableDiffusion};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tch::Device;

#[derive(Debug, Clone, Default, Args)]
pub struct MemoryArgs {
    /// Decode in overlapping tiles (as diffusers' enable_tiling): bounded memory at any size.
    /// Always on above 1024x1024.
    #[arg(long)]
    pub vae_tiling: bool,

    /// Save memory at some cost in speed: attention in slices and VAE tiling; on CUDA also
    /// model CPU offload (weights wait in RAM, each model moves to the GPU only while it runs,
    /// as diffusers' enable_model_cpu_offload). On a CPU, offload does nothing.
    #[arg(long)]
    pub low_memory: bool,

    /// Decode with TAESD (a diffusers AutoencoderTiny folder, e.g. madebyollin/taesd) instead
    /// of the VAE: much faster, slightly less detailed. With --remote, a folder on the host.
    #[arg(long, value_name = "PATH")]
    pub fast_decoder: Option<PathBuf>,
}

impl MemoryArgs {
    /// What the flags ask for on `device` (pass it to the load, so that offloaded weights
    /// load into RAM, never all onto the GPU).
    pub fn options(&self, device: Device) -> MemoryOptions {
        self.requested().on(device)
    }

    /// The flags for a worker, which decides offload once it knows its device.
    pub fn requested(&self) -> MemoryOptions {
        MemoryOptions {
            vae_tiling: self.vae_tiling,
            low_memory: self.low_memory,
            offload: false,
        }
    }

    /// Applies the flags to a loaded pipeline.
    pub fn apply(&self, sd: &mut StableDiffusion) -> Result<()> {
        sd.set_memory_options(self.options(sd.device()));
        if let Some(dir) = &self.fast_decoder {
            sd.load_fast_decoder(dir)
                .with_context(|| format!("cannot load the fast decoder {}", dir.display()))?;
        }
        Ok(())
    }
}
