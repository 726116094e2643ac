//! The VAE (diffusers' `AutoencoderKL`): an encoder from images to a diagonal Gaussian over
//! latents and a decoder back, with diffusers' module names (`encoder.down_blocks.0.resnets.1`,
//! `decoder.mid_block.attentions.0.to_q`, ...).
//!
//! Scaling is the caller's: `encode` returns the distribution in the VAE's own latent space and
//! `decode` takes latents in that space. Between them and the UNet's space sit
//! [`VaeConfig::scale_latents`] and [`VaeConfig::unscale_latents`].
use super::resnet::{norm_silu, Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
pub use super::vae_config::VaeConfig;
pub use super::vae_tiling::VaeTiling;
use crate::engine::error::{EngineError, Result};
use crate::engine::nn::{Conv2d, GroupNorm, Linear};
use crate::engine::weights::WeightPath;
use tch::{Device, Kind, Tensor};

/// diffusers builds every VAE norm with this epsilon, whatever the config says.
const EPS: f64 = 1e-6;

/// The mid block's self-attention (diffusers' `Attention` as `UNetMidBlock2D` builds it): a
/// group norm, one head spanning all channels, a residual connection.
#[derive(Debug)]
struct VaeAttention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl VaeAttention {
    fn new(p: &WeightPath, channels: i64, groups: i64) -> Self {
        // Checkpoints saved before diffusers 0.14 use the old names; diffusers renames them on
        // load, and so does easel.
        let [q, k, v, out] = if !p.contains("to_q.weight") && p.contains("query.weight") {
            ["query", "key", "value", "proj_attn"]
        } else {
            ["to_q", "to_k", "to_v", "to_out.0"]
        };
        Self {
            group_norm: GroupNorm::new(&p.pp("group_norm"), groups, channels, EPS),
            to_q: Linear::new(&p.pp(q), channels, channels, true),
            to_k: Linear::new(&p.pp(k), channels, channels, true),
            to_v: Linear::new(&p.pp(v), channels, channels, true),
            to_out: Linear::new(&p.pp(out), channels, channels, true),
            // attention_head_dim is the channel count: a single head.
            heads: 1,
            rescale_output_factor: 1.0,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, c, h, w) = x.size4().expect("VAE features are NCHW");
        let tokens = self
            .group_norm
            .forward(x)
            .view([b, c, h * w])
            .transpose(1, 2);
        let split = |t: Tensor| t.view([b, -1, self.heads, c / self.heads]).transpose(1, 2);
        let q = split(self.to_q.forward(&tokens));
        let k = split(self.to_k.forward(&tokens));
        let v = split(self.to_v.forward(&tokens));
        let y = super::attention::sdpa(&q, &k, &v);
        let y = self
            .to_out
            .forward(&y.transpose(1, 2).reshape([b, h * w, c]))
            .transpose(1, 2)
            .reshape([b, c, h, w]);
        let y = y + x;
        if self.rescale_output_factor == 1.0 {
            y
        } else {
            y / self.rescale_output_factor
        }
    }
}

fn resnet(p: &WeightPath, in_channels: i64, out_channels: i64, groups: i64) -> ResnetBlock2D {
    ResnetBlock2D::new(
        p,
        &ResnetConfig {
            in_channels,
            out_channels,
            temb_channels: None,
            groups,
            eps: EPS,
            output_scale_factor: 1.0,
        },
    )
}

/// diffusers' `UNetMidBlock2D` without time embedding: resnet, attention, resnet.
#[derive(Debug)]
struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<VaeAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn new(p: &WeightPath, channels: i64, groups: i64, attention: bool) -> Self {
        Self {
            first: resnet(&p.pp("resnets.0"), channels, channels, groups),
            attention: attention
                .then(|| VaeAttention::new(&p.pp("attentions.0"), channels, groups)),
            second: resnet(&p.pp("resnets.1"), channels, channels, groups),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.first.forward(x, None);
        if let Some(attention) = &self.attention {
            h = attention.forward(&h);
        }
        self.second.forward(&h, None)
    }
}

/// `DownEncoderBlock2D` or `UpDecoderBlock2D`: resnets, then an optional resampler.
#[derive(Debug)]
struct Block {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
    upsampler: Option<Upsample2D>,
}

impl Block {
    fn resnets(
        p: &WeightPath,
        in_channels: i64,
        out_channels: i64,
        layers: i64,
        groups: i64,
    ) -> Vec<ResnetBlock2D> {
        (0..layers)
            .map(|j| {
                let input = if j == 0 { in_channels } else { out_channels };
                resnet(&p.pp("resnets").pp(j), input, out_channels, groups)
            })
            .collect()
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        for resnet in &self.resnets {
            h = resnet.forward(&h, None);
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h);
        }
        if let Some(up) = &self.upsampler {
            h = up.forward(&h, None);
        }
        h
    }
}

