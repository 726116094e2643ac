//! Safe writes for the user's files: presets, history and settings are never half-written, and
//! two easel processes writing at once lose nothing.
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced and renamed
/// over the target, so readers see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".easel-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself is durable only once the folder is synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on `<path>.lock`, held until dropped. Every writer of `path`
/// takes it, so read-modify-write cycles from several processes do not overwrite each other.
pub struct FileLock {
    _file: File,
}

pub fn lock(path: &Path) -> io::Result<FileLock> {
    let lock_path = lock_path(path);
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    file.lock()?;
    Ok(FileLock { _file: file })
}

/// The file `lock` takes for `path`: `<path>.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Appends one line (a JSON record) under the lock, fsynced: concurrent appenders never
/// interleave or lose lines.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let _lock = lock(path)?;
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut record = line.trim_end_matches('\n').to_string();
    record.push('\n');
    file.write_all(record.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.toml");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("b.toml")]);
    }

    #[test]
    fn parallel_appenders_lose_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        append_line(&path, &format!("{{\"t\":{t},\"i\":{i}}}")).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 400);
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), 400);
    }
}
