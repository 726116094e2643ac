//! The UNet's spatial transformer: diffusers' `Attention`, `FeedForward` (GEGLU),
//! `BasicTransformerBlock` and `Transformer2DModel` (continuous input, layer norms).
use crate::engine::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::engine::weights::WeightPath;
use std::cell::Cell;
use tch::{Kind, Tensor};

thread_local! {
    /// Whether attention on this thread runs in slices (diffusers' `enable_attention_slicing`).
    /// Per thread, so that one render's `--low-memory` never changes another thread's.
    static SLICED: Cell<bool> = const { Cell::new(false) };
}

/// Turns attention slicing on or off for the current thread until the scope drops.
pub fn attention_slicing(on: bool) -> SlicingScope {
    let previous = SLICED.with(|s| s.replace(on));
    SlicingScope { previous }
}

/// Restores the previous slicing setting on drop.
#[derive(Debug)]
pub struct SlicingScope {
    previous: bool,
}

impl Drop for SlicingScope {
    fn drop(&mut self) {
        SLICED.with(|s| s.set(self.previous));
    }
}

/// Multi-head attention with to_q/to_k/to_v (no bias) and to_out.0, computed by libtorch's
/// scaled_dot_product_attention.
#[derive(Debug)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    upcast: bool,
}

impl Attention {
    /// `context_dim` is the width of what keys and values come from (the query's for self-attention).
    pub fn new(
        p: &WeightPath,
        query_dim: i64,
        context_dim: i64,
        heads: i64,
        head_dim: i64,
        upcast: bool,
    ) -> Self {
        let inner = heads * head_dim;
        Self {
            to_q: Linear::new(&p.pp("to_q"), query_dim, inner, false),
            to_k: Linear::new(&p.pp("to_k"), context_dim, inner, false),
            to_v: Linear::new(&p.pp("to_v"), context_dim, inner, false),
            to_out: Linear::new(&p.pp("to_out.0"), inner, query_dim, true),
            heads,
            upcast,
        }
    }

    /// `x`: [batch, tokens, query_dim]; `context`: [batch, context_tokens, context_dim], or
    /// None for self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Tensor {
        let context = context.unwrap_or(x);
        let batch = x.size()[0];
        let split = |t: Tensor| {
            t.view([batch, -1, self.heads, t.size()[2] / self.heads])
                .transpose(1, 2)
        };
        let q = split(self.to_q.forward(x));
        let k = split(self.to_k.forward(context));
        let v = split(self.to_v.forward(context));
        let kind = q.kind();
        // diffusers' upcast_attention: half-precision attention overflows in some SD 2.x layers.
        let (q, k, v) = if self.upcast && matches!(kind, Kind::Half | Kind::BFloat16) {
            (
                q.to_kind(Kind::Float),
                k.to_kind(Kind::Float),
                v.to_kind(Kind::Float),
            )
        } else {
            (q, k, v)
        };
        let out = if SLICED.with(Cell::get) {
            sliced_attention(&q, &k, &v, (self.heads / 2).max(1))
        } else {
            sdpa(&q, &k, &v)
        };
        let inner = out.size()[1] * out.size()[3];
        let out = out
            .transpose(1, 2)
            .reshape([batch, -1, inner])
            .to_kind(kind);
        self.to_out.forward(&out)
    }
}

/// diffusers' `SlicedAttnProcessor` with its "auto" slice (half the heads): the score matrix
/// exists for `slice` of the batch x heads at a time, which bounds the peak memory at large
/// sizes. `q`, `k`, `v`: [batch, heads, tokens, head_dim].
/// Unmasked, non-causal attention through libtorch's kernels (flash or memory-efficient where
/// they apply), as diffusers' AttnProcessor2_0 calls it.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, false)
}

fn sliced_attention(q: &Tensor, k: &Tensor, v: &Tensor, slice: i64) -> Tensor {
    let size = q.size();
    let (b, h, t, d) = (size[0], size[1], size[2], size[3]);
    let flat = |x: &Tensor| x.reshape([b * h, -1, d]);
    let (q, k, v) = (flat(q), flat(k), flat(v));
    let scale = 1.0 / (d as f64).sqrt();
    let mut parts = Vec::new();
    let mut start = 0;
    while start < b * h {
        let len = slice.min(b * h - start);
        let scores = q
            .narrow(0, start, len)
            .bmm(&k.narrow(0, start, len).transpose(1, 2))
            * scale;
        parts.push(
            scores
                .softmax(-1, scores.kind())
                .bmm(&v.narrow(0, start, len)),
        );
        start += len;
    }
    Tensor::cat(&parts, 0).view([b, h, t, d])
}

