//! `easel models add PATH`: registers a diffusers folder or a single-file checkpoint under a
//! name, with its version read from its configs or tensors (never from its name).
use super::catalog::{check_name, Catalog};
use super::error::ModelError;
use super::registry::{LocalModel, Locations, Registry};
use crate::engine::checkpoint::{self, Checkpoint, Version};
use crate::engine::family::ModelInfo;
use std::path::{Path, PathBuf};

/// What detection found in a model on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub version: String,
    pub resolution: Option<u32>,
    pub size: u64,
}

/// Reads what `path` holds: a diffusers folder's configs, or a checkpoint's tensor names.
pub fn detect(path: &Path) -> Result<Detected, ModelError> {
    if let Some(e) = checkpoint::refuse_pickle(path) {
        return Err(ModelError::Invalid(e.to_string()));
    }
    let invalid = |e: crate::engine::error::EngineError| ModelError::Invalid(e.to_string());
    if path.is_dir() {
        if !path.join("model_index.json").is_file() {
            return Err(ModelError::Invalid(format!(
                "{} is not a diffusers model folder (it has no model_index.json): add the folder that holds model_index.json, or a .safetensors checkpoint",
                path.display()
            )));
        }
        let info = ModelInfo::detect(path).map_err(invalid)?;
        return Ok(Detected {
            version: info.label(),
            resolution: folder_resolution(path),
            size: tree_size(path),
        });
    }
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    if !is_safetensors {
        return Err(ModelError::Invalid(format!(
            "{} is neither a diffusers folder nor a .safetensors checkpoint",
            path.display()
        )));
    }
    let ckpt = Checkpoint::open(path, None).map_err(invalid)?;
    let d = ckpt.detected();
    let mut version = d.version.label().to_string();
    if d.inpainting {
        version.push_str(" inpainting");
    }
    if d.v_prediction {
        version.push_str(" (v-prediction)");
    }
    let resolution = match (d.version, d.v_prediction) {
        (Version::Sdxl, _) => 1024,
        (Version::Sd2, true) => 768,
        _ => 512,
    };
    Ok(Detected {
        version,
        resolution: Some(resolution),
        size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    })
}

/// Registers `path` as `name` (or a name made from the folder or file name).
pub fn add(loc: &Locations, path: &Path, name: Option<&str>) -> Result<LocalModel, ModelError> {
    if !path.exists() {
        return Err(ModelError::Invalid(format!(
            "{} does not exist: give a diffusers folder (with model_index.json) or a .safetensors checkpoint",
            path.display()
        )));
    }
    let path = path
        .canonicalize()
        .map_err(|e| ModelError::io("read", path, e))?;
    let name = match name {
        Some(n) => n.to_string(),
        None => name_from(&path),
    };
    check_name(&name).map_err(|m| ModelError::Invalid(format!("{m} (choose one with --name)")))?;
    let catalog = Catalog::load(Some(&loc.user_catalog))?;
    if catalog.get(&name).is_some() {
        return Err(ModelError::Invalid(format!(
            "{name} is the name of a catalog model: choose another with --name"
        )));
    }
    let found = detect(&path)?;
    let model = LocalModel {
        name: name.clone(),
        path,
        version: Some(found.version),
        size: Some(found.size),
        resolution: found.resolution,
    };
    Registry::update(&loc.registry, |r| {
        if let Some(old) = r.get(&name) {
            return Err(ModelError::Invalid(format!(
                "{name} is already registered ({}): choose another with --name, or `easel models rm {name}` first",
                old.path.display()
            )));
        }
        r.models.push(model.clone());
        Ok(())
    })?;
    Ok(model)
}

/// A name from a folder's or file's name: lower case, other characters as '-'.
fn name_from(path: &Path) -> String {
    let stem = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    };
    let raw = stem
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    name.trim_start_matches(['.', '-']).to_string()
}

/// The UNet's sample size times the VAE's scale (2^(levels - 1)), as diffusers computes it.
fn folder_resolution(root: &Path) -> Option<u32> {
    let read = |p: PathBuf| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let unet = read(root.join("unet/config.json"))?;
    let vae = read(root.join("vae/config.json"))?;
    let sample = match unet.get("sample_size")? {
        serde_json::Value::Array(a) => a.first()?.as_u64()?,
        v => v.as_u64()?,
    };
    let levels = vae.get("block_out_channels")?.as_array()?.len() as u32;
    u32::try_from(sample)
        .ok()?
        .checked_mul(1 << levels.saturating_sub(1))
}

/// Bytes of every file below `dir`, links followed (a Hugging Face snapshot is links).
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => tree_size(&p),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_and_folder_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("Dreamy Mix v2.safetensors");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(name_from(&f), "dreamy-mix-v2");
        assert_eq!(name_from(&dir.path().join("SDXL_base")), "sdxl_base");
    }
}
