//! The batch manifest: `easel-manifest.jsonl` in the output folder, one JSON line per finished
//! (or failed) image, appended after the PNG is in place. An image is done when its latest line
//! says so for the same recipe hash and the file is still there; anything else renders again.
//!
//! All shards of a plan share this one file: each line is written whole with O_APPEND under an
//! exclusive lock (`<file>.lock`), so lines never interleave. A line cut short by a kill is
//! ignored when read (its image renders again), and the next append starts on a fresh line.
use crate::store::lock;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const FILE: &str = "easel-manifest.jsonl";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The image's identity in the plan (its recipe hash, plus `-N` for the Nth duplicate).
    pub id: String,
    /// The job's name or number.
    pub job: String,
    pub recipe_hash: String,
    /// Relative to the output folder, `/`-separated.
    pub path: String,
    pub seed: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Denoising steps that ran (img2img runs fewer than the recipe's).
    #[serde(default)]
    pub steps: usize,
    /// Seconds from the start of the render to the written PNG (model loading not included).
    #[serde(default)]
    pub render_s: f64,
    /// Seconds spent loading the model for this image (0 when it was already loaded).
    #[serde(default)]
    pub load_s: f64,
    #[serde(default)]
    pub bytes: u64,
    /// The device that rendered it (`cpu`, `cuda:1`).
    #[serde(default)]
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// RFC 3339, local time.
    #[serde(default)]
    pub time: String,
}

#[derive(Debug, Default)]
pub struct Manifest {
    pub records: Vec<Record>,
    /// Lines that did not parse (a write cut short by a kill): ignored.
    pub torn: usize,
}

pub fn path(out_dir: &Path) -> PathBuf {
    out_dir.join(FILE)
}

impl Manifest {
    pub fn read(out_dir: &Path) -> io::Result<Self> {
        let text = match std::fs::read(path(out_dir)) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        let mut manifest = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Record>(line) {
                Ok(r) => manifest.records.push(r),
                Err(_) => manifest.torn += 1,
            }
        }
        Ok(manifest)
    }

    /// The latest record of each path.
    pub fn latest(&self) -> HashMap<&str, &Record> {
        let mut by_path = HashMap::new();
        for r in &self.records {
            by_path.insert(r.path.as_str(), r);
        }
        by_path
    }
}

/// Whether the image at `rel` (made from `recipe_hash`) is finished: its latest record is a
/// success for that recipe and the file is still there.
pub fn is_done(latest: &HashMap<&str, &Record>, out_dir: &Path, rel: &str, hash: &str) -> bool {
    latest
        .get(rel)
        .is_some_and(|r| r.status == Status::Done && r.recipe_hash == hash)
        && out_dir.join(rel).is_file()
}

/// Appends one record as one line, under the lock; a torn last line is first ended.
pub fn append(out_dir: &Path, record: &Record) -> io::Result<()> {
    let path = path(out_dir);
    let _lock = lock(&path)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    let mut line = serde_json::to_string(record).map_err(io::Error::other)?;
    line.push('\n');
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    // One write of the whole line: O_APPEND puts it at the end even if another host appended.
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// This machine's name, for records (several hosts may share an output folder).
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, hash: &str, status: Status) -> Record {
        Record {
            id: hash.into(),
            job: "1".into(),
            recipe_hash: hash.into(),
            path: path.into(),
            seed: 1,
            status,
            message: None,
            model: "m".into(),
            width: 8,
            height: 8,
            steps: 1,
            render_s: 0.5,
            load_s: 0.0,
            bytes: 10,
            device: "cpu".into(),
            shard: None,
            host: host_name(),
            pid: std::process::id(),
            time: String::new(),
        }
    }

    #[test]
    fn torn_lines_are_ignored_and_the_next_append_starts_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("b.png"), b"x").unwrap();
        append(dir.path(), &record("a.png", "h1", Status::Done)).unwrap();
        // A kill in the middle of a write.
        let full = serde_json::to_string(&record("b.png", "h2", Status::Done)).unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .unwrap();
        f.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
        drop(f);
        let m = Manifest::read(dir.path()).unwrap();
        assert_eq!((m.records.len(), m.torn), (1, 1));
        let latest = m.latest();
        assert!(is_done(&latest, dir.path(), "a.png", "h1"));
        assert!(!is_done(&latest, dir.path(), "b.png", "h2"));
        append(dir.path(), &record("b.png", "h2", Status::Done)).unwrap();
        let m = Manifest::read(dir.path()).unwrap();
        assert_eq!((m.records.len(), m.torn), (2, 1));
        assert!(is_done(&m.latest(), dir.path(), "b.png", "h2"));
    }

    #[test]
    fn done_needs_the_same_recipe_the_latest_success_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        append(dir.path(), &record("a.png", "h1", Status::Done)).unwrap();
        let m = Manifest::read(dir.path()).unwrap();
        assert!(!is_done(&m.latest(), dir.path(), "a.png", "other"));
        assert!(!is_done(&m.latest(), dir.path(), "missing.png", "h1"));
        append(dir.path(), &record("a.png", "h1", Status::Failed)).unwrap();
        let m = Manifest::read(dir.path()).unwrap();
        assert!(!is_done(&m.latest(), dir.path(), "a.png", "h1"));
        append(dir.path(), &record("a.png", "h1", Status::Done)).unwrap();
        std::fs::remove_file(dir.path().join("a.png")).unwrap();
        let m = Manifest::read(dir.path()).unwrap();
        assert!(!is_done(&m.latest(), dir.path(), "a.png", "h1"));
    }

    #[test]
    fn parallel_appenders_write_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let out = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        append(&out, &record(&format!("{t}-{i}.png"), "h", Status::Done)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let m = Manifest::read(dir.path()).unwrap();
        assert_eq!((m.records.len(), m.torn), (100, 0));
        assert_eq!(m.latest().len(), 100);
    }
}
