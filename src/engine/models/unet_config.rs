//! The UNet's `unet/config.json`, read with diffusers' defaults for absent keys, and resolved
//! into per-block settings. Values easel cannot run are refused here, before any weight is read.
use crate::engine::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A config value that is either one value for every block or a list with one per block.
/// (`Each` comes first: serde tries the variants in order, and a nested `PerBlock<PerBlock<_>>`
/// must read a flat list as one value per block.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    Each(Vec<T>),
    One(T),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block, or an error naming the key when a list has the wrong length.
    pub fn expand(&self, blocks: usize, key: &str) -> Result<Vec<T>> {
        match self {
            Self::One(v) => Ok(vec![v.clone(); blocks]),
            Self::Each(v) if v.len() == blocks => Ok(v.clone()),
            Self::Each(v) => Err(unsupported(format!(
                "{key} lists {} values but the UNet has {blocks} down blocks",
                v.len()
            ))),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config. Each field reads the config.json key of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// `sample_size`: the latent size the model was trained at (int or [h, w]).
    pub sample_size: Option<PerBlock<i64>>,
    /// `in_channels`: latent channels in (9 for inpainting models).
    pub in_channels: i64,
    /// `out_channels`: latent channels out.
    pub out_channels: i64,
    /// `center_input_sample`: maps the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// `flip_sin_to_cos`: the timestep embedding puts cosines first.
    pub flip_sin_to_cos: bool,
    /// `freq_shift`: `downscale_freq_shift` of the timestep embedding.
    pub freq_shift: f64,
    /// `down_block_types`: CrossAttnDownBlock2D or DownBlock2D per block.
    pub down_block_types: Vec<String>,
    /// `mid_block_type`: UNetMidBlock2DCrossAttn, or null for none.
    pub mid_block_type: Option<String>,
    /// `up_block_types`: CrossAttnUpBlock2D or UpBlock2D per block.
    pub up_block_types: Vec<String>,
    /// `only_cross_attention`: attn1 attends to the text instead of the image (bool or per block).
    pub only_cross_attention: PerBlock<bool>,
    /// `block_out_channels`: channels of each resolution level.
    pub block_out_channels: Vec<i64>,
    /// `layers_per_block`: resnets per down block (up blocks have one more); int or per block.
    pub layers_per_block: PerBlock<i64>,
    /// `downsample_padding`: 1 for a padded strided conv, 0 for a right/bottom pad first.
    pub downsample_padding: i64,
    /// `mid_block_scale_factor`: the mid block's resnets divide their output by it.
    pub mid_block_scale_factor: f64,
    /// `act_fn`: the activation; only silu (swish) exists in Stable Diffusion.
    pub act_fn: String,
    /// `norm_num_groups`: GroupNorm groups everywhere.
    pub norm_num_groups: Option<i64>,
    /// `norm_eps`: GroupNorm epsilon of the resnets and the output norm.
    pub norm_eps: f64,
    /// `cross_attention_dim`: width of the text embeddings (int or per block).
    pub cross_attention_dim: PerBlock<i64>,
    /// `transformer_layers_per_block`: BasicTransformerBlocks per Transformer2DModel (int or
    /// per block; a list per block needs `reverse_transformer_layers_per_block`, unsupported).
    pub transformer_layers_per_block: PerBlock<PerBlock<i64>>,
    /// `reverse_transformer_layers_per_block`: must be null.
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// `encoder_hid_dim`: must be null (no projection of the text embeddings).
    pub encoder_hid_dim: Option<i64>,
    /// `encoder_hid_dim_type`: must be null.
    pub encoder_hid_dim_type: Option<String>,
    /// `attention_head_dim`: despite its name, the NUMBER of heads when `num_attention_heads`
    /// is null (diffusers' naming quirk, kept for old configs); int or per block.
    pub attention_head_dim: Option<PerBlock<i64>>,
    /// `num_attention_heads`: heads per block; diffusers refuses it for this model, so must be null.
    pub num_attention_heads: Option<PerBlock<i64>>,
    /// `dual_cross_attention`: must be false.
    pub dual_cross_attention: bool,
    /// `use_linear_projection`: Transformer2DModel's proj_in/proj_out are Linear (SD 2.x), not 1x1 convs.
    pub use_linear_projection: bool,
    /// `class_embed_type`: must be null for now.
    pub class_embed_type: Option<String>,
    /// `num_class_embeds`: must be null for now.
    pub num_class_embeds: Option<i64>,
    /// `addition_embed_type`: null, or SDXL's "text_time" (pooled text and size conditions).
    pub addition_embed_type: Option<String>,
    /// `addition_time_embed_dim`: sinusoidal width of each SDXL time id ("text_time" only).
    pub addition_time_embed_dim: Option<i64>,
    /// `projection_class_embeddings_input_dim`: input width of `add_embedding` ("text_time" only):
    /// the pooled text width plus six time ids times `addition_time_embed_dim`.
    pub projection_class_embeddings_input_dim: Option<i64>,
    /// `upcast_attention`: attention is computed in float32 when the model runs in fp16/bf16.
    pub upcast_attention: bool,
    /// `resnet_time_scale_shift`: only "default" is supported.
    pub resnet_time_scale_shift: String,
    /// `time_embedding_type`: only "positional" is supported.
    pub time_embedding_type: String,
    /// `time_embedding_dim`: width of the time embedding; null means 4 x block_out_channels[0].
    pub time_embedding_dim: Option<i64>,
    /// `time_embedding_act_fn`: an activation after the time embedding (null or silu).
    pub time_embedding_act_fn: Option<String>,
    /// `timestep_post_act`: an activation at the end of TimestepEmbedding (null or silu).
    pub timestep_post_act: Option<String>,
    /// `time_cond_proj_dim`: width of an extra timestep condition (LCM's guidance embedding).
    pub time_cond_proj_dim: Option<i64>,
    /// `conv_in_kernel`: odd kernel size of conv_in.
    pub conv_in_kernel: i64,
    /// `conv_out_kernel`: odd kernel size of conv_out.
    pub conv_out_kernel: i64,
    /// `attention_type`: only "default" is supported (not GLIGEN's gated attention).
    pub attention_type: String,
}

impl Default for UNetConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: PerBlock::One(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::One(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::One(1280),
            transformer_layers_per_block: PerBlock::One(PerBlock::One(1)),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: Some(PerBlock::One(8)),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            num_class_embeds: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            projection_class_embeddings_input_dim: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            attention_type: "default".into(),
        }
    }
}

