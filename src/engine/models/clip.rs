//! The CLIP text encoder (transformers' `CLIPTextModel`): token and position embeddings, a
//! pre-norm causal transformer, and a final layer norm.
//!
//! Weights load under either layout found on the hub: `text_model.embeddings...` (checkpoints
//! saved by transformers 4 and earlier, and every `CLIPTextModelWithProjection`) or
//! `embeddings...` (a `CLIPTextModel` saved by transformers 5).
use super::clip_config::{ClipActivation, ClipTextConfig};
use crate::engine::error::{EngineError, Result};
use crate::engine::nn::{Embedding, LayerNorm, Linear};
use crate::engine::weights::WeightPath;
use tch::{Device, Kind, Tensor};

/// What [`ClipTextModel::forward`] computes.
#[derive(Debug)]
pub struct ClipOutput {
    /// The embeddings' output, then each encoder layer's output (transformers'
    /// `hidden_states` with `output_hidden_states=True`): `num_hidden_layers + 1` tensors of
    /// `[batch, seq, hidden]`, none of them through the final layer norm.
    pub hidden_states: Vec<Tensor>,
    /// The last layer's output through `final_layer_norm`.
    pub last_hidden_state: Tensor,
}

#[derive(Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
}

impl ClipAttention {
    fn new(p: &WeightPath, c: &ClipTextConfig) -> Self {
        let d = c.hidden_size;
        Self {
            q_proj: Linear::new(&p.pp("q_proj"), d, d, true),
            k_proj: Linear::new(&p.pp("k_proj"), d, d, true),
            v_proj: Linear::new(&p.pp("v_proj"), d, d, true),
            out_proj: Linear::new(&p.pp("out_proj"), d, d, true),
            heads: c.num_attention_heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, s, d) = x
            .size3()
            .expect("CLIP hidden states are [batch, seq, hidden]");
        let split = |t: Tensor| t.view([b, s, self.heads, d / self.heads]).transpose(1, 2);
        let q = split(self.q_proj.forward(x));
        let k = split(self.k_proj.forward(x));
        let v = split(self.v_proj.forward(x));
        // The default scale is head_dim^-0.5, as CLIP's.
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        self.out_proj.forward(&y.transpose(1, 2).reshape([b, s, d]))
    }
}

#[derive(Debug)]
struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    activation: ClipActivation,
}

impl ClipMlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.fc1.forward(x);
        let h = match self.activation {
            ClipActivation::QuickGelu => &h * (&h * 1.702).sigmoid(),
            ClipActivation::Gelu => h.gelu("none"),
            ClipActivation::GeluTanh => h.gelu("tanh"),
        };
        self.fc2.forward(&h)
    }
}

#[derive(Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    mlp: ClipMlp,
}

impl ClipEncoderLayer {
    fn new(p: &WeightPath, c: &ClipTextConfig, activation: ClipActivation) -> Self {
        let d = c.hidden_size;
        let m = p.pp("mlp");
        Self {
            layer_norm1: LayerNorm::new(&p.pp("layer_norm1"), d, c.layer_norm_eps),
            self_attn: ClipAttention::new(&p.pp("self_attn"), c),
            layer_norm2: LayerNorm::new(&p.pp("layer_norm2"), d, c.layer_norm_eps),
            mlp: ClipMlp {
                fc1: Linear::new(&m.pp("fc1"), d, c.intermediate_size, true),
                fc2: Linear::new(&m.pp("fc2"), c.intermediate_size, d, true),
                activation,
            },
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.self_attn.forward(&self.layer_norm1.forward(x));
        &x + self.mlp.forward(&self.layer_norm2.forward(&x))
    }
}

/// transformers' `CLIPTextModel`. Computes in the weights' kind on the weights' device.
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    max_positions: i64,
    vocab_size: i64,
    eos_token_id: Option<i64>,
    device: Device,
}

