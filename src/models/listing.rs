//! What `easel models list` and `info` show: every catalog and registered model, its version,
//! size, where it is and whether it is usable. Reading it touches no network.
use super::catalog::{Catalog, CatalogEntry};
use super::error::ModelError;
use super::record::PullRecord;
use super::registry::{LocalModel, Locations, Registry};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ready to render.
    Ready,
    /// A pull started and stopped: not usable until `pull` finishes it.
    Partial,
    /// In the catalog, not downloaded.
    NotPulled,
    /// Registered or pulled, but files are gone.
    Missing,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Partial => "partial",
            Status::NotPulled => "not pulled",
            Status::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub name: String,
    /// "catalog" or "local".
    pub source: &'static str,
    pub title: Option<String>,
    pub version: Option<String>,
    pub resolution: Option<u32>,
    /// Bytes on disk when present, else the catalog's sum.
    pub size: Option<u64>,
    /// Whether `size` covers every file (false: the catalog does not know some sizes).
    pub size_exact: bool,
    /// What loads (the snapshot folder or the file), when present.
    pub location: Option<PathBuf>,
    pub status: Status,
    pub default: bool,
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub license: Option<String>,
    /// Where the entry comes from: the built-in catalog, the user's catalog file, models.toml.
    pub defined_in: String,
    /// Files of a catalog model: (path, bytes when known).
    pub files: Vec<(String, Option<u64>)>,
}

/// Every known model: the catalog in its order, then registered models.
pub fn rows(loc: &Locations) -> Result<Vec<Row>, ModelError> {
    let catalog = Catalog::load(Some(&loc.user_catalog))?;
    let registry = Registry::load(&loc.registry)?;
    let default = registry.default.clone();
    let mut out = Vec::new();
    for entry in &catalog.entries {
        let record = PullRecord::load(&loc.pulls, &entry.name)?;
        out.push(catalog_row(entry, record, default.as_deref()));
    }
    for m in &registry.models {
        out.push(local_row(m, default.as_deref(), &loc.registry));
    }
    Ok(out)
}

/// One model's row, by name (or repository id).
pub fn row(loc: &Locations, name: &str) -> Result<Row, ModelError> {
    let all = rows(loc)?;
    if let Some(r) = all.iter().find(|r| {
        r.name == name
            || r.repo
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
    }) {
        return Ok(r.clone());
    }
    let known: Vec<String> = all.iter().map(|r| r.name.clone()).collect();
    Err(ModelError::Unknown {
        name: name.to_string(),
        suggestions: super::suggest::similar(name, &known),
        known,
    })
}

fn catalog_row(entry: &CatalogEntry, record: Option<PullRecord>, default: Option<&str>) -> Row {
    let (known, exact) = entry.known_size();
    let (status, size, size_exact, location, commit) = match &record {
        Some(r) if r.usable() => (
            Status::Ready,
            Some(r.total_size()),
            true,
            Some(super::pulled_path(entry, r)),
            Some(r.commit.clone()),
        ),
        Some(r) if !r.complete => (
            Status::Partial,
            Some(known).filter(|s| *s > 0),
            exact,
            Some(r.snapshot.clone()),
            Some(r.commit.clone()),
        ),
        Some(r) => (
            Status::Missing,
            Some(r.total_size()),
            true,
            Some(r.snapshot.clone()),
            Some(r.commit.clone()),
        ),
        None => (
            Status::NotPulled,
            Some(known).filter(|s| *s > 0),
            exact,
            None,
            None,
        ),
    };
    let files = entry
        .files
        .iter()
        .map(|f| {
            let pulled = record
                .as_ref()
                .and_then(|r| r.files.iter().find(|p| p.path == f.path).map(|p| p.size));
            (f.path.clone(), pulled.or(f.size))
        })
        .collect();
    Row {
        name: entry.name.clone(),
        source: "catalog",
        title: entry.title.clone(),
        version: entry.version.clone(),
        resolution: entry.resolution,
        size,
        size_exact,
        location,
        status,
        default: default == Some(entry.name.as_str()),
        repo: Some(entry.repo.clone()),
        revision: Some(entry.revision.clone()),
        commit,
        license: entry.license.clone(),
        defined_in: entry.origin.describe(),
        files,
    }
}

fn local_row(m: &LocalModel, default: Option<&str>, registry: &std::path::Path) -> Row {
    Row {
        name: m.name.clone(),
        source: "local",
        title: None,
        version: m.version.clone(),
        resolution: m.resolution,
        size: m.size,
        size_exact: m.size.is_some(),
        location: Some(m.path.clone()),
        status: if m.path.exists() {
            Status::Ready
        } else {
            Status::Missing
        },
        default: default == Some(m.name.as_str()),
        repo: None,
        revision: None,
        commit: None,
        license: None,
        defined_in: registry.display().to_string(),
        files: Vec::new(),
    }
}
