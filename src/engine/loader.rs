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
