//! `easel models pull`: a catalog entry's files into the Hugging Face cache through hf-hub,
//! checked against the hub's hashes, with a record that says "complete" only at the end.
//!
//! hf-hub (0.5, sync API) gives the cache layout (`blobs/ETAG`, `snapshots/COMMIT/PATH` links),
//! the hub protocol (a ranged GET for x-repo-commit / x-linked-etag / size) and downloads that
//! resume from `blobs/ETAG.part` with a Range request. What it does not do, easel adds here:
//! hashing every file against its etag (fetching it again once when it does not match), a
//! free-space check before the first byte, and resuming a file that came back short.
use super::catalog::{CatalogEntry, CatalogFile};
use super::error::ModelError;
use super::hub::{explain, HubConfig, Stage};
use super::record::{PullRecord, PulledFile};
use super::verify;
use hf_hub::api::sync::{Api, ApiRepo};
use hf_hub::api::Progress;
use hf_hub::{Cache, CacheRepo, Repo, RepoType};
use std::path::{Path, PathBuf};

/// Room kept free beyond the download itself, so a pull never fills a disk to the last byte.
const HEADROOM: u64 = 64 << 20;

/// How a file of the pull ended up on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    /// Downloaded from the first byte.
    Fetched,
    /// Continued from a partial download of `from` bytes.
    Resumed { from: u64 },
    /// Already in the cache with the right hash.
    Present,
    /// Downloaded again after the first copy did not match the hub's hash.
    Refetched,
}

/// One file the pull will fetch (or found), with the hub's answers about it.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    pub path: String,
    pub size: u64,
    pub etag: String,
    /// Bytes a previous, interrupted pull left in `blobs/ETAG.part`.
    pub partial: u64,
    /// Already complete in the cache.
    pub present: bool,
}

/// What the pull found before downloading.
#[derive(Debug, Clone)]
pub struct PullPlan {
    pub commit: String,
    pub snapshot: PathBuf,
    pub files: Vec<PlannedFile>,
}

impl PullPlan {
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Bytes still to transfer.
    pub fn to_fetch(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| !f.present)
            .map(|f| f.size.saturating_sub(f.partial))
            .sum()
    }
}

/// Events of a pull, for a progress display.
pub trait PullProgress {
    fn planned(&mut self, plan: &PullPlan);
    fn file_started(&mut self, path: &str, size: u64, resume_from: u64);
    /// `done`: bytes of this file on disk so far.
    fn file_progress(&mut self, path: &str, done: u64);
    fn file_finished(&mut self, path: &str, size: u64, outcome: FileOutcome);
    fn note(&mut self, message: &str);
}

/// A progress display that shows nothing.
pub struct Quiet;

