//! Single-file checkpoints: one `.safetensors` in the original Stable Diffusion layout, as
//! AUTOMATIC1111, ComfyUI and model sites share them, served to the models by diffusers' names.
//!
//! The version comes from the keys, never from the file's name (rules as diffusers'
//! `infer_diffusers_model_type`):
//! - SDXL base: `conditioner.embedders.1.model.*` (OpenCLIP bigG) is present;
//!   an SDXL refiner (`conditioner.embedders.0.model.*` alone) is refused.
//! - SD 2.x: `cond_stage_model.model.*` (OpenCLIP-H), or a UNet cross-attention `to_k` that
//!   takes 1024 features. Like diffusers, SD 2.x means the 768-pixel v-prediction model
//!   (SD 2.1) unless the file records `global_step` 875000 (SD 2.0 base: 512, epsilon).
//! - SD 1.x: `cond_stage_model.transformer.*` (CLIP ViT-L) and a UNet.
//! - An inpainting UNet shows as 9 input channels in `input_blocks.0.0.weight`.
//!
//! What the file lacks comes from configs embedded here (written from the diffusers configs of
//! SD 1.5, SD 2.1 and SDXL base 1.0) or from a diffusers folder given as `config`, and from the
//! embedded CLIP vocabulary.
mod keys;

use super::error::{EngineError, Result};
use super::tokenizer::ClipTokenizer;
use super::weights::{Rename, Weights};
use keys::{Mapped, Shape};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Sd1,
    Sd2,
    Sdxl,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::Sd1 => "SD 1.x",
            Version::Sd2 => "SD 2.x",
            Version::Sdxl => "SDXL",
        }
    }

    /// The diffusers components a pipeline of this version has.
    pub fn components(self) -> &'static [&'static str] {
        match self {
            Version::Sdxl => &["unet", "vae", "text_encoder", "text_encoder_2"],
            _ => &["unet", "vae", "text_encoder"],
        }
    }
}

/// What the keys say about a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub version: Version,
    pub inpainting: bool,
    /// SD 2.x only: the 768 v-prediction model rather than the 512 epsilon base.
    pub v_prediction: bool,
}

const UNET: &str = "model.diffusion_model.";
const VAE_PREFIXES: &[&str] = &["first_stage_model.", "vae."];
const SD1_CLIP: &str = "cond_stage_model.transformer.";
const SD2_CLIP: &str = "cond_stage_model.model.";
const XL_CLIP: &str = "conditioner.embedders.0.transformer.";
const XL_CLIP2: &str = "conditioner.embedders.1.model.";
const XL_REFINER_CLIP: &str = "conditioner.embedders.0.model.";

/// Says why pickle files are refused and how to convert one, or None for other files.
pub fn refuse_pickle(path: &Path) -> Option<EngineError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ["ckpt", "pt", "pth", "bin"].contains(&ext.as_str()).then(|| {
        EngineError::Invalid(format!(
            "{} is a pickle file, and easel never opens pickles: unpickling can run any code the file's author put in it. \
             Convert it to safetensors in a Python environment you trust, for example:\n  \
             python -c \"import torch, safetensors.torch as s; d = torch.load('{0}', map_location='cpu', weights_only=True); d = d.get('state_dict', d); s.save_file({{k: v.contiguous() for k, v in d.items() if isinstance(v, torch.Tensor)}}, '{1}')\"\n\
             then pass the .safetensors file (weights_only=True refuses code, so this command is safe to run).",
            path.display(),
            path.with_extension("safetensors").display()
        ))
    })
}

