//! What a plan decided the first time it ran into an output folder and must decide the same
//! way ever after: the random seeds of `count = N` jobs and the `{date}` of file names. Kept in
//! `easel-batch.json` in the output folder, changed only under a lock and replaced atomically,
//! so shards starting together agree (the first one draws, the others read).
use crate::store::{lock, write_atomic};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE: &str = "easel-batch.json";
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchState {
    pub version: u32,
    /// YYYY-MM-DD, local time, of the first run.
    pub date: String,
    /// Random seeds by job identity (see `expand::job_key`), in drawing order.
    #[serde(default)]
    pub seeds: BTreeMap<String, Vec<u64>>,
}

impl BatchState {
    /// What a first run today would start from.
    pub fn fresh() -> Self {
        Self {
            version: VERSION,
            date: chrono::Local::now().format("%Y-%m-%d").to_string(),
            seeds: BTreeMap::new(),
        }
    }
}

pub fn path(out_dir: &Path) -> PathBuf {
    out_dir.join(FILE)
}

/// The state recorded in `out_dir`, if any (read-only: for --dry-run and status).
pub fn read(out_dir: &Path) -> Result<Option<BatchState>> {
    let path = path(out_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let state: BatchState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged: restore it, or delete it to draw new random seeds (images already \
             made from `count` jobs would then be made again)",
            path.display()
        )
    })?;
    if state.version > VERSION {
        anyhow::bail!(
            "{} was written by a newer easel: update easel to continue this batch",
            path.display()
        );
    }
    Ok(Some(state))
}

/// The recorded state with at least `wanted[key]` seeds for every job that draws them; new
/// seeds are drawn with `draw` and saved before anything renders.
pub fn ensure(
    out_dir: &Path,
    wanted: &[(String, usize)],
    draw: &mut dyn FnMut() -> Result<u64>,
) -> Result<BatchState> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;
    let path = path(out_dir);
    let lock_file = crate::store::lock_path(&path);
    let first_run = !lock_file.exists();
    let cannot = |e: std::io::Error| {
        anyhow::anyhow!(
            "cannot write {}: {e}{}",
            path.display(),
            crate::output::write_hint(&e)
        )
    };
    let _lock = lock(&path).map_err(cannot)?;
    let existing = read(out_dir)?;
    let mut state = existing.clone().unwrap_or_else(BatchState::fresh);
    for (key, count) in wanted {
        let seeds = state.seeds.entry(key.clone()).or_default();
        while seeds.len() < *count {
            seeds.push(draw()?);
        }
    }
    if existing.as_ref() != Some(&state) {
        let text = serde_json::to_string_pretty(&state)?;
        if let Err(e) = write_atomic(&path, text.as_bytes()) {
            // Nothing was recorded: a first run leaves the folder as it found it.
            if first_run {
                let _ = std::fs::remove_file(&lock_file);
            }
            return Err(cannot(e));
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_drawn_once_and_extended_not_redrawn() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut next = 100;
        let mut draw = || {
            next += 1;
            Ok(next)
        };
        let a = ensure(dir.path(), &[("j1".into(), 2)], &mut draw).unwrap();
        assert_eq!(a.seeds["j1"], vec![101, 102]);
        let b = ensure(dir.path(), &[("j1".into(), 3), ("j2".into(), 1)], &mut draw).unwrap();
        assert_eq!(b.seeds["j1"], vec![101, 102, 103]);
        assert_eq!(b.seeds["j2"], vec![104]);
        assert_eq!(b.date, a.date);
        // Fewer wanted: the recorded ones stay.
        let c = ensure(dir.path(), &[("j1".into(), 1)], &mut draw).unwrap();
        assert_eq!(c, b);
        assert_eq!(read(dir.path()).unwrap(), Some(b));
        std::fs::write(path(dir.path()), "{").unwrap();
        let err = format!("{:#}", read(dir.path()).unwrap_err());
        assert!(err.contains("damaged"), "{err}");
    }
}
