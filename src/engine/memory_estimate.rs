//! How much memory a render needs, estimated before anything large is allocated, so that a
//! render that cannot fit is refused with advice instead of dying half way (the OOM killer on
//! a CPU, an allocator error on a GPU).
//!
//! The formula (bytes; `b` the compute kind's size, `B` the batch doubled under guidance,
//! `T = h * w` latent pixels, `C_i` the UNet's `block_out_channels`, `L` its
//! `layers_per_block`, `f` the VAE's latent scale factor, `V_0` its first block's channels):
//! - weights: every tensor of the text encoders, UNet and VAE, counted from the safetensors
//!   headers, at `b` bytes per element;
//! - UNet step: `b * B * T * C_0 * (sum_i (L + 1) * C_i / C_0 / 4^i + 12)`: the skip
//!   connections the down path keeps for the up path, plus the working set of the widest layer
//!   (the transformer's GEGLU feed-forward, 8 * C_0 wide, with its input and output). No
//!   attention scores: easel's attention is libtorch's scaled_dot_product_attention, whose
//!   flash and memory-efficient kernels (CPU, and CUDA in fp16, bf16 and fp32) never hold the
//!   T^2 matrix; counting it would refuse SDXL at 1024x1024 on a 24 GB GPU, which renders;
//! - VAE decode: `b * n * (t * f)^2 * V_0 * 8` for the full-resolution feature maps (n images,
//!   t^2 latent pixels per tile or the whole image when not tiled);
//! - a render needs the larger of the two, with 10% for the allocator's slack;
//! - on the device beside them: every component's weights, or with model CPU offload only the
//!   largest stage's (the text encoders together, the UNet, the VAE), moved in to run.
use super::error::{EngineError, Result};
use super::models::unet_config::{PerBlock, UNetConfig};
use super::models::vae_config::VaeConfig;
use std::io::Read;
use std::path::Path;
use tch::Kind;

/// The shapes the estimate needs, read from the model's configs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    pub unet_channels: Vec<i64>,
    pub layers_per_block: i64,
    /// The largest number of attention heads of any UNet level.
    pub heads: i64,
    pub vae_channels: i64,
    pub latent_scale_factor: i64,
}

impl ModelShape {
    pub fn from_configs(unet: &UNetConfig, vae: &VaeConfig) -> Self {
        let most = |p: &PerBlock<i64>| match p {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.iter().copied().max().unwrap_or(1),
        };
        Self {
            unet_channels: unet.block_out_channels.clone(),
            layers_per_block: most(&unet.layers_per_block),
            // diffusers reads attention_head_dim as the head count for these UNets.
            heads: unet.attention_head_dim.as_ref().map_or(8, most),
            vae_channels: *vae.block_out_channels.first().unwrap_or(&128),
            latent_scale_factor: vae.latent_scale_factor(),
        }
    }
}

/// One render's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderSize {
    pub width: i64,
    pub height: i64,
    pub batch: i64,
    pub guided: bool,
    /// The VAE tile side in latent pixels when the decode is tiled.
    pub vae_tile: Option<i64>,
    pub sliced_attention: bool,
}

/// The estimate's parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub unet_step: u64,
    pub vae_decode: u64,
    /// What the render needs besides the loaded weights.
    pub activations: u64,
    /// Weights on the device at the render's peak: all of them, or with offload the largest
    /// stage's (see [`Estimate::with_weights`]).
    pub weights: u64,
    /// The device's peak: `weights + activations`.
    pub peak: u64,
    /// Of `weights`, what must still come to the device (offload: the largest stage; without
    /// it, nothing: the weights were loaded there).
    pub to_load: u64,
}

impl Estimate {
    /// Adds the weights: `stages` are the bytes that sit on the device together in each stage
    /// of a render (the text encoders, the UNet, the VAE, ...). Without offload all of them
    /// stay loaded; with it the device holds one stage at a time, the largest at worst.
    pub fn with_weights(self, stages: &[u64], offload: bool) -> Self {
        let largest = stages.iter().copied().max().unwrap_or(0);
        let weights = if offload {
            largest
        } else {
            stages.iter().sum()
        };
        Self {
            weights,
            peak: weights + self.activations,
            to_load: if offload { largest } else { 0 },
            ..self
        }
    }

    /// What must be free on the device before the render starts.
    pub fn needs_free(&self) -> u64 {
        self.activations + self.to_load
    }
}

/// Bytes per element of a compute kind.
pub fn kind_bytes(kind: Kind) -> u64 {
    match kind {
        Kind::Half | Kind::BFloat16 => 2,
        Kind::Double => 8,
        _ => 4,
    }
}

/// The activations of one render (see the module's formula).
pub fn estimate(shape: &ModelShape, size: &RenderSize, kind: Kind) -> Estimate {
    let b = kind_bytes(kind) as f64;
    let f = shape.latent_scale_factor.max(1);
    let (h, w) = ((size.height / f) as f64, (size.width / f) as f64);
    let t = h * w;
    let big_b = (size.batch * if size.guided { 2 } else { 1 }) as f64;
    let c0 = *shape.unet_channels.first().unwrap_or(&320) as f64;
    let skips: f64 = shape
        .unet_channels
        .iter()
        .enumerate()
        .map(|(i, &c)| (shape.layers_per_block + 1) as f64 * c as f64 / c0 / 4f64.powi(i as i32))
        .sum();
    let unet_step = b * big_b * t * c0 * (skips + 12.0);
    let n = size.batch as f64;
    let tile_t = match size.vae_tile {
        Some(tile) => (tile as f64).min(h) * (tile as f64).min(w),
        None => t,
    };
    let fp = (f * f) as f64;
    let vae_decode = b * n * tile_t * fp * shape.vae_channels as f64 * 8.0;
    let activations = unet_step.max(vae_decode) * 1.1;
    Estimate {
        unet_step: unet_step as u64,
        vae_decode: vae_decode as u64,
        activations: activations as u64,
        weights: 0,
        peak: activations as u64,
        to_load: 0,
    }
}

