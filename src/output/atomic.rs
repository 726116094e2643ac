//! Files appear whole or not at all. Data goes to a hidden temporary file in the destination's
//! folder (same filesystem, so the final rename or link is atomic); on error, cancel or drop the
//! temporary file is removed, and on a hard exit `remove_inflight` cleans what is left.
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Temporary files being written now, for a second Ctrl-C that exits without unwinding.
static INFLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The prefix of every temporary name, so stray ones are easy to recognise.
pub const TEMP_PREFIX: &str = ".easel-";

fn inflight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a plain list behind: still usable.
    INFLIGHT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file still being written (for an exit that skips destructors).
pub fn remove_inflight() {
    remove_inflight_where(|_| true);
}

fn remove_inflight_where(pick: impl Fn(&Path) -> bool) {
    inflight().retain(|path| {
        if pick(path) {
            let _ = fs::remove_file(path);
            false
        } else {
            true
        }
    });
}

/// A temporary file that is removed unless it is persisted.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    pub fn create_in(dir: &Path) -> io::Result<Self> {
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let name = format!("{TEMP_PREFIX}{}-{n}-{nanos}.tmp", std::process::id());
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    inflight().push(path.clone());
                    return Ok(Self {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "no free temporary file name",
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(data),
            None => Err(io::Error::other("temporary file already closed")),
        }
    }

    /// Flushes to disk and closes; the data then only needs a name.
    fn close(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(f) => f.sync_all(),
            None => Ok(()),
        }
    }

    /// Gives the data the name `dest`, replacing any file there.
    pub fn persist_replace(mut self, dest: &Path) -> io::Result<()> {
        self.close()?;
        fs::rename(&self.path, dest)
    }

    /// Gives the data the name `dest` only if no file has it; `AlreadyExists` otherwise, and the
    /// temporary file is kept so the caller can try another name.
    pub fn persist_new(&mut self, dest: &Path) -> io::Result<()> {
        self.close()?;
        match fs::hard_link(&self.path, dest) {
            // The temporary name goes away on drop.
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(e),
            Err(_) => {
                // Filesystems without hard links: claim the name, then rename onto the claim.
                OpenOptions::new().write(true).create_new(true).open(dest)?;
                fs::rename(&self.path, dest).inspect_err(|_| {
                    // An empty claim left behind would look like a broken image.
                    let _ = fs::remove_file(dest);
                })
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.path);
        inflight().retain(|p| p != &self.path);
    }
}

/// The folder a destination's temporary file goes in.
pub fn parent_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `dest` atomically: `write` fills a temporary file, which then replaces `dest`
/// (or, with `replace` false, takes the name only if it is free).
pub fn write_atomic(
    dest: &Path,
    replace: bool,
    write: impl FnOnce(&mut TempFile) -> io::Result<()>,
) -> io::Result<()> {
    let mut tmp = TempFile::create_in(parent_dir(dest))?;
    write(&mut tmp)?;
    if replace {
        tmp.persist_replace(dest)
    } else {
        tmp.persist_new(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.png");
        let err = write_atomic(&dest, true, |f| {
            f.write_all(b"half an image")?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "encoder failed");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        assert!(inflight().iter().all(|p| !p.starts_with(dir.path())));
    }

    #[test]
    fn replace_and_no_replace() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.png");
        write_atomic(&dest, true, |f| f.write_all(b"one")).unwrap();
        write_atomic(&dest, true, |f| f.write_all(b"two")).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        let err = write_atomic(&dest, false, |f| f.write_all(b"three")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(names(dir.path()), vec!["a.png"]);
    }

    #[test]
    fn inflight_files_are_removed_on_hard_exit() {
        let dir = tempfile::tempdir().unwrap();
        let mut tmp = TempFile::create_in(dir.path()).unwrap();
        tmp.write_all(b"partial").unwrap();
        assert!(tmp.path().exists());
        let path = tmp.path().to_path_buf();
        // What the second Ctrl-C does before exiting: the destructor never runs.
        std::mem::forget(tmp);
        // Only this test's files: other tests write temporary files concurrently.
        remove_inflight_where(|p| p.starts_with(dir.path()));
        assert!(!path.exists());
    }
}