/// The two kinds of down block easel builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownBlockKind {
    CrossAttn,
    Plain,
}

/// The two kinds of up block easel builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpBlockKind {
    CrossAttn,
    Plain,
}

/// Settings of one down block, or of the up block at the same level read in reverse.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSettings {
    pub out_channels: i64,
    pub layers: i64,
    pub heads: i64,
    pub cross_attention_dim: i64,
    pub transformer_layers: i64,
    pub only_cross_attention: bool,
}

/// The config resolved into per-block lists, checked for everything easel cannot run.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetLayout {
    pub down: Vec<(DownBlockKind, LevelSettings)>,
    /// Present when `mid_block_type` is UNetMidBlock2DCrossAttn.
    pub mid: Option<LevelSettings>,
    /// In the order the up blocks run (deepest first).
    pub up: Vec<(UpBlockKind, LevelSettings)>,
    pub groups: i64,
    pub time_embed_dim: i64,
    /// SDXL's "text_time" added embedding, when the config asks for it.
    pub added_time: Option<AddedTimeEmbedding>,
}

/// The widths of SDXL's "text_time" embedding (diffusers' `add_time_proj` and `add_embedding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedTimeEmbedding {
    /// `addition_time_embed_dim`: the sinusoidal width of each time id.
    pub time_embed_dim: i64,
    /// `projection_class_embeddings_input_dim`: pooled text width + ids x time_embed_dim.
    pub input_dim: i64,
}

