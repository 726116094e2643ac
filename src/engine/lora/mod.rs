//! LoRAs fused into the weights as they load: `W += weight * alpha/rank * up @ down`.
//!
//! Two file formats, both `.safetensors`:
//! - kohya / AUTOMATIC1111: `lora_unet_<module with _>.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`; text encoders as `lora_te_` (SD 1.x/2.x), `lora_te1_` and `lora_te2_` (SDXL).
//!   Convolutions ("LoCon": a kxk down, a 1x1 up) fuse the same way, flattened.
//! - diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight` (and the older
//!   `.lora.down/.lora.up`), `text_encoder.` / `text_encoder_2.`; alpha and rank from the
//!   `lora_adapter_metadata` diffusers writes, else alpha = rank (scale 1) as diffusers assumes.
//!
//! Module names are matched against the names of the weights a model actually has, so kohya's
//! underscores need no guessing. Unloading rebuilds the patched components from the unchanged
//! files, which restores the base weights exactly.
mod prompt;

pub use prompt::{prompt_tags, strip_tags, LoraTag};

use super::error::{EngineError, Result};
use super::weights::{WeightPatch, Weights};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

/// A LoRA to apply and its weight (1.0: as trained; negative values invert it).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub weight: f64,
}

/// One low-rank pair from a file, for the module named `module` of `component`.
struct Pair {
    component: String,
    /// Dotted (diffusers) or underscored (kohya) module path.
    module: String,
    kohya: bool,
    down: Tensor,
    up: Tensor,
    scale: f64,
}

/// The LoRAs of a render, read once; each component's patch is made from them.
#[derive(Default)]
pub struct LoraSet {
    pairs: Vec<(usize, Pair)>,
    files: Vec<LoraSpec>,
    /// The UNet's config.json, to read kohya names in the original layout (SDXL LoRAs).
    unet_config: Option<serde_json::Value>,
}

impl LoraSet {
    pub fn load(specs: &[LoraSpec]) -> Result<Self> {
        let mut set = LoraSet::default();
        for (i, spec) in specs.iter().enumerate() {
            let pairs = read_file(&spec.path, spec.weight)?;
            if pairs.is_empty() {
                return Err(EngineError::Invalid(format!(
                    "{} holds no LoRA tensors (lora_down/lora_up or lora_A/lora_B): is it a LoRA?",
                    spec.path.display()
                )));
            }
            set.pairs.extend(pairs.into_iter().map(|p| (i, p)));
        }
        set.files = specs.to_vec();
        Ok(set)
    }