/// `FeedForward` with a GEGLU input projection: net.0.proj (to twice the inner width), net.2.
#[derive(Debug)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(p: &WeightPath, dim: i64) -> Self {
        let inner = dim * 4;
        Self {
            proj: Linear::new(&p.pp("net.0.proj"), dim, inner * 2, true),
            out: Linear::new(&p.pp("net.2"), inner, dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.proj.forward(x);
        let parts = h.chunk(2, -1);
        let mut gated = parts[1].gelu("none");
        gated *= &parts[0];
        self.out.forward(&gated)
    }
}

/// Self-attention, cross-attention on the text, then the feed-forward, each after a layer norm
/// and added to its input.
#[derive(Debug)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

/// What a Transformer2DModel and its blocks are built with.
#[derive(Debug, Clone)]
pub struct TransformerConfig {
    pub heads: i64,
    pub head_dim: i64,
    pub cross_attention_dim: i64,
    pub layers: i64,
    pub groups: i64,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(p: &WeightPath, dim: i64, c: &TransformerConfig) -> Self {
        const EPS: f64 = 1e-5;
        let attn1_context = if c.only_cross_attention {
            c.cross_attention_dim
        } else {
            dim
        };
        Self {
            norm1: LayerNorm::new(&p.pp("norm1"), dim, EPS),
            attn1: Attention::new(
                &p.pp("attn1"),
                dim,
                attn1_context,
                c.heads,
                c.head_dim,
                c.upcast_attention,
            ),
            norm2: LayerNorm::new(&p.pp("norm2"), dim, EPS),
            attn2: Attention::new(
                &p.pp("attn2"),
                dim,
                c.cross_attention_dim,
                c.heads,
                c.head_dim,
                c.upcast_attention,
            ),
            norm3: LayerNorm::new(&p.pp("norm3"), dim, EPS),
            ff: FeedForward::new(&p.pp("ff"), dim),
            only_cross_attention: c.only_cross_attention,
        }
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let attn1_context = self.only_cross_attention.then_some(context);
        // Each residual is added in place into the sublayer's fresh output.
        let mut h = self.attn1.forward(&self.norm1.forward(x), attn1_context);
        h += x;
        let mut y = self.attn2.forward(&self.norm2.forward(&h), Some(context));
        y += &h;
        let mut out = self.ff.forward(&self.norm3.forward(&y));
        out += &y;
        out
    }
}

/// proj_in/proj_out: a 1x1 conv on the feature map (SD 1.x) or a Linear on the tokens (SD 2.x).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

impl Projection {
    fn new(p: &WeightPath, linear: bool, in_dim: i64, out_dim: i64) -> Self {
        if linear {
            Self::Linear(Linear::new(p, in_dim, out_dim, true))
        } else {
            Self::Conv(Conv2d::new(p, in_dim, out_dim, 1, 1, 0))
        }
    }
}

/// diffusers' `Transformer2DModel` on a continuous feature map.
#[derive(Debug)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub fn new(p: &WeightPath, channels: i64, c: &TransformerConfig) -> Self {
        let inner = c.heads * c.head_dim;
        let blocks = p.pp("transformer_blocks");
        Self {
            norm: GroupNorm::new(&p.pp("norm"), c.groups, channels, 1e-6),
            proj_in: Projection::new(&p.pp("proj_in"), c.use_linear_projection, channels, inner),
            transformer_blocks: (0..c.layers)
                .map(|i| BasicTransformerBlock::new(&blocks.pp(i), inner, c))
                .collect(),
            proj_out: Projection::new(&p.pp("proj_out"), c.use_linear_projection, inner, channels),
        }
    }

    /// `x`: [batch, channels, h, w]; `context`: the text embeddings [batch, tokens, dim].
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let size = x.size();
        let (batch, height, width) = (size[0], size[2], size[3]);
        let to_tokens = |t: Tensor| {
            let c = t.size()[1];
            t.permute([0, 2, 3, 1]).reshape([batch, height * width, c])
        };
        let h = self.norm.forward(x);
        let mut h = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&h)),
            Projection::Linear(linear) => linear.forward(&to_tokens(h)),
        };
        for block in &self.transformer_blocks {
            h = block.forward(&h, context);
        }
        let to_map = |t: Tensor| {
            let c = t.size()[2];
            t.reshape([batch, height, width, c])
                .permute([0, 3, 1, 2])
                .contiguous()
        };
        let mut h = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_map(h)),
            Projection::Linear(linear) => to_map(linear.forward(&h)),
        };
        h += x;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliced_attention_matches_libtorch_attention() {
        tch::manual_seed(5);
        let opts = (Kind::Float, tch::Device::Cpu);
        let q = Tensor::randn([2, 8, 24, 16], opts);
        let k = Tensor::randn([2, 8, 7, 16], opts);
        let v = Tensor::randn([2, 8, 7, 16], opts);
        let whole = sdpa(&q, &k, &v);
        // 16 batch x heads in slices of 3: the last slice is ragged.
        let sliced = sliced_attention(&q, &k, &v, 3);
        let diff = (sliced - whole).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "sliced attention differs by {diff}");
    }
}