/// Reads the version from the tensor names and shapes.
pub fn detect(shapes: &BTreeMap<String, Vec<i64>>) -> Result<Detected> {
    let has_prefix = |p: &str| shapes.keys().any(|k| k.starts_with(p));
    let conv_in = shapes.get(&format!("{UNET}input_blocks.0.0.weight"));
    let Some(conv_in) = conv_in else {
        return Err(EngineError::Invalid(
            "this file has no Stable Diffusion UNet (model.diffusion_model.*): it may be a LoRA, a VAE or an embedding. \
             Pass it with --lora or --vae, or use a full checkpoint"
                .into(),
        ));
    };
    let inpainting = conv_in.get(1) == Some(&9);
    let to_k_1024 = shapes
        .get(&format!(
            "{UNET}input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
        ))
        .and_then(|s| s.last())
        == Some(&1024);
    let version = if has_prefix(XL_CLIP2) {
        Version::Sdxl
    } else if has_prefix(XL_REFINER_CLIP) {
        return Err(EngineError::Invalid(
            "this is an SDXL refiner checkpoint, which easel does not render: use an SDXL base model".into(),
        ));
    } else if has_prefix(SD2_CLIP) || to_k_1024 {
        Version::Sd2
    } else if has_prefix(SD1_CLIP) {
        Version::Sd1
    } else {
        return Err(EngineError::Invalid(
            "this checkpoint has a UNet but no text encoder easel recognises (cond_stage_model.* or conditioner.embedders.*): \
             it is not an SD 1.x, 2.x or XL checkpoint"
                .into(),
        ));
    };
    Ok(Detected {
        version,
        inpainting,
        v_prediction: version == Version::Sd2,
    })
}

/// An opened single-file checkpoint.
pub struct Checkpoint {
    path: PathBuf,
    detected: Detected,
    shapes: BTreeMap<String, Vec<i64>>,
    /// A diffusers folder whose configs (and tokenizer) replace the embedded ones.
    config_dir: Option<PathBuf>,
}