    /// Lets kohya UNet names in the original layout (`input_blocks_4_1_...`, as kohya's SDXL
    /// trainer writes them) resolve against a UNet with this config.
    pub fn with_unet_config(mut self, config: serde_json::Value) -> Self {
        self.unet_config = Some(config);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn specs(&self) -> &[LoraSpec] {
        &self.files
    }

    /// Components the LoRAs touch.
    pub fn components(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pairs
            .iter()
            .map(|(_, p)| p.component.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The patch for one component, its modules resolved against the weights' names; a
    /// module that matches no weight, or whose shape does not fit, is an error naming it.
    pub fn patch_for(
        &self,
        component: &str,
        weights: &Weights,
    ) -> Result<Option<Rc<dyn WeightPatch>>> {
        let mut dotted: HashMap<String, String> = HashMap::new();
        let mut underscored: HashMap<String, String> = HashMap::new();
        for name in weights.names() {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let bare = module.strip_prefix("text_model.").unwrap_or(module);
            for m in [
                module.to_string(),
                bare.to_string(),
                format!("text_model.{bare}"),
            ] {
                underscored
                    .entry(m.replace('.', "_"))
                    .or_insert_with(|| name.to_string());
                dotted.entry(m).or_insert_with(|| name.to_string());
            }
        }
        let mut deltas: HashMap<String, Vec<Factor>> = HashMap::new();
        let mut problems = Vec::new();
        for (file, pair) in self.pairs.iter().filter(|(_, p)| p.component == component) {
            let target = if pair.kohya {
                underscored.get(&pair.module).or_else(|| {
                    let config = self.unet_config.as_ref().filter(|_| component == "unet")?;
                    underscored.get(&ldm_module(&pair.module, config)?)
                })
            } else {
                dotted.get(&pair.module)
            };
            let Some(target) = target else {
                problems.push(format!(
                    "{}: {} matches nothing in the {component}",
                    self.files[*file].path.display(),
                    pair.module
                ));
                continue;
            };
            let shape = weights.shape_of(target).unwrap_or_default();
            let (out, inner) = (
                pair.up.size()[0],
                pair.down.numel() as i64 / pair.down.size()[0],
            );
            let fits = shape.first() == Some(&out)
                && shape.iter().skip(1).product::<i64>() == inner
                && pair.up.numel() as i64 == out * pair.down.size()[0];
            if !fits {
                problems.push(format!(
                    "{}: {} has shape {:?} x {:?}, which does not fit {target} {shape:?}",
                    self.files[*file].path.display(),
                    pair.module,
                    pair.up.size(),
                    pair.down.size()
                ));
                continue;
            }
            deltas.entry(target.clone()).or_default().push(Factor {
                down: pair.down.shallow_clone(),
                up: pair.up.shallow_clone(),
                scale: pair.scale,
            });
        }
        if !problems.is_empty() {
            let shown = problems.len().min(5);
            return Err(EngineError::Invalid(format!(
                "a LoRA does not fit this model ({} problem(s)), it is probably for another model version:\n  - {}",
                problems.len(),
                problems[..shown].join("\n  - ")
            )));
        }
        Ok((!deltas.is_empty()).then(|| Rc::new(LoraPatch { deltas }) as Rc<dyn WeightPatch>))
    }

    /// Errors when a LoRA touches a component the model does not have (an SDXL LoRA's
    /// second text encoder on SD 1.x, say).
    pub fn check_components(&self, model_components: &[&str]) -> Result<()> {
        for (file, pair) in &self.pairs {
            if !model_components.contains(&pair.component.as_str()) {
                return Err(EngineError::Invalid(format!(
                    "{} has weights for a {} this model does not have: it is for another model version",
                    self.files[*file].path.display(),
                    pair.component
                )));
            }
        }
        Ok(())
    }
}

/// A kohya module name in the original UNet layout, as diffusers' module name with
/// underscores: `input_blocks_4_1_proj_in` -> `down_blocks_1_attentions_0_proj_in`.
fn ldm_module(module: &str, config: &serde_json::Value) -> Option<String> {
    const TOP: &[(&str, &str)] = &[
        ("time_embed_0", "time_embed.0"),
        ("time_embed_2", "time_embed.2"),
        ("label_emb_0_0", "label_emb.0.0"),
        ("label_emb_0_2", "label_emb.0.2"),
        ("input_blocks_0_0", "input_blocks.0.0"),
        ("out_0", "out.0"),
        ("out_2", "out.2"),
    ];
    let dotted = if let Some((_, d)) = TOP.iter().find(|(k, _)| *k == module) {
        d.to_string()
    } else {
        let (block, rest) = if let Some(r) = module.strip_prefix("middle_block_") {
            let (slot, rest) = r.split_once('_')?;
            (format!("middle_block.{slot}"), rest)
        } else {
            let (kind, r) = module
                .strip_prefix("input_blocks_")
                .map(|r| ("input_blocks", r))
                .or_else(|| {
                    module
                        .strip_prefix("output_blocks_")
                        .map(|r| ("output_blocks", r))
                })?;
            let (n, r) = r.split_once('_')?;
            let (slot, rest) = r.split_once('_')?;
            (format!("{kind}.{n}.{slot}"), rest)
        };
        // resnet parts are dotted in the original names; attention internals keep diffusers' names
        let rest = ["in_layers_", "out_layers_", "emb_layers_"]
            .iter()
            .find_map(|p| {
                rest.strip_prefix(p)
                    .map(|i| format!("{}.{i}", &p[..p.len() - 1]))
            })
            .unwrap_or_else(|| rest.to_string());
        format!("{block}.{rest}")
    };
    let name = crate::engine::checkpoint::unet_name_from_ldm(&format!("{dotted}.weight"), config)?;
    Some(name.strip_suffix(".weight")?.replace('.', "_"))
}

struct Factor {
    down: Tensor,
    up: Tensor,
    scale: f64,
}

struct LoraPatch {
    deltas: HashMap<String, Vec<Factor>>,
}

impl WeightPatch for LoraPatch {
    fn delta(&self, name: &str, weight: &Tensor) -> Option<Tensor> {
        let factors = self.deltas.get(name)?;
        let device = weight.device();
        let mut total: Option<Tensor> = None;
        for f in factors {
            let up = f.up.to_device(device).flatten(1, -1);
            let down = f.down.to_device(device).flatten(1, -1);
            let d = up.matmul(&down).reshape(weight.size()) * f.scale;
            total = Some(match total {
                Some(t) => t + d,
                None => d,
            });
        }
        total
    }
}

/// Reads a LoRA file into pairs, scaled by `weight * alpha / rank`.
fn read_file(path: &Path, weight: f64) -> Result<Vec<Pair>> {
    if let Some(e) = super::checkpoint::refuse_pickle(path) {
        return Err(e);
    }
    if !path.is_file() {
        return Err(EngineError::Invalid(format!(
            "LoRA {} does not exist: check the path (or the name in <lora:NAME:WEIGHT>)",
            path.display()
        )));
    }
    let file = Weights::open(&[path.to_path_buf()], Device::Cpu, Kind::Float)?;
    let metadata = read_metadata(path)?;
    let read = |name: &str| -> Result<Tensor> { Ok(file.read_raw(name)?.to_kind(Kind::Float)) };
    let bad = |message: String| EngineError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    // The rank is the down projection's first dimension; a scalar or empty one is no LoRA.
    let rank_of = |name: &str, down: &Tensor| match down.size().first() {
        Some(&rank) if rank > 0 && down.dim() >= 2 => Ok(rank as f64),
        _ => Err(bad(format!(
            "{name} has shape {:?}: a LoRA down projection is a matrix (rank x features)",
            down.size()
        ))),
    };
    let up_of = |name: &str| -> Result<Tensor> {
        let up = read(name)?;
        if up.dim() < 2 {
            return Err(bad(format!(
                "{name} has shape {:?}: a LoRA up projection is a matrix (features x rank)",
                up.size()
            )));
        }
        Ok(up)
    };
    let alpha_of = |name: &str| -> Result<f64> {
        let alpha = read(name)?;
        if alpha.numel() != 1 {
            return Err(bad(format!(
                "{name} has shape {:?}: a LoRA alpha is one number",
                alpha.size()
            )));
        }
        Ok(alpha.double_value(&[]))
    };
    let names: Vec<String> = file.names().map(String::from).collect();
    let mut pairs = Vec::new();
    let mut leftovers = Vec::new();
    for name in &names {
        if let Some(module) = name.strip_suffix(".lora_down.weight") {
            let up_name = format!("{module}.lora_up.weight");
            let down = read(name)?;
            let up = up_of(&up_name)?;
            let rank = rank_of(name, &down)?;
            let alpha = match file.contains(&format!("{module}.alpha")) {
                true => alpha_of(&format!("{module}.alpha"))?,
                false => rank,
            };
            let (component, rest) = kohya_component(module).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "{}: {name} is not a UNet or text encoder LoRA (lora_unet_, lora_te_, lora_te1_, lora_te2_)",
                    path.display()
                ))
            })?;
            pairs.push(Pair {
                component: component.into(),
                module: rest.into(),
                kohya: true,
                down,
                up,
                scale: weight * alpha / rank,
            });
        } else if let Some((module, up_suffix)) = peft_down(name) {
            let down = read(name)?;
            let up = up_of(&format!("{module}{up_suffix}"))?;
            let rank = rank_of(name, &down)?;
            let Some((component, rest)) = module.split_once('.') else {
                leftovers.push(name.clone());
                continue;
            };
            let alpha = match file.contains(&format!("{module}.alpha")) {
                true => alpha_of(&format!("{module}.alpha"))?,
                false => peft_alpha(&metadata, component, rest).unwrap_or(rank),
            };
            let rest = rest
                .replace(".processor.", ".")
                .replace("to_out_lora", "to_out.0")
                .replace("_lora", "");
            pairs.push(Pair {
                component: component.into(),
                module: rest,
                kohya: false,
                down,
                up,
                scale: weight * alpha / rank,
            });
        } else if !(name.ends_with(".alpha")
            || name.ends_with(".lora_up.weight")
            || name.ends_with(".lora_B.weight")
            || name.ends_with(".up.weight"))
        {
            leftovers.push(name.clone());
        }
    }
    if !leftovers.is_empty() {
        return Err(EngineError::Invalid(format!(
            "{} has tensors easel cannot apply as a LoRA (first: {}): DoRA, LoHa and other LyCORIS kinds are not supported",
            path.display(),
            leftovers[0]
        )));
    }
    Ok(pairs)
}