impl PullProgress for Quiet {
    fn planned(&mut self, _: &PullPlan) {}
    fn file_started(&mut self, _: &str, _: u64, _: u64) {}
    fn file_progress(&mut self, _: &str, _: u64) {}
    fn file_finished(&mut self, _: &str, _: u64, _: FileOutcome) {}
    fn note(&mut self, _: &str) {}
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PullOptions {
    /// Hash the files already in the cache too (else a file a previous easel pull verified,
    /// with the same etag and size, is trusted).
    pub verify: bool,
}

/// Pulls `entry` into the hub cache and records it under `pulls` as NAME.json.
pub fn pull(
    entry: &CatalogEntry,
    config: &HubConfig,
    pulls: &Path,
    options: PullOptions,
    progress: &mut dyn PullProgress,
) -> Result<PullRecord, ModelError> {
    if config.offline {
        return Err(ModelError::NoNetwork {
            endpoint: config.endpoint.clone(),
            reason: "HF_HUB_OFFLINE is set".into(),
        });
    }
    let api = config.api()?;
    let repo = Repo::with_revision(entry.repo.clone(), RepoType::Model, entry.revision.clone());
    let remote = api.repo(repo.clone());
    let cache = Cache::new(config.cache.clone()).repo(repo);
    let previous = PullRecord::load(pulls, &entry.name)?;

    let hub = Hub {
        api: &api,
        remote: &remote,
        config,
        entry,
    };
    let answers = hub.metadata_all(progress)?;
    let commit = answers
        .first()
        .map(|(_, m)| m.commit.clone())
        .ok_or_else(|| ModelError::Invalid(format!("{} lists no files to pull", entry.name)))?;
    if let Some((f, m)) = answers.iter().find(|(_, m)| m.commit != commit) {
        return Err(ModelError::Protocol {
            file: f.path.clone(),
            message: format!(
                "it comes from commit {} while the others come from {commit}; the revision moved during the pull, run it again",
                m.commit
            ),
        });
    }
    let snapshot = cache.pointer_path(&commit);
    let trusted = |path: &str, etag: &str| {
        !options.verify
            && previous.as_ref().is_some_and(|r| {
                r.commit == commit && r.files.iter().any(|f| f.path == path && f.etag == etag)
            })
    };

    // What is there already: complete blobs (hashed unless a previous pull did), partial ones.
    let mut plan = PullPlan {
        commit: commit.clone(),
        snapshot: snapshot.clone(),
        files: Vec::new(),
    };
    for (file, meta) in &answers {
        let blob = cache.blob_path(&meta.etag);
        let part = part_path(&blob);
        let on_disk = std::fs::metadata(&blob).map(|m| m.len()).ok();
        let mut present = false;
        match on_disk {
            Some(len) if len == meta.size => {
                if trusted(&file.path, &meta.etag) {
                    present = true;
                } else if let Some(actual) = check(&blob, &meta.etag)? {
                    progress.note(&format!(
                        "{} in the cache does not match the hub's hash ({actual}): fetching it again",
                        file.path
                    ));
                    discard(&blob, &snapshot.join(&file.path))?;
                } else {
                    present = true;
                }
            }
            // A blob that came back short is a partial download: continue it.
            Some(len) if len < meta.size && !part.exists() => {
                std::fs::rename(&blob, &part)
                    .map_err(|e| ModelError::io("move", blob.clone(), e))?;
            }
            Some(_) => discard(&blob, &snapshot.join(&file.path))?,
            None => {}
        }
        let mut partial = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if partial > meta.size {
            remove_if_exists(&part)?;
            partial = 0;
        }
        if present {
            link(&blob, &snapshot.join(&file.path))?;
        }
        plan.files.push(PlannedFile {
            path: file.path.clone(),
            size: meta.size,
            etag: meta.etag.clone(),
            partial: if present { 0 } else { partial },
            present,
        });
    }

    let needed = plan.to_fetch();
    if needed > 0 {
        let free = super::disk::free_bytes(&config.cache)
            .map_err(|e| ModelError::io("measure the free space of", config.cache.clone(), e))?;
        if needed.saturating_add(HEADROOM) > free {
            return Err(ModelError::DiskFull {
                needed,
                free,
                dir: config.cache.clone(),
            });
        }
    }
    progress.planned(&plan);

    let was_downloaded = |path: &str| {
        previous
            .as_ref()
            .is_some_and(|r| r.files.iter().any(|f| f.path == path && f.downloaded))
    };
    let mut record = PullRecord {
        name: entry.name.clone(),
        repo: entry.repo.clone(),
        revision: entry.revision.clone(),
        commit: commit.clone(),
        endpoint: config.endpoint.clone(),
        snapshot: snapshot.clone(),
        files: plan
            .files
            .iter()
            .filter(|f| f.present)
            .map(|f| PulledFile {
                path: f.path.clone(),
                size: f.size,
                etag: f.etag.clone(),
                downloaded: was_downloaded(&f.path),
            })
            .collect(),
        complete: false,
    };
    record.save(pulls)?;
    for f in plan.files.iter().filter(|f| f.present) {
        progress.file_finished(&f.path, f.size, FileOutcome::Present);
    }

    for file in plan.files.iter().filter(|f| !f.present) {
        let outcome = hub.fetch(file, &cache, &snapshot, progress)?;
        progress.file_finished(&file.path, file.size, outcome);
        record.files.push(PulledFile {
            path: file.path.clone(),
            size: file.size,
            etag: file.etag.clone(),
            downloaded: true,
        });
        record.save(pulls)?;
    }
    // Last: only now is the model usable.
    let order: Vec<&str> = entry.files.iter().map(|f| f.path.as_str()).collect();
    record
        .files
        .sort_by_key(|f| order.iter().position(|p| *p == f.path));
    record.complete = true;
    record.save(pulls)?;
    Ok(record)
}

struct FileMeta {
    commit: String,
    etag: String,
    size: u64,
}

struct Hub<'a> {
    api: &'a Api,
    remote: &'a ApiRepo,
    config: &'a HubConfig,
    entry: &'a CatalogEntry,
}