fn unsupported(message: String) -> EngineError {
    EngineError::Invalid(format!(
        "UNet config: {message}. easel runs Stable Diffusion 1.x/2.x/XL-style UNets; use such a model, or fix unet/config.json"
    ))
}

fn require_null<T: std::fmt::Debug>(key: &str, value: &Option<T>, why: &str) -> Result<()> {
    match value {
        None => Ok(()),
        Some(v) => Err(unsupported(format!(
            "{key} = {v:?} is not supported ({why})"
        ))),
    }
}

fn activation_ok(key: &str, value: &str) -> Result<()> {
    match value {
        "silu" | "swish" => Ok(()),
        other => Err(unsupported(format!(
            "{key} = {other:?} is not supported (only silu)"
        ))),
    }
}

impl UNetConfig {
    /// SDXL's "text_time" widths, or None for UNets without an added embedding.
    pub fn added_time_embedding(&self) -> Result<Option<AddedTimeEmbedding>> {
        match self.addition_embed_type.as_deref() {
            None => Ok(None),
            Some("text_time") => {
                let (Some(time_embed_dim), Some(input_dim)) = (
                    self.addition_time_embed_dim,
                    self.projection_class_embeddings_input_dim,
                ) else {
                    return Err(unsupported(
                        "addition_embed_type \"text_time\" without addition_time_embed_dim and projection_class_embeddings_input_dim is not supported (SDXL's configs set both)".into(),
                    ));
                };
                if time_embed_dim < 1 || input_dim < 1 {
                    return Err(unsupported(format!(
                        "addition_time_embed_dim = {time_embed_dim} and projection_class_embeddings_input_dim = {input_dim} must be positive"
                    )));
                }
                Ok(Some(AddedTimeEmbedding {
                    time_embed_dim,
                    input_dim,
                }))
            }
            Some(other) => Err(unsupported(format!(
                "addition_embed_type = {other:?} is not supported (only null or \"text_time\", SDXL's)"
            ))),
        }
    }