/// Bytes of every tensor in a safetensors file at `kind`, from its header alone.
pub fn safetensors_bytes(path: &Path, kind: Kind) -> Result<u64> {
    let io = |source| EngineError::Io {
        path: path.into(),
        source,
    };
    let bad = |message: String| EngineError::Safetensors {
        path: path.into(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!("a header of {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let elements: u64 = header
        .iter()
        .filter(|(name, _)| name.as_str() != "__metadata__")
        .filter_map(|(_, info)| info.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>())
        .sum();
    Ok(elements * kind_bytes(kind))
}

/// Memory the system could give this process now: MemAvailable from /proc/meminfo on a CPU;
/// on CUDA the caller reads the GPU's free memory (nvidia-smi, see `crate::memory`), since
/// libtorch's bindings have no query. None where it cannot be read.
pub fn available_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses a render whose activations (and, with offload, the largest stage's weights) exceed
/// `free` bytes, saying what it needs, what is free and what to try.
pub fn check_fits(estimate: &Estimate, free: Option<u64>, size: &RenderSize) -> Result<()> {
    let Some(free) = free else { return Ok(()) };
    if estimate.needs_free() <= free {
        return Ok(());
    }
    let gib = |v: u64| v as f64 / (1u64 << 30) as f64;
    let mut advice = vec!["a smaller size".to_string()];
    if size.batch > 1 {
        advice.push("a smaller batch".into());
    }
    if size.vae_tile.is_none() {
        advice.push("--vae-tiling".into());
    }
    if !size.sliced_attention {
        advice.push("--low-memory".into());
    }
    let moved_in = if estimate.to_load > 0 {
        format!(
            ", plus {:.1} GiB of weights moved in by offload",
            gib(estimate.to_load)
        )
    } else {
        String::new()
    };
    Err(EngineError::WontFit(format!(
        "a {}x{} render (batch {}) needs about {:.1} GiB for its activations (UNet step {:.1} \
         GiB, VAE decode {:.1} GiB){moved_in} but only {:.1} GiB is free: try {}",
        size.width,
        size.height,
        size.batch,
        gib(estimate.activations),
        gib(estimate.unet_step),
        gib(estimate.vae_decode),
        gib(free),
        advice.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SDXL base renders 1024x1024 in fp16 on 24 GB GPUs (about 5 GB of weights): the
    /// estimate must leave it room, not count attention scores SDPA never holds.
    #[test]
    fn sdxl_at_1024_fits_beside_its_weights_on_a_24_gb_gpu() {
        let sdxl = ModelShape {
            unet_channels: vec![320, 640, 1280],
            layers_per_block: 2,
            heads: 20,
            vae_channels: 128,
            latent_scale_factor: 8,
        };
        let size = RenderSize {
            width: 1024,
            height: 1024,
            batch: 1,
            guided: true,
            vae_tile: None,
            sliced_attention: false,
        };
        let e = estimate(&sdxl, &size, Kind::Half);
        assert!(e.activations < 4 << 30, "{e:?}");
        assert!(e.vae_decode > e.unet_step, "{e:?}");
        assert!(check_fits(&e, Some(18 << 30), &size).is_ok());
        // Tiles bound the decode.
        let tiled = estimate(
            &sdxl,
            &RenderSize {
                vae_tile: Some(64),
                width: 2048,
                height: 2048,
                ..size
            },
            Kind::Half,
        );
        assert!(tiled.vae_decode <= e.vae_decode, "{tiled:?}");
    }

    /// SD 1.5 in fp16 (text encoder 246 MB, UNet 1.72 GB, VAE 167 MB) at 512x512: offload
    /// keeps the UNet alone on the GPU, and a GPU that cannot hold all three renders.
    #[test]
    fn offload_needs_the_largest_stage_not_the_sum() {
        let sd15 = ModelShape {
            unet_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            heads: 8,
            vae_channels: 128,
            latent_scale_factor: 8,
        };
        let size = RenderSize {
            width: 512,
            height: 512,
            batch: 1,
            guided: true,
            vae_tile: None,
            sliced_attention: true,
        };
        let stages = [246 << 20, 1720 << 20, 167 << 20];
        let base = estimate(&sd15, &size, Kind::Half);
        let all = base.with_weights(&stages, false);
        let offloaded = base.with_weights(&stages, true);
        assert_eq!(all.peak, stages.iter().sum::<u64>() + base.activations);
        assert_eq!(offloaded.peak, (1720 << 20) + base.activations);
        assert!(offloaded.peak < all.peak);
        assert_eq!((all.to_load, offloaded.to_load), (0, 1720 << 20));
        // Weights loaded on the device are no longer free; offloaded ones are still to come.
        let free = offloaded.needs_free();
        assert!(check_fits(&offloaded, Some(free), &size).is_ok());
        let err = check_fits(&offloaded, Some(free - 1), &size).expect_err("too little");
        assert!(err.to_string().contains("moved in by offload"), "{err}");
        assert!(check_fits(&all, Some(base.activations), &size).is_ok());
    }

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_mem_available(text), Some(2048 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }
}
