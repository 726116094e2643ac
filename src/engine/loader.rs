//! A diffusers model folder: `model_index.json` and one folder per component.
use super::error::{EngineError, Result};
use super::weights::{component_files, Weights};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// Reads a JSON config file into `T`, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| EngineError::Config {
        path: path.into(),
        message: e.to_string(),
    })
}

use super::family::SUPPORTED_PIPELINES;

/// A diffusers pipeline folder, checked for the components a text-to-image render needs.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub pipeline_class: String,
}

impl ModelFolder {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(EngineError::Invalid(format!(
                "model folder {} does not exist: pass the folder that holds model_index.json",
                root.display()
            )));
        }
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(EngineError::Invalid(format!(
                "{} has no model_index.json: easel loads diffusers model folders (with unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
                root.display()
            )));
        }
        let index: serde_json::Value = read_json(&index_path)?;
        let class = index
            .get("_class_name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        if !SUPPORTED_PIPELINES.contains(&class.as_str()) {
            return Err(EngineError::Invalid(format!(
                "{} is a {class:?} model; this version of easel renders {} models",
                root.display(),
                SUPPORTED_PIPELINES.join(", ")
            )));
        }
        let missing: Vec<&str> = ["unet", "vae", "text_encoder", "scheduler"]
            .into_iter()
            .filter(|c| !root.join(c).is_dir())
            .collect();
        if !missing.is_empty() {
            return Err(EngineError::Invalid(format!(
                "{} lacks the component folder(s) {}: the download may be incomplete",
                root.display(),
                missing.join(", ")
            )));
        }
        Ok(Self {
            root: root.to_path_buf(),
            pipeline_class: class,
        })
    }

    /// A short name for metadata: the folder's name.
    pub fn name(&self) -> String {
        let canonical = self
            .root
            .canonicalize()
            .unwrap_or_else(|_| self.root.clone());
        canonical
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn config(&self, component: &str, file: &str) -> PathBuf {
        self.root.join(component).join(file)
    }

    /// Opens a component's weights, preferring the fp16 variant files when computing in half precision.
    pub fn weights(
        &self,
        component: &str,
        stem: &str,
        device: Device,
        kind: Kind,
    ) -> Result<Weights> {
        let variant = matches!(kind, Kind::Half | Kind::BFloat16).then_some("fp16");
        let files = component_files(&self.component(component), stem, variant)?;
        Weights::open(&files, device, kind)
    }
}