impl ClipTextModel {
    /// Builds the model from the text encoder's weights. `p` is the root of the component's
    /// tensors; the `text_model.` prefix is used when the files have it. Missing or misshapen
    /// tensors are reported by the weights' `finish`.
    pub fn new(p: &WeightPath, config: &ClipTextConfig) -> Result<Self> {
        config.validate()?;
        let activation = config.activation()?;
        let p = if p.contains("embeddings.token_embedding.weight") {
            p.clone()
        } else {
            p.pp("text_model")
        };
        let d = config.hidden_size;
        let e = p.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&p.pp("encoder.layers").pp(i), config, activation))
            .collect();
        Ok(Self {
            token_embedding: Embedding::new(&e.pp("token_embedding"), config.vocab_size, d),
            position_embedding: Embedding::new(
                &e.pp("position_embedding"),
                config.max_position_embeddings,
                d,
            ),
            layers,
            final_layer_norm: LayerNorm::new(&p.pp("final_layer_norm"), d, config.layer_norm_eps),
            max_positions: config.max_position_embeddings,
            vocab_size: config.vocab_size,
            eos_token_id: config.eos_token_id,
            device: p.device(),
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// All hidden states and the normed last one, for `input_ids` of shape `[batch, seq]`
    /// (`seq` at most `max_position_embeddings`).
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipOutput> {
        let mut h = self.embed(input_ids)?;
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        for layer in &self.layers {
            let next = layer.forward(&h);
            hidden_states.push(h);
            h = next;
        }
        let last_hidden_state = self.final_layer_norm.forward(&h);
        hidden_states.push(h);
        Ok(ClipOutput {
            hidden_states,
            last_hidden_state,
        })
    }

    /// The embeddings run through the first `layers` encoder layers only, not through the final
    /// layer norm: `forward(ids).hidden_states[layers]` without computing the layers after it.
    pub fn forward_until(&self, input_ids: &Tensor, layers: usize) -> Result<Tensor> {
        if layers > self.layers.len() {
            return Err(EngineError::Invalid(format!(
                "the text encoder has {} layers; cannot stop after layer {layers}",
                self.layers.len()
            )));
        }
        let mut h = self.embed(input_ids)?;
        for layer in &self.layers[..layers] {
            h = layer.forward(&h);
        }
        Ok(h)
    }

    /// The prompt embedding with diffusers' `clip_skip`: 0 is `last_hidden_state`; k > 0 takes
    /// the output k layers before the last (`hidden_states[-(k + 1)]`) through the final layer
    /// norm, as diffusers' Stable Diffusion pipelines do.
    pub fn forward_clip_skip(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let n = self.layers.len();
        if clip_skip >= n {
            return Err(EngineError::Invalid(format!(
                "clip skip {clip_skip} is too large: the text encoder has {n} layers, so use at most {}",
                n.saturating_sub(1)
            )));
        }
        let h = self.forward_until(input_ids, n - clip_skip)?;
        Ok(self.final_layer_norm.forward(&h))
    }

    /// transformers' final layer norm, for callers that pick their own hidden state.
    pub fn final_layer_norm(&self, hidden: &Tensor) -> Tensor {
        self.final_layer_norm.forward(hidden)
    }

    /// transformers' `pooler_output`: each sequence's hidden state at its end-of-text token.
    /// With the legacy `eos_token_id` 2 (SD 1.x configs) that is the position of the highest id;
    /// otherwise the first position holding `eos_token_id`.
    pub fn pooled_output(&self, last_hidden_state: &Tensor, input_ids: &Tensor) -> Tensor {
        let ids = input_ids.to_device(last_hidden_state.device());
        let positions = match self.eos_token_id {
            Some(eos) if eos != 2 => ids.eq(eos).to_kind(Kind::Int).argmax(-1, false),
            _ => ids.argmax(-1, false),
        };
        let batch = Tensor::arange(ids.size()[0], (Kind::Int64, ids.device()));
        last_hidden_state.index(&[Some(batch), Some(positions)])
    }

    /// The width of the hidden states (and of a textual-inversion vector).
    pub fn hidden_size(&self) -> i64 {
        self.token_embedding.weight.size()[1]
    }

    /// `forward_until` from token embeddings the caller made (`token_embeddings` with some rows
    /// replaced, as textual inversion does): `[batch, seq, hidden]`, positions not yet added.
    pub fn forward_embeddings_until(&self, token_embeds: &Tensor, layers: usize) -> Result<Tensor> {
        let size = token_embeds.size();
        let [_, seq, hidden] = size[..] else {
            return Err(EngineError::Invalid(format!(
                "token embeddings must have shape [batch, sequence, hidden], got {size:?}"
            )));
        };
        if seq > self.max_positions || seq == 0 || hidden != self.hidden_size() {
            return Err(EngineError::Invalid(format!(
                "token embeddings of shape {size:?} do not fit a text encoder of {} positions and width {}",
                self.max_positions,
                self.hidden_size()
            )));
        }
        if layers > self.layers.len() {
            return Err(EngineError::Invalid(format!(
                "the text encoder has {} layers; cannot stop after layer {layers}",
                self.layers.len()
            )));
        }
        let mut h = self.add_positions(&token_embeds.to_device(self.device));
        for layer in &self.layers[..layers] {
            h = layer.forward(&h);
        }
        Ok(h)
    }

    fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        Ok(self.add_positions(&self.token_embeddings(input_ids)?))
    }

    fn add_positions(&self, token_embeds: &Tensor) -> Tensor {
        let seq = token_embeds.size()[1];
        let positions = Tensor::arange(seq, (Kind::Int64, self.device));
        token_embeds + self.position_embedding.forward(&positions)
    }

    /// The token embedding rows of `input_ids` (`[batch, seq]`), before positions are added.
    pub fn token_embeddings(&self, input_ids: &Tensor) -> Result<Tensor> {
        let size = input_ids.size();
        let [_, seq] = size[..] else {
            return Err(EngineError::Invalid(format!(
                "token ids must have shape [batch, sequence], got {size:?}"
            )));
        };
        if input_ids.numel() == 0 {
            return Err(EngineError::Invalid(
                "no token ids: a tokenized prompt has at least its start and end tokens".into(),
            ));
        }
        if seq > self.max_positions {
            return Err(EngineError::Invalid(format!(
                "{seq} tokens are more than the text encoder's {} positions: shorten the prompt or split it into chunks",
                self.max_positions
            )));
        }
        if input_ids.is_floating_point() {
            return Err(EngineError::Invalid(
                "token ids must be integers, got a floating-point tensor".into(),
            ));
        }
        let ids = input_ids.to_device(self.device).to_kind(Kind::Int64);
        let (low, high) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if low < 0 || high >= self.vocab_size {
            return Err(EngineError::Invalid(format!(
                "token id {} is outside the text encoder's vocabulary of {}: the tokenizer does not belong to this text encoder",
                if low < 0 { low } else { high },
                self.vocab_size
            )));
        }
        Ok(self.token_embedding.forward(&ids))
    }
}

