//! <config>/models.toml: the models registered with `easel models add` and the default model.
//! easel writes it (atomically, under a lock); people may edit it too.
use super::error::ModelError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// The model used when none is named (a registered or catalog name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, rename = "model", skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<LocalModel>,
}

/// A model on disk that easel did not download: easel never deletes its files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalModel {
    pub name: String,
    pub path: PathBuf,
    /// What detection found when it was added ("SDXL", "SD 1.x inpainting").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<u32>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ModelError::BadFile {
                path: path.to_path_buf(),
                message: format!("{e}; fix or delete the file"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ModelError::io("read", path, e)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&LocalModel> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Reads, changes and writes the file under its lock, so two easel processes changing it
    /// at once both keep their change.
    pub fn update<T>(
        path: &Path,
        change: impl FnOnce(&mut Registry) -> Result<T, ModelError>,
    ) -> Result<T, ModelError> {
        let _lock = crate::store::lock(path).map_err(|e| ModelError::io("lock", path, e))?;
        let mut registry = Self::load(path)?;
        let out = change(&mut registry)?;
        let text = toml::to_string_pretty(&registry)
            .map_err(|e| ModelError::Invalid(format!("cannot write the model registry: {e}")))?;
        let text = format!(
            "# Models registered with `easel models add`, and the default model. Written by easel.\n{text}"
        );
        crate::store::write_atomic(path, text.as_bytes())
            .map_err(|e| ModelError::io("write", path, e))?;
        Ok(out)
    }
}

/// Where the registry and the pull records live.
#[derive(Debug, Clone)]
pub struct Locations {
    pub registry: PathBuf,
    pub user_catalog: PathBuf,
    pub pulls: PathBuf,
}

impl Locations {
    pub fn discover() -> Result<Self, ModelError> {
        let paths = crate::paths::Paths::discover().map_err(ModelError::Invalid)?;
        Ok(Self {
            registry: paths.models_registry(),
            user_catalog: paths.user_catalog(),
            pulls: paths.pulls(),
        })
    }
}