    /// Reads and checks `unet/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::engine::loader::read_config(path, |config: &Self| config.layout().map(|_| ()))
    }

    /// Checks the config and resolves the per-block settings diffusers derives from it.
    pub fn layout(&self) -> Result<UNetLayout> {
        let n = self.down_block_types.len();
        if n == 0 {
            return Err(unsupported("down_block_types is empty".into()));
        }
        if self.up_block_types.len() != n || self.block_out_channels.len() != n {
            return Err(unsupported(format!(
                "down_block_types ({n}), up_block_types ({}) and block_out_channels ({}) must have the same length",
                self.up_block_types.len(),
                self.block_out_channels.len()
            )));
        }
        if self.dual_cross_attention {
            return Err(unsupported(
                "dual_cross_attention = true is not supported".into(),
            ));
        }
        require_null(
            "class_embed_type",
            &self.class_embed_type,
            "class embeddings are not implemented",
        )?;
        require_null(
            "num_class_embeds",
            &self.num_class_embeds,
            "class embeddings are not implemented",
        )?;
        let added = self.added_time_embedding()?;
        require_null(
            "encoder_hid_dim",
            &self.encoder_hid_dim,
            "text-embedding projections are not implemented",
        )?;
        require_null(
            "encoder_hid_dim_type",
            &self.encoder_hid_dim_type,
            "text-embedding projections are not implemented",
        )?;
        require_null(
            "reverse_transformer_layers_per_block",
            &self.reverse_transformer_layers_per_block,
            "asymmetric UNets are not implemented",
        )?;
        require_null(
            "num_attention_heads",
            &self.num_attention_heads,
            "diffusers' UNet2DConditionModel refuses it too: give the head count as attention_head_dim",
        )?;
        if self.resnet_time_scale_shift != "default" {
            return Err(unsupported(format!(
                "resnet_time_scale_shift = {:?} is not supported (only \"default\")",
                self.resnet_time_scale_shift
            )));
        }
        if self.time_embedding_type != "positional" {
            return Err(unsupported(format!(
                "time_embedding_type = {:?} is not supported (only \"positional\")",
                self.time_embedding_type
            )));
        }
        if self.attention_type != "default" {
            return Err(unsupported(format!(
                "attention_type = {:?} is not supported (only \"default\")",
                self.attention_type
            )));
        }
        activation_ok("act_fn", &self.act_fn)?;
        for (key, value) in [
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
        ] {
            if let Some(v) = value {
                activation_ok(key, v)?;
            }
        }
        for (key, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k < 1 || k % 2 == 0 {
                return Err(unsupported(format!(
                    "{key} = {k} must be an odd positive number"
                )));
            }
        }
        if !matches!(self.downsample_padding, 0 | 1) {
            return Err(unsupported(format!(
                "downsample_padding = {} is not supported (0 or 1)",
                self.downsample_padding
            )));
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| unsupported("norm_num_groups = null is not supported".into()))?;
        if groups < 1 {
            return Err(unsupported(format!("norm_num_groups = {groups}")));
        }
        for &c in &self.block_out_channels {
            if c < 1 || c % groups != 0 {
                return Err(unsupported(format!(
                    "block_out_channels has {c}, which norm_num_groups = {groups} does not divide"
                )));
            }
        }

        let heads = self
            .attention_head_dim
            .as_ref()
            .ok_or_else(|| unsupported("attention_head_dim is null".into()))?
            .expand(n, "attention_head_dim")?;
        let cross = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let only_cross = self
            .only_cross_attention
            .expand(n, "only_cross_attention")?;
        let transformer_layers = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?
            .into_iter()
            .map(|t| match t {
                PerBlock::One(v) => Ok(v),
                PerBlock::Each(_) => Err(unsupported(
                    "transformer_layers_per_block with a list per block is not supported".into(),
                )),
            })
            .collect::<Result<Vec<i64>>>()?;
        for (key, values) in [
            ("attention_head_dim", &heads),
            ("cross_attention_dim", &cross),
            ("layers_per_block", &layers),
            ("transformer_layers_per_block", &transformer_layers),
        ] {
            if let Some(v) = values.iter().find(|&&v| v < 1) {
                return Err(unsupported(format!(
                    "{key} has {v}, which must be positive"
                )));
            }
        }
        let level = |i: usize| LevelSettings {
            out_channels: self.block_out_channels[i],
            layers: layers[i],
            heads: heads[i],
            cross_attention_dim: cross[i],
            transformer_layers: transformer_layers[i],
            only_cross_attention: only_cross[i],
        };
        let check_heads = |s: &LevelSettings| {
            if s.out_channels % s.heads != 0 {
                Err(unsupported(format!(
                    "{} channels cannot be split into {} attention heads",
                    s.out_channels, s.heads
                )))
            } else {
                Ok(())
            }
        };

        let mut down = Vec::with_capacity(n);
        for (i, name) in self.down_block_types.iter().enumerate() {
            let kind = match name.strip_prefix("UNetRes").unwrap_or(name) {
                "CrossAttnDownBlock2D" => DownBlockKind::CrossAttn,
                "DownBlock2D" => DownBlockKind::Plain,
                other => {
                    return Err(unsupported(format!(
                        "down block type {other:?} is not supported (CrossAttnDownBlock2D, DownBlock2D)"
                    )))
                }
            };
            let settings = level(i);
            if kind == DownBlockKind::CrossAttn {
                check_heads(&settings)?;
            }
            down.push((kind, settings));
        }

        let mid = match self.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => {
                // diffusers builds the mid block from the deepest level's settings, and never
                // passes only_cross_attention to it.
                let settings = LevelSettings {
                    layers: 1,
                    only_cross_attention: false,
                    ..level(n - 1)
                };
                check_heads(&settings)?;
                Some(settings)
            }
            Some(other) => {
                return Err(unsupported(format!(
                    "mid_block_type {other:?} is not supported (UNetMidBlock2DCrossAttn or null)"
                )))
            }
        };

        let mut up = Vec::with_capacity(n);
        for (i, name) in self.up_block_types.iter().enumerate() {
            let kind = match name.strip_prefix("UNetRes").unwrap_or(name) {
                "CrossAttnUpBlock2D" => UpBlockKind::CrossAttn,
                "UpBlock2D" => UpBlockKind::Plain,
                other => {
                    return Err(unsupported(format!(
                        "up block type {other:?} is not supported (CrossAttnUpBlock2D, UpBlock2D)"
                    )))
                }
            };
            let settings = LevelSettings {
                layers: layers[n - 1 - i] + 1,
                ..level(n - 1 - i)
            };
            if kind == UpBlockKind::CrossAttn {
                check_heads(&settings)?;
            }
            up.push((kind, settings));
        }

        let time_embed_dim = self
            .time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4);
        Ok(UNetLayout {
            down,
            mid,
            up,
            groups,
            time_embed_dim,
            added_time: added,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_take_diffusers_defaults() {
        let c: UNetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, UNetConfig::default());
        let layout = c.layout().unwrap();
        assert_eq!(layout.down.len(), 4);
        assert_eq!(layout.up[0].0, UpBlockKind::Plain);
        assert_eq!(layout.up[3].1.layers, 3);
        assert_eq!(layout.time_embed_dim, 1280);
    }

    #[test]
    fn per_block_lists_are_read_and_reversed_for_up_blocks() {
        let c: UNetConfig = serde_json::from_str(
            r#"{"block_out_channels": [32, 64, 64],
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "attention_head_dim": [2, 4, 8], "transformer_layers_per_block": [1, 2, 3],
                "layers_per_block": [1, 2, 3], "cross_attention_dim": 24, "num_attention_heads": null}"#,
        )
        .unwrap();
        let l = c.layout().unwrap();
        assert_eq!(l.down[1].1.heads, 4);
        assert_eq!(l.up[0].1.heads, 8);
        assert_eq!(l.up[0].1.layers, 4);
        assert_eq!(l.up[2].1.transformer_layers, 1);
        assert_eq!(l.mid.unwrap().transformer_layers, 3);
        assert_eq!(l.down[2].1.transformer_layers, 3);
    }

    #[test]
    fn unsupported_values_are_errors_naming_the_key() {
        for (json, key) in [
            (r#"{"dual_cross_attention": true}"#, "dual_cross_attention"),
            (r#"{"addition_embed_type": "text"}"#, "addition_embed_type"),
            (
                r#"{"addition_embed_type": "text_time"}"#,
                "addition_time_embed_dim",
            ),
            (r#"{"class_embed_type": "timestep"}"#, "class_embed_type"),
            (
                r#"{"resnet_time_scale_shift": "scale_shift"}"#,
                "resnet_time_scale_shift",
            ),
            (
                r#"{"time_embedding_type": "fourier"}"#,
                "time_embedding_type",
            ),
            (r#"{"encoder_hid_dim": 768}"#, "encoder_hid_dim"),
            (r#"{"attention_head_dim": [8, 8]}"#, "attention_head_dim"),
            (r#"{"num_attention_heads": 8}"#, "num_attention_heads"),
            (
                r#"{"transformer_layers_per_block": [[1], [1], [1], [1]]}"#,
                "transformer_layers_per_block",
            ),
            (
                r#"{"mid_block_type": "UNetMidBlock2DSimpleCrossAttn"}"#,
                "mid_block_type",
            ),
            (r#"{"act_fn": "gelu"}"#, "act_fn"),
        ] {
            let c: UNetConfig = serde_json::from_str(json).unwrap();
            let err = c.layout().unwrap_err().to_string();
            assert!(err.contains(key), "{json}: {err}");
        }
    }
}
