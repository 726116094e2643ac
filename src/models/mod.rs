//! Models by name: the catalog (pinned Hugging Face repositories easel can pull), models the
//! user registered with `easel models add`, and the default model. [`resolve`] is the one place
//! a model string (a name, a repository id or a path) becomes the path the engine loads.
//!
//! Files: catalog.rs (models/catalog.toml + <config>/catalog.toml), registry.rs
//! (<config>/models.toml), record.rs (<data>/models/NAME.json, one per pull), pull.rs and hub.rs
//! (downloads through hf-hub into the shared Hugging Face cache), local.rs (`add`), remove.rs
//! (`rm`), listing.rs (`list`, `info`), verify.rs (hub hashes), disk.rs (free space),
//! suggest.rs ("did you mean").
pub mod catalog;
pub mod disk;
pub mod error;
pub mod hub;
pub mod listing;
pub mod local;
pub mod pull;
pub mod record;
pub mod registry;
pub mod remove;
pub mod suggest;
pub mod verify;

pub use catalog::{Catalog, CatalogEntry};
pub use error::ModelError;
pub use registry::{LocalModel, Locations, Registry};

use record::PullRecord;
use std::path::{Path, PathBuf};

/// What a model string names.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// A path given as it is (it may not exist: the loader says so).
    Path(PathBuf),
    /// A model registered with `easel models add`.
    Local(LocalModel),
    /// A catalog model, pulled and complete.
    Pulled { entry: CatalogEntry, path: PathBuf },
}

impl Found {
    pub fn path(&self) -> &Path {
        match self {
            Found::Path(p) => p,
            Found::Local(m) => &m.path,
            Found::Pulled { path, .. } => path,
        }
    }
}

/// The path to load for `model`: an existing path as it is, else a registered name, else a
/// catalog name or repository id that has been pulled. Unknown names fail with the closest
/// known names and the list; catalog models not downloaded yet say how to pull them.
pub fn resolve(model: &str) -> Result<PathBuf, ModelError> {
    find(model).map(|f| f.path().to_path_buf())
}

/// [`resolve`], saying which kind of model the string named.
pub fn find(model: &str) -> Result<Found, ModelError> {
    let model = model.trim();
    if model.is_empty() {
        return Err(ModelError::Invalid(
            "the model is empty: give a name from `easel models list` or a path".into(),
        ));
    }
    let as_path = Path::new(model);
    if as_path.exists() {
        return Ok(Found::Path(as_path.to_path_buf()));
    }
    let loc = Locations::discover();
    let catalog = match &loc {
        Ok(l) => Catalog::load(Some(&l.user_catalog))?,
        Err(_) => Catalog::builtin()?,
    };
    let by_repo = catalog.by_repo(model);
    if looks_like_path(model) && by_repo.is_none() {
        return Ok(Found::Path(as_path.to_path_buf()));
    }
    let registry = match &loc {
        Ok(l) => Registry::load(&l.registry)?,
        Err(_) => Registry::default(),
    };
    if let Some(local) = registry.get(model) {
        if !local.path.exists() {
            return Err(ModelError::Missing {
                name: model.to_string(),
                path: local.path.clone(),
                what: format!(
                    "register it again with `easel models add PATH --name {model}` after `easel models rm {model}`"
                ),
            });
        }
        return Ok(Found::Local(local.clone()));
    }
    if let Some(entry) = catalog.get(model).or(by_repo) {
        let pulls = loc.as_ref().ok().map(|l| l.pulls.clone());
        let record = match &pulls {
            Some(dir) => PullRecord::load(dir, &entry.name)?,
            None => None,
        };
        return match record {
            Some(r) if r.usable() => Ok(Found::Pulled {
                path: pulled_path(entry, &r),
                entry: entry.clone(),
            }),
            Some(r) if !r.complete => Err(ModelError::Incomplete {
                name: entry.name.clone(),
            }),
            Some(r) => Err(ModelError::Missing {
                name: entry.name.clone(),
                path: r.snapshot,
                what: format!(
                    "some of its files are gone; run `easel models pull {}` to fetch them again",
                    entry.name
                ),
            }),
            None => Err(ModelError::NotPulled {
                name: entry.name.clone(),
                size: Some(entry.known_size().0).filter(|s| *s > 0),
            }),
        };
    }
    let known = known_names(&catalog, &registry);
    Err(ModelError::Unknown {
        name: model.to_string(),
        suggestions: suggest::similar(model, &known),
        known,
    })
}

/// The default model's name (`easel models default NAME`), if one is set.
pub fn default_name() -> Result<Option<String>, ModelError> {
    let loc = Locations::discover()?;
    Ok(Registry::load(&loc.registry)?.default)
}

/// The name metadata should show for `model`: the name itself when it named a registered or
/// catalog model (a pulled model's folder is a commit hash), None for a path.
pub fn display_name(model: &str) -> Option<String> {
    match find(model) {
        Ok(Found::Local(_) | Found::Pulled { .. }) => Some(model.trim().to_string()),
        _ => None,
    }
}

/// Every name a user can type, catalog first.
pub fn known_names(catalog: &Catalog, registry: &Registry) -> Vec<String> {
    let mut names: Vec<String> = catalog.entries.iter().map(|e| e.name.clone()).collect();
    for m in &registry.models {
        if !names.contains(&m.name) {
            names.push(m.name.clone());
        }
    }
    names
}

/// What loads for a pulled entry: the snapshot folder, or its one file for a checkpoint entry.
pub fn pulled_path(entry: &CatalogEntry, record: &PullRecord) -> PathBuf {
    match entry.single_file() {
        Some(file) => record.snapshot.join(file),
        None => record.snapshot.clone(),
    }
}

/// A string that can only be meant as a path.
fn looks_like_path(s: &str) -> bool {
    s.contains('/')
        || s.contains('\\')
        || s.starts_with('.')
        || s.starts_with('~')
        || [".safetensors", ".ckpt", ".pt", ".pth", ".bin"]
            .iter()
            .any(|ext| s.to_lowercase().ends_with(ext))
}

/// Sizes as the hub shows them (decimal units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_hub() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(6_938_078_334), "6.9 GB");
        assert_eq!(human_bytes(167_335_342), "167.3 MB");
    }

    #[test]
    fn paths_are_told_from_names() {
        for p in ["models/sd15", "./x", "a.safetensors", "~/m", "old.ckpt"] {
            assert!(looks_like_path(p), "{p}");
        }
        for n in ["sd15", "sdxl-turbo", "my.model"] {
            assert!(!looks_like_path(n), "{n}");
        }
    }

    #[test]
    fn the_builtin_catalog_holds_the_promised_models() {
        let c = Catalog::builtin().unwrap();
        for name in [
            "sd15",
            "sd21",
            "sd21-base",
            "sdxl",
            "sd-turbo",
            "sdxl-turbo",
            "sd15-inpainting",
            "sdxl-inpainting",
        ] {
            let e = c.get(name).unwrap_or_else(|| panic!("{name} is missing"));
            assert!(e.resolution.is_some(), "{name} has no resolution");
            assert_eq!(e.revision.len(), 40, "{name} is not pinned to a commit");
            assert!(e.revision.chars().all(|c| c.is_ascii_hexdigit()));
        }
    }
}