/// diffusers' `Encoder` with `double_z`: images to the mean and log-variance of the latents.
#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<Block>,
    mid_block: MidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(p: &WeightPath, c: &VaeConfig) -> Self {
        let ch = &c.block_out_channels;
        let g = c.norm_num_groups;
        let last = ch.len() - 1;
        let down_blocks = ch
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let b = p.pp("down_blocks").pp(i);
                let input = if i == 0 { ch[0] } else { ch[i - 1] };
                Block {
                    resnets: Block::resnets(&b, input, out, c.layers_per_block, g),
                    downsampler: (i != last)
                        .then(|| Downsample2D::new(&b.pp("downsamplers.0"), out, out, 0)),
                    upsampler: None,
                }
            })
            .collect();
        Self {
            conv_in: Conv2d::new(&p.pp("conv_in"), c.in_channels, ch[0], 3, 1, 1),
            down_blocks,
            mid_block: MidBlock::new(&p.pp("mid_block"), ch[last], g, c.mid_block_add_attention),
            conv_norm_out: GroupNorm::new(&p.pp("conv_norm_out"), g, ch[last], EPS),
            conv_out: Conv2d::new(&p.pp("conv_out"), ch[last], 2 * c.latent_channels, 3, 1, 1),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = self.conv_in.forward(x);
        for block in &self.down_blocks {
            h = block.forward(&h);
        }
        let h = self.mid_block.forward(&h);
        self.conv_out.forward(&norm_silu(&self.conv_norm_out, &h))
    }
}

/// diffusers' `Decoder` with group norms: latents to images.
#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<Block>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(p: &WeightPath, c: &VaeConfig) -> Self {
        let reversed: Vec<i64> = c.block_out_channels.iter().rev().copied().collect();
        let g = c.norm_num_groups;
        let last = reversed.len() - 1;
        let up_blocks = reversed
            .iter()
            .enumerate()
            .map(|(i, &out)| {
                let b = p.pp("up_blocks").pp(i);
                let input = if i == 0 { reversed[0] } else { reversed[i - 1] };
                Block {
                    resnets: Block::resnets(&b, input, out, c.layers_per_block + 1, g),
                    downsampler: None,
                    upsampler: (i != last)
                        .then(|| Upsample2D::new(&b.pp("upsamplers.0"), out, out)),
                }
            })
            .collect();
        let first = reversed[0];
        let final_channels = reversed[last];
        Self {
            conv_in: Conv2d::new(&p.pp("conv_in"), c.latent_channels, first, 3, 1, 1),
            mid_block: MidBlock::new(&p.pp("mid_block"), first, g, c.mid_block_add_attention),
            up_blocks,
            conv_norm_out: GroupNorm::new(&p.pp("conv_norm_out"), g, final_channels, EPS),
            conv_out: Conv2d::new(&p.pp("conv_out"), final_channels, c.out_channels, 3, 1, 1),
        }
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        let mut h = self.mid_block.forward(&self.conv_in.forward(z));
        for block in &self.up_blocks {
            h = block.forward(&h);
        }
        self.conv_out.forward(&norm_silu(&self.conv_norm_out, &h))
    }
}

/// The encoder's output: a Gaussian per latent element (diffusers'
/// `DiagonalGaussianDistribution`), in the VAE's own (unscaled) latent space.
#[derive(Debug)]
pub struct DiagonalGaussian {
    pub mean: Tensor,
    /// Clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor,
}

impl DiagonalGaussian {
    /// A draw `mean + std * noise` from standard-normal `noise` of the mean's shape (diffusers'
    /// `sample(generator)` with the noise the generator would give).
    pub fn sample(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.size() != self.mean.size() {
            return Err(EngineError::Invalid(format!(
                "noise of shape {:?} cannot sample latents of shape {:?}",
                noise.size(),
                self.mean.size()
            )));
        }
        let noise = noise
            .to_device(self.mean.device())
            .to_kind(self.mean.kind());
        Ok(&self.mean + (&self.logvar * 0.5).exp() * noise)
    }

    /// The most likely latents: the mean.
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }
}

/// diffusers' `AutoencoderKL`. Computes in the weights' kind on the weights' device; inputs are
/// moved there first.
#[derive(Debug)]
pub struct AutoencoderKl {
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    config: VaeConfig,
    device: Device,
    kind: Kind,
}

