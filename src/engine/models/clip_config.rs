//! The CLIP text encoder's `text_encoder/config.json` (transformers' `CLIPTextConfig`), read with
//! transformers' defaults for absent keys. Values easel cannot run are refused before any weight
//! is read.
use crate::engine::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// transformers' `CLIPTextConfig`. Each field reads the config.json key of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// `vocab_size`: rows of the token embedding.
    pub vocab_size: i64,
    /// `hidden_size`: width of the transformer.
    pub hidden_size: i64,
    /// `intermediate_size`: width of each MLP's hidden layer.
    pub intermediate_size: i64,
    /// `num_attention_heads`: heads per self-attention (must divide hidden_size).
    pub num_attention_heads: i64,
    /// `num_hidden_layers`: encoder layers.
    pub num_hidden_layers: i64,
    /// `max_position_embeddings`: the longest token sequence (77 for every SD text encoder).
    pub max_position_embeddings: i64,
    /// `hidden_act`: the MLP's activation; see [`ClipActivation`] for the supported names.
    pub hidden_act: String,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
    /// `projection_dim`: output width of `text_projection` in CLIPTextModelWithProjection.
    pub projection_dim: i64,
    /// `pad_token_id`.
    pub pad_token_id: Option<i64>,
    /// `bos_token_id`.
    pub bos_token_id: Option<i64>,
    /// `eos_token_id`: picks the pooled position (the legacy value 2 means "the highest id").
    pub eos_token_id: Option<i64>,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_attention_heads: 8,
            num_hidden_layers: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

/// The MLP activations CLIP text encoders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `quick_gelu`: x * sigmoid(1.702 x) (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// `gelu`: the exact erf GELU (OpenCLIP, SD 2.x and SDXL).
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

const SUPPORTED_ACTIVATIONS: &str = "quick_gelu, gelu, gelu_new, gelu_pytorch_tanh";

impl ClipActivation {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Self::GeluTanh),
            other => Err(EngineError::Invalid(format!(
                "the text encoder's hidden_act {other:?} is not supported by easel \
                 (supported: {SUPPORTED_ACTIVATIONS}); this model cannot be used"
            ))),
        }
    }
}

impl ClipTextConfig {
    /// Reads and checks `text_encoder/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::engine::loader::read_config(path, |config: &Self| config.validate())
    }

    /// Checks what the model builder relies on.
    pub fn validate(&self) -> Result<()> {
        self.activation()?;
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((key, value)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(EngineError::Invalid(format!(
                "the text encoder's {key} is {value}; it must be positive. The config is damaged: download the model again"
            )));
        }
        if self.num_hidden_layers < 0 {
            return Err(EngineError::Invalid(format!(
                "the text encoder's num_hidden_layers is {}; it cannot be negative",
                self.num_hidden_layers
            )));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(EngineError::Invalid(format!(
                "the text encoder's hidden_size {} is not a multiple of num_attention_heads {}. The config is damaged: download the model again",
                self.hidden_size, self.num_attention_heads
            )));
        }
        Ok(())
    }

    pub fn activation(&self) -> Result<ClipActivation> {
        ClipActivation::from_name(&self.hidden_act)
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}
