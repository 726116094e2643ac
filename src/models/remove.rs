//! `easel models rm NAME`: forgets a registered model (its files stay: easel did not make
//! them) or deletes the files a pull downloaded (files that were in the Hugging Face cache
//! before, or that another snapshot still links, stay).
use super::catalog::Catalog;
use super::error::ModelError;
use super::record::PullRecord;
use super::registry::{Locations, Registry};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// Unregister only.
    Local { name: String, path: PathBuf },
    /// Delete these files (links and the blobs they point at), then the record.
    Pulled {
        name: String,
        record: Box<PullRecord>,
        delete: Vec<PathBuf>,
        bytes: u64,
        /// Files of the model that stay: not downloaded by easel, or shared.
        kept: Vec<String>,
    },
}

impl Removal {
    pub fn name(&self) -> &str {
        match self {
            Removal::Local { name, .. } | Removal::Pulled { name, .. } => name,
        }
    }
}

/// What `rm NAME` would do, without doing it.
pub fn plan(loc: &Locations, name: &str) -> Result<Removal, ModelError> {
    let registry = Registry::load(&loc.registry)?;
    if let Some(m) = registry.get(name) {
        return Ok(Removal::Local {
            name: name.to_string(),
            path: m.path.clone(),
        });
    }
    let catalog = Catalog::load(Some(&loc.user_catalog))?;
    let Some(record) = PullRecord::load(&loc.pulls, name)? else {
        if catalog.get(name).is_some() {
            return Err(ModelError::Invalid(format!(
                "{name} is not downloaded: there is nothing to remove"
            )));
        }
        let known = super::known_names(&catalog, &registry);
        return Err(ModelError::Unknown {
            name: name.to_string(),
            suggestions: super::suggest::similar(name, &known),
            known,
        });
    };
    let repo_dir = record
        .snapshot
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut delete = Vec::new();
    let mut kept = Vec::new();
    let mut bytes = 0;
    for f in &record.files {
        let pointer = record.snapshot.join(&f.path);
        let blob = repo_dir.join("blobs").join(&f.etag);
        if !f.downloaded || linked_elsewhere(&repo_dir, &record.snapshot, &blob) {
            kept.push(f.path.clone());
            continue;
        }
        if std::fs::symlink_metadata(&pointer).is_ok() {
            delete.push(pointer);
        }
        if blob.exists() {
            bytes += f.size;
            delete.push(blob);
        }
    }
    Ok(Removal::Pulled {
        name: name.to_string(),
        record: Box::new(record),
        delete,
        bytes,
        kept,
    })
}

/// Carries out a plan; clears the default when it named the removed model.
pub fn apply(loc: &Locations, removal: &Removal) -> Result<(), ModelError> {
    if let Removal::Pulled {
        name,
        record,
        delete,
        ..
    } = removal
    {
        for path in delete {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ModelError::io("delete", path.clone(), e)),
            }
            // hf-hub leaves a lock file beside each blob it wrote.
            if path.parent().is_some_and(|p| p.ends_with("blobs")) {
                let _ = std::fs::remove_file(path.with_extension("lock"));
            }
        }
        remove_empty_dirs(&record.snapshot);
        PullRecord::remove(&loc.pulls, name)?;
    }
    let name = removal.name().to_string();
    Registry::update(&loc.registry, |r| {
        r.models.retain(|m| m.name != name);
        if r.default.as_deref() == Some(name.as_str()) {
            r.default = None;
        }
        Ok(())
    })
}

/// Whether a snapshot other than `ours` links to `blob`.
fn linked_elsewhere(repo_dir: &Path, ours: &Path, blob: &Path) -> bool {
    let Ok(snapshots) = std::fs::read_dir(repo_dir.join("snapshots")) else {
        return false;
    };
    let target = blob.canonicalize().ok();
    snapshots
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != ours)
        .any(|s| links_to(&s, target.as_deref()))
}

fn links_to(dir: &Path, target: Option<&Path>) -> bool {
    let Some(target) = target else { return false };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => links_to(&p, Some(target)),
            Ok(_) => p.canonicalize().ok().as_deref() == Some(target),
            Err(_) => false,
        }
    })
}

/// Removes `dir` and the folders below it that are left empty.
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