fn kohya_component(module: &str) -> Option<(&'static str, &str)> {
    [
        ("lora_unet_", "unet"),
        ("lora_te1_", "text_encoder"),
        ("lora_te2_", "text_encoder_2"),
        ("lora_te_", "text_encoder"),
    ]
    .iter()
    .find_map(|(prefix, component)| module.strip_prefix(prefix).map(|rest| (*component, rest)))
}

/// A PEFT / diffusers down projection: the module and the suffix of its up projection.
fn peft_down(name: &str) -> Option<(&str, &'static str)> {
    [
        (".lora_A.weight", ".lora_B.weight"),
        (".lora.down.weight", ".lora.up.weight"),
        (
            ".lora_linear_layer.down.weight",
            ".lora_linear_layer.up.weight",
        ),
        ("_lora.down.weight", "_lora.up.weight"),
    ]
    .iter()
    .find_map(|(down, up)| name.strip_suffix(down).map(|m| (m, *up)))
}

/// `lora_alpha` from diffusers' `lora_adapter_metadata` (per component, with PEFT's
/// `alpha_pattern` overrides by module-name suffix).
fn peft_alpha(
    metadata: &BTreeMap<String, serde_json::Value>,
    component: &str,
    module: &str,
) -> Option<f64> {
    let get = |key: &str| metadata.get(&format!("{component}.{key}"));
    if let Some(pattern) = get("alpha_pattern").and_then(|p| p.as_object()) {
        if let Some(a) = pattern
            .iter()
            .find(|(k, _)| module == k.as_str() || module.ends_with(&format!(".{k}")))
            .and_then(|(_, v)| v.as_f64())
        {
            return Some(a);
        }
    }
    get("lora_alpha").and_then(|v| v.as_f64())
}

/// The `lora_adapter_metadata` JSON of a safetensors header, flattened.
fn read_metadata(path: &Path) -> Result<BTreeMap<String, serde_json::Value>> {
    use std::io::Read;
    let io = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(io)?;
    let len = u64::from_le_bytes(len).min(100_000_000) as usize;
    let mut header = vec![0u8; len];
    f.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap_or_default();
    let text = header["__metadata__"]["lora_adapter_metadata"]
        .as_str()
        .unwrap_or("{}");
    Ok(serde_json::from_str(text).unwrap_or_default())
}
