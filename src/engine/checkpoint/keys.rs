//! Original (LDM / OpenCLIP) tensor names to diffusers' names, one component at a time.
//!
//! The rules are the ones diffusers' `single_file_utils` applies when it converts a checkpoint:
//! - UNet (`model.diffusion_model.`): `input_blocks.N` counts `layers_per_block + 1` slots per
//!   level (the resnets/attentions, then the downsampler); `output_blocks.N` counts
//!   `layers_per_block + 1` per level with the upsampler in slot 1 (no attention) or 2;
//!   resnets rename `in_layers.0/2`, `emb_layers.1`, `out_layers.0/3`, `skip_connection`.
//! - VAE: `down.I.block.J`, `mid.block_1/2`, `mid.attn_1` (1x1 convolutions served as linear
//!   weights), and `up.K` counted from the bottom (diffusers' `up_blocks` count from the top).
//! - CLIP in transformers' layout: the prefix goes, `text_model.` is added when absent.
//! - OpenCLIP: the fused `in_proj_weight` is split into q/k/v rows, blocks past the config's
//!   `num_hidden_layers` are dropped (SD 2.x keeps 23 of 24), `text_projection` is transposed
//!   for models with a projection and dropped otherwise.
use super::super::weights::{Rename, View};
use serde_json::Value;

/// The parts of a component's config.json the mapping needs.
pub struct Shape {
    pub layers_per_block: i64,
    pub up_block_types: Vec<String>,
    pub levels: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub with_projection: bool,
}

impl Shape {
    pub fn from_config(config: &Value) -> Self {
        let int = |key: &str| {
            let v = &config[key];
            v.as_i64()
                .or_else(|| v.as_array().and_then(|a| a.first()).and_then(Value::as_i64))
                .unwrap_or(0)
        };
        let strings = |key: &str| -> Vec<String> {
            config[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let with_projection = config["architectures"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str() == Some("CLIPTextModelWithProjection"))
        });
        Shape {
            layers_per_block: int("layers_per_block"),
            up_block_types: strings("up_block_types"),
            levels: config["block_out_channels"]
                .as_array()
                .map_or(0, |a| a.len() as i64),
            hidden_size: int("hidden_size"),
            num_hidden_layers: int("num_hidden_layers"),
            with_projection,
        }
    }
}

/// What became of one stored tensor.
pub enum Mapped {
    To(Vec<Rename>),
    /// Carried by checkpoints, needed by no diffusers model (OpenCLIP's logit_scale, ...).
    Dropped,
    Unknown,
}

fn one(name: String, source: &str, view: View) -> Mapped {
    Mapped::To(vec![Rename {
        name,
        source: source.to_string(),
        view,
    }])
}

fn resnet(rest: &str) -> Option<String> {
    const RULES: &[(&str, &str)] = &[
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    RULES
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|r| format!("{new}{r}")))
}

/// Splits `N.S.rest` into its two indices and the rest.
fn indices(s: &str) -> Option<(i64, i64, &str)> {
    let (n, s) = s.split_once('.')?;
    let (slot, rest) = s.split_once('.')?;
    Some((n.parse().ok()?, slot.parse().ok()?, rest))
}

/// A UNet key without its `model.diffusion_model.` prefix.
pub fn unet(key: &str, source: &str, shape: &Shape) -> Mapped {
    let name = unet_name(key, shape);
    match name {
        Some(n) => one(n, source, View::Whole),
        None => Mapped::Unknown,
    }
}