impl Checkpoint {
    pub fn open(path: &Path, config_dir: Option<&Path>) -> Result<Self> {
        if let Some(e) = refuse_pickle(path) {
            return Err(e);
        }
        let header = Weights::open(&[path.to_path_buf()], Device::Cpu, Kind::Float)?;
        let shapes: BTreeMap<String, Vec<i64>> = header
            .names()
            .filter_map(|n| header.shape_of(n).map(|s| (n.to_string(), s)))
            .collect();
        let mut detected = detect(&shapes).map_err(|e| match e {
            EngineError::Invalid(m) => EngineError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })?;
        if detected.version == Version::Sd2 && header.contains("global_step") {
            let step = header.read_raw("global_step")?;
            if step.numel() == 1 && step.to_kind(Kind::Int64).int64_value(&[]) == 875_000 {
                detected.v_prediction = false;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            detected,
            shapes,
            config_dir: config_dir.map(Path::to_path_buf),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The diffusers folder whose configs replace the embedded ones, if one was given.
    pub fn config_dir(&self) -> Option<&Path> {
        self.config_dir.as_deref()
    }

    pub fn detected(&self) -> &Detected {
        &self.detected
    }

    pub fn version(&self) -> Version {
        self.detected.version
    }

    /// The file's name without its extension.
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    /// A component's config file as JSON text: the config folder's when given, otherwise the
    /// embedded standard config, adjusted to what the keys say (inpainting, SD 2.0 base).
    pub fn config_text(&self, component: &str, file: &str) -> Result<String> {
        if let Some(dir) = &self.config_dir {
            let path = dir.join(component).join(file);
            return std::fs::read_to_string(&path)
                .map_err(|source| EngineError::Io { path, source });
        }
        let text = standard_config(self.version(), component).ok_or_else(|| {
            EngineError::Invalid(format!(
                "a {} checkpoint has no {component} component",
                self.version().label()
            ))
        })?;
        let mut value: Value = serde_json::from_str(text)
            .map_err(|e| EngineError::Invalid(format!("embedded config: {e}")))?;
        let base_sd2 = self.version() == Version::Sd2 && !self.detected.v_prediction;
        match component {
            "unet" => {
                let conv_in = self.shapes.get(&format!("{UNET}input_blocks.0.0.weight"));
                if let Some(&channels) = conv_in.and_then(|c| c.get(1)) {
                    value["in_channels"] = channels.into();
                }
                if base_sd2 {
                    value["sample_size"] = 64.into();
                }
            }
            "vae" if base_sd2 => value["sample_size"] = 512.into(),
            "scheduler" if base_sd2 => value["prediction_type"] = "epsilon".into(),
            _ => {}
        }
        Ok(value.to_string())
    }

    /// Where a component's config comes from, for messages.
    pub fn config_origin(&self, component: &str, file: &str) -> PathBuf {
        match &self.config_dir {
            Some(dir) => dir.join(component).join(file),
            None => PathBuf::from(format!(
                "{} (easel's standard {} {component} config)",
                self.path.display(),
                self.version().label()
            )),
        }
    }

    /// A component's config, parsed.
    pub fn config(&self, component: &str, file: &str) -> Result<Value> {
        serde_json::from_str(&self.config_text(component, file)?)
            .map_err(|e| EngineError::Invalid(format!("{component} config: {e}")))
    }

    /// Every tensor a component takes, by diffusers' name, from the file's names.
    pub fn renames(&self, component: &str) -> Result<Vec<Rename>> {
        let shape = Shape::from_config(&self.config(component, "config.json")?);
        let version = self.version();
        let mut renames = Vec::new();
        let mut unknown = Vec::new();
        for (source, stored) in &self.shapes {
            let mapped = match (component, version) {
                ("unet", _) => source
                    .strip_prefix(UNET)
                    .map(|k| keys::unet(k, source, &shape)),
                ("vae", _) => VAE_PREFIXES
                    .iter()
                    .find_map(|p| source.strip_prefix(p))
                    .map(|k| keys::vae(k, source, stored, &shape)),
                ("text_encoder", Version::Sd1) => {
                    source.strip_prefix(SD1_CLIP).map(|k| keys::clip(k, source))
                }
                ("text_encoder", Version::Sd2) => source
                    .strip_prefix(SD2_CLIP)
                    .map(|k| keys::open_clip(k, source, &shape)),
                ("text_encoder", Version::Sdxl) => {
                    source.strip_prefix(XL_CLIP).map(|k| keys::clip(k, source))
                }
                ("text_encoder_2", Version::Sdxl) => source
                    .strip_prefix(XL_CLIP2)
                    .map(|k| keys::open_clip(k, source, &shape)),
                _ => {
                    return Err(EngineError::Invalid(format!(
                        "a {} checkpoint has no {component} component",
                        version.label()
                    )))
                }
            };
            match mapped {
                Some(Mapped::To(r)) => renames.extend(r),
                Some(Mapped::Unknown) => unknown.push(source.clone()),
                Some(Mapped::Dropped) | None => {}
            }
        }
        if !unknown.is_empty() {
            return Err(EngineError::Invalid(format!(
                "{}: {} tensor(s) of the {component} have names easel cannot map to diffusers' (first: {}). \
                 The file may be a variant easel does not know; converting it with diffusers' from_single_file and \
                 save_pretrained gives a folder easel loads",
                self.path.display(),
                unknown.len(),
                unknown[..unknown.len().min(3)].join(", ")
            )));
        }
        if renames.is_empty() {
            return Err(EngineError::Invalid(format!(
                "{} has no {component} weights: pass a full checkpoint, or a diffusers folder",
                self.path.display()
            )));
        }
        Ok(renames)
    }

    /// A component's weights under diffusers' names.
    pub fn weights(&self, component: &str, device: Device, kind: Kind) -> Result<Weights> {
        let renames = self.renames(component)?;
        let location = format!("{} ({component})", self.path.display());
        Weights::open_renamed(&self.path, &renames, device, kind, location)
    }

    /// The tokenizer for `component` ("tokenizer" or "tokenizer_2"): the config folder's, or
    /// the embedded vocabulary with the pad token of the version's repositories.
    pub fn tokenizer(&self, component: &str) -> Result<ClipTokenizer> {
        if let Some(dir) = &self.config_dir {
            let dir = dir.join(component);
            if dir.join("vocab.json").is_file() {
                return ClipTokenizer::from_folder(&dir);
            }
        }
        let pad = match (self.version(), component) {
            (Version::Sd1, _) | (Version::Sdxl, "tokenizer") => "<|endoftext|>",
            _ => "!",
        };
        ClipTokenizer::embedded(pad)
    }
}

/// The embedded config of a standard model's component (`scheduler` is its scheduler_config).
pub fn standard_config(version: Version, component: &str) -> Option<&'static str> {
    Some(match (version, component) {
        (Version::Sd1, "unet") => include_str!("configs/sd1-unet.json"),
        (Version::Sd1, "vae") => include_str!("configs/sd1-vae.json"),
        (Version::Sd1, "text_encoder") => include_str!("configs/sd1-text_encoder.json"),
        (Version::Sd1, "scheduler") => include_str!("configs/sd1-scheduler.json"),
        (Version::Sd2, "unet") => include_str!("configs/sd2-unet.json"),
        (Version::Sd2, "vae") => include_str!("configs/sd2-vae.json"),
        (Version::Sd2, "text_encoder") => include_str!("configs/sd2-text_encoder.json"),
        (Version::Sd2, "scheduler") => include_str!("configs/sd2-scheduler.json"),
        (Version::Sdxl, "unet") => include_str!("configs/sdxl-unet.json"),
        (Version::Sdxl, "vae") => include_str!("configs/sdxl-vae.json"),
        (Version::Sdxl, "text_encoder") => include_str!("configs/sdxl-text_encoder.json"),
        (Version::Sdxl, "text_encoder_2") => include_str!("configs/sdxl-text_encoder_2.json"),
        (Version::Sdxl, "scheduler") => include_str!("configs/sdxl-scheduler.json"),
        _ => return None,
    })
}

/// The diffusers name of a UNet tensor given by its original (LDM) name without the
/// `model.diffusion_model.` prefix, for a UNet with `config` (used for kohya SDXL LoRAs).
pub fn unet_name_from_ldm(ldm: &str, config: &Value) -> Option<String> {
    match keys::unet(ldm, ldm, &Shape::from_config(config)) {
        Mapped::To(r) => r.into_iter().next().map(|r| r.name),
        _ => None,
    }
}

/// A standalone VAE file's weights by diffusers' names, whichever naming it uses.
pub fn vae_file_weights(
    path: &Path,
    config: &Value,
    device: Device,
    kind: Kind,
) -> Result<Weights> {
    let header = Weights::open(&[path.to_path_buf()], Device::Cpu, Kind::Float)?;
    // diffusers' own names need no mapping
    if header
        .names()
        .any(|n| n.contains(".down_blocks.") || n.contains(".mid_block."))
    {
        return Weights::open(&[path.to_path_buf()], device, kind);
    }
    let shape = Shape::from_config(config);
    let has_prefix = header
        .names()
        .any(|n| VAE_PREFIXES.iter().any(|p| n.starts_with(p)));
    let mut renames = Vec::new();
    let mut unknown = Vec::new();
    for source in header.names() {
        let key = match VAE_PREFIXES.iter().find_map(|p| source.strip_prefix(p)) {
            Some(k) => k,
            None if has_prefix => continue,
            None => source,
        };
        let stored = header.shape_of(source).unwrap_or_default();
        match keys::vae(key, source, &stored, &shape) {
            Mapped::To(r) => renames.extend(r),
            Mapped::Dropped => {}
            Mapped::Unknown => unknown.push(source.to_string()),
        }
    }
    if !unknown.is_empty() || renames.is_empty() {
        return Err(EngineError::Invalid(format!(
            "{} is not a VAE easel can read: {} tensor(s) have unknown names (first: {})",
            path.display(),
            unknown.len(),
            unknown.first().map(String::as_str).unwrap_or("none")
        )));
    }
    let location = format!("{} (vae)", path.display());
    Weights::open_renamed(path, &renames, device, kind, location)
}
