//! The UNet's timestep embedding: diffusers' sinusoidal `Timesteps` and the `TimestepEmbedding` MLP.
use crate::engine::nn::Linear;
use crate::engine::weights::WeightPath;
use tch::{Kind, Tensor};

/// Sinusoidal projection of (possibly fractional) timesteps, always computed in float32
/// as diffusers' `get_timestep_embedding` does.
#[derive(Debug, Clone)]
pub struct Timesteps {
    num_channels: i64,
    flip_sin_to_cos: bool,
    downscale_freq_shift: f64,
}

impl Timesteps {
    pub fn new(num_channels: i64, flip_sin_to_cos: bool, downscale_freq_shift: f64) -> Self {
        Self {
            num_channels,
            flip_sin_to_cos,
            downscale_freq_shift,
        }
    }

    /// The width of the embedding.
    pub fn num_channels(&self) -> i64 {
        self.num_channels
    }

    /// `timesteps`: one per batch element, shape [n]. Returns [n, num_channels] in float32.
    pub fn forward(&self, timesteps: &Tensor) -> Tensor {
        const MAX_PERIOD: f64 = 10000.0;
        let half = self.num_channels / 2;
        // Same operation order as diffusers, so that float32 rounding matches at large timesteps.
        let exponent = Tensor::arange(half, (Kind::Float, timesteps.device())) * (-MAX_PERIOD.ln());
        let exponent = exponent / (half as f64 - self.downscale_freq_shift);
        let freqs = exponent.exp();
        let args = timesteps.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
        let (sin, cos) = (args.sin(), args.cos());
        let emb = if self.flip_sin_to_cos {
            Tensor::cat(&[cos, sin], -1)
        } else {
            Tensor::cat(&[sin, cos], -1)
        };
        if self.num_channels % 2 == 1 {
            emb.constant_pad_nd([0, 1])
        } else {
            emb
        }
    }
}

/// diffusers' `TimestepEmbedding`: linear_1, silu, linear_2, with the optional `cond_proj`
/// that LCM models use to add a guidance-scale embedding.
#[derive(Debug)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    cond_proj: Option<Linear>,
    post_act: bool,
}

impl TimestepEmbedding {
    pub fn new(
        p: &WeightPath,
        in_channels: i64,
        time_embed_dim: i64,
        cond_proj_dim: Option<i64>,
        post_act: bool,
    ) -> Self {
        Self {
            linear_1: Linear::new(&p.pp("linear_1"), in_channels, time_embed_dim, true),
            linear_2: Linear::new(&p.pp("linear_2"), time_embed_dim, time_embed_dim, true),
            cond_proj: cond_proj_dim
                .map(|d| Linear::new(&p.pp("cond_proj"), d, in_channels, false)),
            post_act,
        }
    }

    /// `condition` is ignored when the model has no cond_proj, as in diffusers.
    pub fn forward(&self, sample: &Tensor, condition: Option<&Tensor>) -> Tensor {
        let sample = match (&self.cond_proj, condition) {
            (Some(proj), Some(c)) => sample + proj.forward(c),
            _ => sample.shallow_clone(),
        };
        let out = self
            .linear_2
            .forward(&self.linear_1.forward(&sample).silu());
        if self.post_act {
            out.silu()
        } else {
            out
        }
    }
}

/// diffusers' `get_guidance_scale_embedding`: the sinusoidal embedding of guidance scales `w`
/// ([n], float32) that LCM-distilled UNets (`time_cond_proj_dim`) take as `timestep_cond`;
/// pipelines pass `guidance_scale - 1`. Returns [n, embedding_dim] in float32.
pub fn guidance_scale_embedding(w: &Tensor, embedding_dim: i64) -> Tensor {
    let w = w.to_kind(Kind::Float) * 1000.0;
    let half = embedding_dim / 2;
    // float32 throughout, in diffusers' order: log(10000) / (half - 1), then exp(-i * that).
    let step = Tensor::from(10000f32).log() / (half - 1) as f64;
    let freqs = (Tensor::arange(half, (Kind::Float, w.device())) * -step.double_value(&[])).exp();
    let args = w.unsqueeze(1) * freqs.unsqueeze(0);
    let emb = Tensor::cat(&[args.sin(), args.cos()], 1);
    if embedding_dim % 2 == 1 {
        emb.constant_pad_nd([0, 1])
    } else {
        emb
    }
}