impl AutoencoderKl {
    /// Builds the VAE from its weights (`p` at the component's root). Missing or misshapen
    /// tensors are reported by the weights' `finish`.
    pub fn new(p: &WeightPath, config: &VaeConfig) -> Result<Self> {
        config.validate()?;
        let l = config.latent_channels;
        Ok(Self {
            encoder: Encoder::new(&p.pp("encoder"), config),
            decoder: Decoder::new(&p.pp("decoder"), config),
            quant_conv: config
                .use_quant_conv
                .then(|| Conv2d::new(&p.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)),
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| Conv2d::new(&p.pp("post_quant_conv"), l, l, 1, 1, 0)),
            config: config.clone(),
            device: p.device(),
            kind: p.kind(),
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Image pixels per latent pixel along each side.
    pub fn latent_scale_factor(&self) -> i64 {
        self.config.latent_scale_factor()
    }

    /// See [`VaeConfig::scale_latents`].
    pub fn scale_latents(&self, latents: &Tensor) -> Tensor {
        self.config.scale_latents(latents)
    }

    /// See [`VaeConfig::unscale_latents`].
    pub fn unscale_latents(&self, latents: &Tensor) -> Tensor {
        self.config.unscale_latents(latents)
    }

    /// Encodes `[batch, in_channels, H, W]` images with values in [-1, 1]; H and W should be
    /// multiples of the latent scale factor.
    pub fn encode(&self, images: &Tensor) -> Result<DiagonalGaussian> {
        let x = self.input(images, self.config.in_channels, "images")?;
        let mut h = self.encoder.forward(&x);
        if let Some(conv) = &self.quant_conv {
            h = conv.forward(&h);
        }
        Ok(self.posterior(&h))
    }

    /// Decodes `[batch, latent_channels, h, w]` latents in the VAE's own space (already
    /// unscaled) into images with values around [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = self.input(latents, self.config.latent_channels, "latents")?;
        if let Some(conv) = &self.post_quant_conv {
            z = conv.forward(&z);
        }
        Ok(self.decoder.forward(&z))
    }

    /// diffusers' default tiles for this VAE (`enable_tiling()`): its `sample_size`.
    pub fn default_tiling(&self) -> VaeTiling {
        let size = match &self.config.sample_size {
            super::vae_config::SampleSize::Square(s) => *s,
            super::vae_config::SampleSize::Rect(v) => v.first().copied().unwrap_or(512),
        };
        VaeTiling::new(size, self.latent_scale_factor())
    }

    /// `decode` one overlapping tile at a time, as diffusers' `tiled_decode` (it decodes
    /// whole when the latents fit in one tile, as diffusers does).
    pub fn decode_tiled(&self, latents: &Tensor, tiling: &VaeTiling) -> Result<Tensor> {
        let z = self.input(latents, self.config.latent_channels, "latents")?;
        let (_, _, h, w) = z.size4()?;
        if !tiling.needs_tiles(h, w) {
            return self.decode(&z);
        }
        check_tiling(tiling)?;
        let decode_tile = |tile: &Tensor| match &self.post_quant_conv {
            Some(conv) => self.decoder.forward(&conv.forward(tile)),
            None => self.decoder.forward(tile),
        };
        Ok(super::vae_tiling::tiled(
            &z,
            tiling.latent_tile,
            tiling.sample_tile,
            tiling.overlap,
            &decode_tile,
        ))
    }

    /// `encode` one overlapping tile at a time, as diffusers' `_tiled_encode` (whole when the
    /// image fits in one tile).
    pub fn encode_tiled(&self, images: &Tensor, tiling: &VaeTiling) -> Result<DiagonalGaussian> {
        let x = self.input(images, self.config.in_channels, "images")?;
        let (_, _, h, w) = x.size4()?;
        if !tiling.needs_sample_tiles(h, w) {
            return self.encode(&x);
        }
        check_tiling(tiling)?;
        let encode_tile = |tile: &Tensor| {
            let h = self.encoder.forward(tile);
            match &self.quant_conv {
                Some(conv) => conv.forward(&h),
                None => h,
            }
        };
        let h = super::vae_tiling::tiled(
            &x,
            tiling.sample_tile,
            tiling.latent_tile,
            tiling.overlap,
            &encode_tile,
        );
        Ok(self.posterior(&h))
    }

    fn posterior(&self, h: &Tensor) -> DiagonalGaussian {
        let l = self.config.latent_channels;
        DiagonalGaussian {
            mean: h.narrow(1, 0, l),
            logvar: h.narrow(1, l, l).clamp(-30.0, 20.0),
        }
    }

    fn input(&self, x: &Tensor, channels: i64, what: &str) -> Result<Tensor> {
        let size = x.size();
        match size[..] {
            [b, c, h, w] if c == channels && b > 0 && h > 0 && w > 0 => {
                Ok(x.to_device(self.device).to_kind(self.kind))
            }
            _ => Err(EngineError::Invalid(format!(
                "the VAE takes {what} of shape [batch, {channels}, height, width], got {size:?}"
            ))),
        }
    }
}

fn check_tiling(tiling: &VaeTiling) -> Result<()> {
    if tiling.latent_tile < 1 || tiling.sample_tile < 1 || !(0.0..1.0).contains(&tiling.overlap) {
        return Err(EngineError::Invalid(format!(
            "VAE tiles of {}x{} latent pixels with overlap {} cannot cover an image: use tiles of \
             at least one pixel and an overlap in [0, 1)",
            tiling.latent_tile, tiling.latent_tile, tiling.overlap
        )));
    }
    Ok(())
}