fn unet_name(key: &str, shape: &Shape) -> Option<String> {
    const TOP: &[(&str, &str)] = &[
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    if let Some(n) = TOP
        .iter()
        .find_map(|(old, new)| key.strip_prefix(old).map(|r| format!("{new}{r}")))
    {
        return Some(n);
    }
    let per = shape.layers_per_block + 1;
    if let Some(s) = key.strip_prefix("input_blocks.") {
        let (n, slot, rest) = indices(s)?;
        if n < 1 {
            return None;
        }
        let (i, j) = ((n - 1) / per, (n - 1) % per);
        if j == shape.layers_per_block {
            let level = n / per - 1;
            let rest = rest.strip_prefix("op.")?;
            return Some(format!("down_blocks.{level}.downsamplers.0.conv.{rest}"));
        }
        return match slot {
            0 => Some(format!("down_blocks.{i}.resnets.{j}.{}", resnet(rest)?)),
            1 => Some(format!("down_blocks.{i}.attentions.{j}.{rest}")),
            _ => None,
        };
    }
    if let Some(s) = key.strip_prefix("middle_block.") {
        let (slot, rest) = s.split_once('.')?;
        return match slot {
            "0" => Some(format!("mid_block.resnets.0.{}", resnet(rest)?)),
            "1" => Some(format!("mid_block.attentions.0.{rest}")),
            "2" => Some(format!("mid_block.resnets.1.{}", resnet(rest)?)),
            _ => None,
        };
    }
    if let Some(s) = key.strip_prefix("output_blocks.") {
        let (n, slot, rest) = indices(s)?;
        let (i, j) = (n / per, n % per);
        let has_attention = shape
            .up_block_types
            .get(i as usize)
            .is_some_and(|t| t.contains("CrossAttn"));
        return match slot {
            0 => Some(format!("up_blocks.{i}.resnets.{j}.{}", resnet(rest)?)),
            1 if has_attention => Some(format!("up_blocks.{i}.attentions.{j}.{rest}")),
            1 | 2 => Some(format!("up_blocks.{i}.upsamplers.0.{rest}")),
            _ => None,
        };
    }
    None
}

/// A VAE key without its `first_stage_model.` prefix (`encoder.`, `decoder.`, convs).
pub fn vae(key: &str, source: &str, stored: &[i64], shape: &Shape) -> Mapped {
    let Some((side, rest)) = key.split_once('.') else {
        return Mapped::Unknown;
    };
    if side == "quant_conv" || side == "post_quant_conv" {
        return one(key.to_string(), source, View::Whole);
    }
    if side != "encoder" && side != "decoder" {
        return Mapped::Unknown;
    }
    let shortcut = |s: &str| s.replace("nin_shortcut.", "conv_shortcut.");
    let mut view = View::Whole;
    let name = if let Some(r) = rest.strip_prefix("norm_out.") {
        Some(format!("{side}.conv_norm_out.{r}"))
    } else if rest.starts_with("conv_in.") || rest.starts_with("conv_out.") {
        Some(key.to_string())
    } else if let Some(r) = rest.strip_prefix("mid.") {
        if let Some(r) = r.strip_prefix("block_1.") {
            Some(format!("{side}.mid_block.resnets.0.{}", shortcut(r)))
        } else if let Some(r) = r.strip_prefix("block_2.") {
            Some(format!("{side}.mid_block.resnets.1.{}", shortcut(r)))
        } else if let Some(r) = r.strip_prefix("attn_1.") {
            let (module, param) = r.split_once('.').unwrap_or((r, ""));
            let module = match module {
                "norm" => Some("group_norm"),
                "q" => Some("to_q"),
                "k" => Some("to_k"),
                "v" => Some("to_v"),
                "proj_out" => Some("to_out.0"),
                _ => None,
            };
            if stored.len() == 4 && module != Some("group_norm") {
                view = View::Reshape(stored[..2].to_vec());
            }
            module.map(|m| format!("{side}.mid_block.attentions.0.{m}.{param}"))
        } else {
            None
        }
    } else {
        let (word, blocks) = if side == "encoder" {
            ("down.", "down_blocks")
        } else {
            ("up.", "up_blocks")
        };
        rest.strip_prefix(word).and_then(|r| {
            let (level, r) = r.split_once('.')?;
            let level: i64 = level.parse().ok()?;
            let index = if side == "encoder" {
                level
            } else {
                shape.levels - 1 - level
            };
            if let Some(r) = r.strip_prefix("block.") {
                Some(format!("{side}.{blocks}.{index}.resnets.{}", shortcut(r)))
            } else if let Some(r) = r
                .strip_prefix("downsample.")
                .or_else(|| r.strip_prefix("upsample."))
            {
                let sampler = if side == "encoder" {
                    "downsamplers"
                } else {
                    "upsamplers"
                };
                Some(format!("{side}.{blocks}.{index}.{sampler}.0.{r}"))
            } else {
                None
            }
        })
    };
    match name {
        Some(n) => one(n, source, view),
        None => Mapped::Unknown,
    }
}

/// A transformers CLIP key without its `...transformer.` prefix.
pub fn clip(key: &str, source: &str) -> Mapped {
    if key.ends_with("position_ids") {
        return Mapped::Dropped;
    }
    let name = if key.starts_with("text_model.") || key.starts_with("text_projection") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    };
    one(name, source, View::Whole)
}

/// An OpenCLIP key without its `...model.` prefix.
pub fn open_clip(key: &str, source: &str, shape: &Shape) -> Mapped {
    let whole = |name: &str| one(name.to_string(), source, View::Whole);
    match key {
        "token_embedding.weight" => return whole("text_model.embeddings.token_embedding.weight"),
        "positional_embedding" => return whole("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight" => return whole("text_model.final_layer_norm.weight"),
        "ln_final.bias" => return whole("text_model.final_layer_norm.bias"),
        "text_projection" if shape.with_projection => {
            return one("text_projection.weight".into(), source, View::Transpose)
        }
        "text_projection" | "logit_scale" | "attn_mask" => return Mapped::Dropped,
        _ => {}
    }
    let Some((layer, rest)) = key
        .strip_prefix("transformer.resblocks.")
        .and_then(|s| s.split_once('.'))
    else {
        return Mapped::Unknown;
    };
    let Ok(layer) = layer.parse::<i64>() else {
        return Mapped::Unknown;
    };
    if layer >= shape.num_hidden_layers {
        return Mapped::Dropped;
    }
    let base = format!("text_model.encoder.layers.{layer}");
    if let Some(param) = rest
        .strip_prefix("attn.in_proj_")
        .filter(|p| *p == "weight" || *p == "bias")
    {
        let d = shape.hidden_size;
        let renames = ["q", "k", "v"]
            .iter()
            .enumerate()
            .map(|(i, x)| Rename {
                name: format!("{base}.self_attn.{x}_proj.{param}"),
                source: source.to_string(),
                view: View::Rows {
                    start: i as i64 * d,
                    count: d,
                },
            })
            .collect();
        return Mapped::To(renames);
    }
    const RULES: &[(&str, &str)] = &[
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    match RULES
        .iter()
        .find_map(|(old, new)| rest.strip_prefix(old).map(|r| format!("{new}{r}")))
    {
        Some(r) => whole(&format!("{base}.{r}")),
        None => Mapped::Unknown,
    }
}
