//! <data>/models/NAME.json: what a pull of a catalog model has fetched so far. It is rewritten
//! after every verified file and marked complete last, so a model whose pull stopped half way
//! is never taken for a usable one.
use super::error::ModelError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRecord {
    pub name: String,
    pub repo: String,
    /// The revision asked for, and the commit the hub resolved it to.
    pub revision: String,
    pub commit: String,
    pub endpoint: String,
    /// The snapshot folder in the Hugging Face cache: `.../models--o--n/snapshots/COMMIT`.
    pub snapshot: PathBuf,
    pub files: Vec<PulledFile>,
    /// Written last, once every file is present and verified.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PulledFile {
    pub path: String,
    pub size: u64,
    /// The hub's hash: sha256 for LFS files, git's blob sha1 for the others.
    pub etag: String,
    /// easel fetched it (rather than finding it in the cache): `rm` deletes only these.
    pub downloaded: bool,
}

impl PullRecord {
    pub fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.json"))
    }

    pub fn load(dir: &Path, name: &str) -> Result<Option<Self>, ModelError> {
        let path = Self::path(dir, name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| ModelError::BadFile {
                    path,
                    message: format!("{e}; delete it and run `easel models pull {name}` again"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModelError::io("read", path, e)),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = Self::path(dir, &self.name);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ModelError::Invalid(format!("cannot record the pull: {e}")))?;
        crate::store::write_atomic(&path, text.as_bytes())
            .map_err(|e| ModelError::io("write", path, e))
    }

    pub fn remove(dir: &Path, name: &str) -> Result<(), ModelError> {
        let path = Self::path(dir, name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ModelError::io("remove", path, e)),
        }
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Complete, and every file still where the pull left it with its size (no hashing: that
    /// is `easel models pull NAME --verify`).
    pub fn usable(&self) -> bool {
        self.complete
            && self.files.iter().all(|f| {
                std::fs::metadata(self.snapshot.join(&f.path)).is_ok_and(|m| m.len() == f.size)
            })
    }
}