impl Hub<'_> {
    /// The hub's commit, hash and size of every file (optional files it lacks left out).
    fn metadata_all(
        &self,
        progress: &mut dyn PullProgress,
    ) -> Result<Vec<(&CatalogFile, FileMeta)>, ModelError> {
        let mut out = Vec::new();
        for file in &self.entry.files {
            match self.metadata(&file.path) {
                Ok(meta) => {
                    if let Some(listed) = file.size.filter(|s| *s != meta.size) {
                        progress.note(&format!(
                            "{}: the catalog says {listed} bytes, the hub {}; using the hub's",
                            file.path, meta.size
                        ));
                    }
                    out.push((file, meta));
                }
                Err(Missing404) if file.optional => {}
                Err(Missing404) => {
                    return Err(ModelError::HubMissing {
                        endpoint: self.config.endpoint.clone(),
                        repo: self.entry.repo.clone(),
                        revision: self.entry.revision.clone(),
                        file: file.path.clone(),
                        catalog: self.entry.origin.describe(),
                    })
                }
                Err(Other(e)) => return Err(e),
            }
        }
        Ok(out)
    }

    fn metadata(&self, path: &str) -> Result<FileMeta, MetaError> {
        let url = self.remote.url(path);
        let meta = self.api.metadata(&url).map_err(|e| {
            match explain(e, Stage::Metadata, self.config, &self.entry.repo, path) {
                Ok(err) => Other(err),
                Err(_) => Missing404,
            }
        })?;
        let size = u64::try_from(meta.size()).map_err(|_| {
            Other(ModelError::Protocol {
                file: path.to_string(),
                message: "its size does not fit in 64 bits".into(),
            })
        })?;
        let etag = meta.etag().trim_start_matches("W/").to_string();
        if etag.is_empty() || etag.contains('/') || etag.contains("..") {
            return Err(Other(ModelError::Protocol {
                file: path.to_string(),
                message: format!("its etag {etag:?} cannot name a file"),
            }));
        }
        Ok(FileMeta {
            commit: meta.commit_hash().to_string(),
            etag,
            size,
        })
    }

    /// Downloads one file (resuming a partial one), checks its length and hash, and fetches it
    /// once more when the hash is wrong.
    fn fetch(
        &self,
        file: &PlannedFile,
        cache: &CacheRepo,
        snapshot: &Path,
        progress: &mut dyn PullProgress,
    ) -> Result<FileOutcome, ModelError> {
        let blob = cache.blob_path(&file.etag);
        let pointer = snapshot.join(&file.path);
        let mut outcome = match file.partial {
            0 => FileOutcome::Fetched,
            from => FileOutcome::Resumed { from },
        };
        for attempt in 0..2 {
            // A link left by an earlier pull whose blob is gone would stop hf-hub making one.
            remove_link(&pointer)?;
            self.download(file, &blob, progress)?;
            match check(&blob, &file.etag)? {
                None => return Ok(outcome),
                Some(actual) if attempt == 0 => {
                    progress.note(&format!(
                        "{} does not match the hub's hash (got {actual}): fetching it again",
                        file.path
                    ));
                    discard(&blob, &pointer)?;
                    outcome = FileOutcome::Refetched;
                }
                Some(actual) => {
                    discard(&blob, &pointer)?;
                    return Err(ModelError::HashMismatch {
                        file: file.path.clone(),
                        expected: file.etag.clone(),
                        actual,
                    });
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// hf-hub's resumable download; a transfer that ends early without an error (a server
    /// closing the connection) is continued from where it stopped.
    fn download(
        &self,
        file: &PlannedFile,
        blob: &Path,
        progress: &mut dyn PullProgress,
    ) -> Result<(), ModelError> {
        let part = part_path(blob);
        let mut stalled = 0;
        loop {
            let from = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            progress.file_started(&file.path, file.size, from);
            let adapter = Adapter {
                sink: &mut *progress,
                path: &file.path,
                pos: 0,
            };
            self.remote
                .download_with_progress(&file.path, adapter)
                .map_err(|e| {
                    explain(
                        e,
                        Stage::Download,
                        self.config,
                        &self.entry.repo,
                        &file.path,
                    )
                    .unwrap_or_else(|status| ModelError::Http {
                        url: self.remote.url(&file.path),
                        status,
                    })
                })?;
            let len = std::fs::metadata(blob)
                .map_err(|e| ModelError::io("read", blob.to_path_buf(), e))?
                .len();
            if len >= file.size {
                return Ok(());
            }
            // Short: put it back as a partial download and continue it, unless it stopped
            // growing (then the server is not sending the rest).
            stalled = if len <= from { stalled + 1 } else { 0 };
            if stalled >= 2 {
                return Err(ModelError::Interrupted {
                    file: file.path.clone(),
                    reason: format!("the server sent {len} of {} bytes", file.size),
                });
            }
            std::fs::rename(blob, &part)
                .map_err(|e| ModelError::io("move", blob.to_path_buf(), e))?;
        }
    }
}

enum MetaError {
    Missing404,
    Other(ModelError),
}
use MetaError::{Missing404, Other};

/// Feeds hf-hub's progress calls (a restart calls `init` and then `update` with the bytes
/// already there) to the display as a position within the file.
struct Adapter<'a> {
    sink: &'a mut dyn PullProgress,
    path: &'a str,
    pos: u64,
}

impl Progress for Adapter<'_> {
    fn init(&mut self, _size: usize, _filename: &str) {
        self.pos = 0;
    }

    fn update(&mut self, size: usize) {
        self.pos += size as u64;
        self.sink.file_progress(self.path, self.pos);
    }

    fn finish(&mut self) {}
}

fn part_path(blob: &Path) -> PathBuf {
    let mut p = blob.to_path_buf();
    p.set_extension("part");
    p
}

fn check(blob: &Path, etag: &str) -> Result<Option<String>, ModelError> {
    verify::mismatch(blob, etag).map_err(|e| ModelError::io("hash", blob.to_path_buf(), e))
}

/// Removes a bad blob and the snapshot's link to it.
fn discard(blob: &Path, pointer: &Path) -> Result<(), ModelError> {
    remove_if_exists(blob)?;
    remove_link(pointer)
}

fn remove_if_exists(path: &Path) -> Result<(), ModelError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ModelError::io("remove", path.to_path_buf(), e)),
    }
}