/// What [`ClipTextModelWithProjection::forward`] computes.
#[derive(Debug)]
pub struct ClipProjectedOutput {
    /// transformers' `text_embeds`: the pooled output through `text_projection`,
    /// `[batch, projection_dim]`.
    pub text_embeds: Tensor,
    /// The text model's outputs, as [`ClipTextModel::forward`] gives them.
    pub text: ClipOutput,
}

/// transformers' `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): the text model plus a
/// bias-free `text_projection` of the pooled output.
#[derive(Debug)]
pub struct ClipTextModelWithProjection {
    text_model: ClipTextModel,
    text_projection: Linear,
}

impl ClipTextModelWithProjection {
    /// Builds the model from weights named `text_model.*` and `text_projection.weight`.
    pub fn new(p: &WeightPath, config: &ClipTextConfig) -> Result<Self> {
        if config.projection_dim <= 0 {
            return Err(EngineError::Invalid(format!(
                "the text encoder's projection_dim is {}; it must be positive. The config is damaged: download the model again",
                config.projection_dim
            )));
        }
        Ok(Self {
            text_model: ClipTextModel::new(p, config)?,
            text_projection: Linear::new(
                &p.pp("text_projection"),
                config.hidden_size,
                config.projection_dim,
                false,
            ),
        })
    }

    pub fn text_model(&self) -> &ClipTextModel {
        &self.text_model
    }

    /// `text_projection` of a pooled output (for callers that run the text model themselves,
    /// as textual inversion does).
    pub fn project(&self, pooled: &Tensor) -> Tensor {
        self.text_projection.forward(pooled)
    }

    /// The projected pooled embedding and every hidden state, for `input_ids` `[batch, seq]`.
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipProjectedOutput> {
        let text = self.text_model.forward(input_ids)?;
        let pooled = self
            .text_model
            .pooled_output(&text.last_hidden_state, input_ids);
        Ok(ClipProjectedOutput {
            text_embeds: self.text_projection.forward(&pooled),
            text,
        })
    }
}