/// Reads a JSON config and checks it with `validate`; validation messages name the file.
pub fn read_config<T: DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let config: T = read_json(path)?;
    validate(&config).map_err(|e| match e {
        EngineError::Invalid(m) => EngineError::Invalid(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok(config)
}

// ---- model sources: a diffusers folder or a single-file checkpoint

use super::checkpoint::Checkpoint;
use super::tokenizer::ClipTokenizer;

/// Where a pipeline's components come from.
pub enum ModelSource {
    Folder(ModelFolder),
    /// A single `.safetensors` in the original layout, with embedded configs (or a folder's).
    SingleFile(Checkpoint),
}

impl ModelSource {
    /// A folder is read as a diffusers pipeline, a file as a single-file checkpoint;
    /// `config_dir` (a diffusers folder) replaces a checkpoint's embedded configs.
    pub fn open(path: &Path, config_dir: Option<&Path>) -> Result<Self> {
        if path.is_file() {
            return Ok(Self::SingleFile(Checkpoint::open(path, config_dir)?));
        }
        if let Some(e) = super::checkpoint::refuse_pickle(path) {
            return Err(e);
        }
        Ok(Self::Folder(ModelFolder::open(path)?))
    }

    /// A short name for metadata: the folder's name or the file's stem.
    pub fn name(&self) -> String {
        match self {
            Self::Folder(f) => f.name(),
            Self::SingleFile(c) => c.name(),
        }
    }

    /// A component's config file, as text, and where it came from (for error messages).
    pub fn config_text(&self, component: &str, file: &str) -> Result<(String, PathBuf)> {
        match self {
            Self::Folder(f) => {
                let path = f.config(component, file);
                let text = std::fs::read_to_string(&path).map_err(|source| EngineError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((text, path))
            }
            Self::SingleFile(c) => Ok((
                c.config_text(component, file)?,
                c.config_origin(component, file),
            )),
        }
    }

    /// A component's config parsed into `T` and checked with `validate`.
    pub fn config<T: DeserializeOwned>(
        &self,
        component: &str,
        file: &str,
        validate: impl FnOnce(&T) -> Result<()>,
    ) -> Result<T> {
        let (text, path) = self.config_text(component, file)?;
        parse_config(&text, &path, validate)
    }

    /// A component's weights by diffusers' names.
    pub fn weights(
        &self,
        component: &str,
        stem: &str,
        device: Device,
        kind: Kind,
    ) -> Result<Weights> {
        match self {
            Self::Folder(f) => f.weights(component, stem, device, kind),
            Self::SingleFile(c) => c.weights(component, device, kind),
        }
    }

    /// The CLIP tokenizer of `component`: the folder's, else the embedded vocabulary with
    /// `pad_token` (a checkpoint picks the pad token of its version itself).
    pub fn tokenizer(&self, component: &str, pad_token: &str) -> Result<ClipTokenizer> {
        match self {
            Self::Folder(f) => {
                let dir = f.component(component);
                if dir.join("vocab.json").is_file() {
                    ClipTokenizer::from_folder(&dir)
                } else {
                    ClipTokenizer::embedded(pad_token)
                }
            }
            Self::SingleFile(c) => c.tokenizer(component),
        }
    }
}

/// Parses config JSON and checks it with `validate`; messages name `path`.
pub fn parse_config<T: DeserializeOwned>(
    text: &str,
    path: &Path,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let config: T = serde_json::from_str(text).map_err(|e| EngineError::Config {
        path: path.into(),
        message: e.to_string(),
    })?;
    validate(&config).map_err(|e| match e {
        EngineError::Invalid(m) => EngineError::Invalid(format!("{}: {m}", path.display())),
        other => other,
    })?;
    Ok(config)
}

/// A replacement VAE (`--vae`): a diffusers VAE folder (config.json and weights), or one
/// `.safetensors` with diffusers' names or the original ones (`first_stage_model.*`, or bare
/// `encoder.*`/`decoder.*` as standalone VAE files have them), which keeps the model's config.
pub struct VaeOverride {
    pub path: PathBuf,
}

impl VaeOverride {
    /// The VAE's config JSON: the folder's, else `model_config` (the model's own).
    pub fn config_text(&self, model_config: &str) -> Result<(String, PathBuf)> {
        if self.path.is_dir() {
            let path = self.path.join("config.json");
            let text = std::fs::read_to_string(&path).map_err(|source| EngineError::Io {
                path: path.clone(),
                source,
            })?;
            return Ok((text, path));
        }
        Ok((model_config.to_string(), self.path.clone()))
    }

    pub fn weights(
        &self,
        config: &serde_json::Value,
        device: Device,
        kind: Kind,
    ) -> Result<Weights> {
        if let Some(e) = super::checkpoint::refuse_pickle(&self.path) {
            return Err(e);
        }
        if self.path.is_dir() {
            let variant = matches!(kind, Kind::Half | Kind::BFloat16).then_some("fp16");
            let files = component_files(&self.path, "diffusion_pytorch_model", variant)?;
            return Weights::open(&files, device, kind);
        }
        if !self.path.is_file() {
            return Err(EngineError::Invalid(format!(
                "VAE {} does not exist: pass a diffusers VAE folder or a .safetensors file",
                self.path.display()
            )));
        }
        super::checkpoint::vae_file_weights(&self.path, config, device, kind)
    }
}