fn remove_link(pointer: &Path) -> Result<(), ModelError> {
    if std::fs::symlink_metadata(pointer).is_ok() {
        remove_if_exists(pointer)?;
    }
    Ok(())
}

/// The snapshot's entry for a blob that was already in the cache (as hf-hub links them:
/// a relative symlink, so the cache can move).
fn link(blob: &Path, pointer: &Path) -> Result<(), ModelError> {
    if pointer.exists() {
        return Ok(());
    }
    remove_link(pointer)?;
    let dir = pointer.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("create", dir.to_path_buf(), e))?;
    #[cfg(unix)]
    {
        let target = relative(blob, dir);
        std::os::unix::fs::symlink(&target, pointer)
            .map_err(|e| ModelError::io("link", pointer.to_path_buf(), e))
    }
    #[cfg(not(unix))]
    {
        std::fs::copy(blob, pointer)
            .map(|_| ())
            .map_err(|e| ModelError::io("copy", pointer.to_path_buf(), e))
    }
}

/// `to` as a path relative to the folder `from` (both absolute or both relative).
fn relative(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_links_climb_out_of_the_snapshot() {
        assert_eq!(
            relative(
                Path::new("/c/models--a--b/blobs/e1"),
                Path::new("/c/models--a--b/snapshots/abc/unet")
            ),
            PathBuf::from("../../../blobs/e1")
        );
    }
}
