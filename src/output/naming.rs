//! Where images go. A `.png` path names the file; anything else names a folder, in which names
//! are `{YYYYmmdd-HHMMSS}-{seed}-{index}.png`: unique, sortable by time, never overwriting.
use super::{OutputError, Result};
use std::path::{Path, PathBuf};

/// Where images go when `--out` is not given: `outputs/` in the current folder.
pub const DEFAULT_DIR: &str = "outputs";

/// Formats that a user might expect but easel does not write.
const OTHER_IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "avif"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// An explicit file, replaced if it exists; batches get `-1`, `-2`, ... before `.png`.
    File(PathBuf),
    /// A folder of uniquely named files.
    Dir(PathBuf),
}

impl OutputTarget {
    pub fn from_arg(out: Option<&Path>) -> Result<Self> {
        let Some(out) = out else {
            return Ok(Self::Dir(PathBuf::from(DEFAULT_DIR)));
        };
        if out.as_os_str().is_empty() {
            return Err(OutputError::Invalid(
                "--out is empty: give a .png file or a folder".into(),
            ));
        }
        let trailing_slash = out.as_os_str().to_string_lossy().ends_with(['/', '\\']);
        if out.is_dir() || trailing_slash {
            return Ok(Self::Dir(out.to_path_buf()));
        }
        let ext = out
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(Self::File(out.to_path_buf())),
            Some(e) if OTHER_IMAGE_EXTENSIONS.contains(&e) => Err(OutputError::Invalid(format!(
                "easel writes PNG files: name the output {} or give a folder",
                out.with_extension("png").display()
            ))),
            _ => Ok(Self::Dir(out.to_path_buf())),
        }
    }

    /// Refuses a folder this process cannot write in, before any time is spent rendering:
    /// a temporary file is created and removed in the folder, or in the nearest existing
    /// folder above it when it does not exist yet (nothing is created).
    pub fn check_writable(&self) -> Result<()> {
        let dir = self.dir();
        let existing = dir
            .ancestors()
            .find(|a| a.as_os_str().is_empty() || a.is_dir())
            .filter(|a| !a.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        super::atomic::TempFile::create_in(existing)
            .map(drop)
            .map_err(|source| OutputError::Write {
                path: dir.to_path_buf(),
                source,
            })
    }

    /// The folder that will hold the files; it may not exist yet.
    pub fn dir(&self) -> &Path {
        match self {
            Self::File(p) => super::atomic::parent_dir(p),
            Self::Dir(d) => d,
        }
    }
}

/// The path for image `index` (0-based) of a batch written to an explicit file.
pub fn file_for_index(base: &Path, index: u32, batch_size: u32) -> PathBuf {
    if batch_size <= 1 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = base
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    base.with_file_name(format!("{stem}-{}{ext}", index + 1))
}

/// The `attempt`-th candidate name in a folder: attempt 0 is the plain name, later ones add
/// `_2`, `_3`, ... so that a second run in the same second keeps both images.
pub fn dir_candidate(dir: &Path, stamp: &str, seed: u64, index: u32, attempt: u32) -> PathBuf {
    let name = if attempt == 0 {
        format!("{stamp}-{seed}-{index}.png")
    } else {
        format!("{stamp}-{seed}-{index}_{}.png", attempt + 1)
    };
    dir.join(name)
}

/// Local time as names use it: `YYYYmmdd-HHMMSS`, sorting as it reads.
pub fn stamp(now: chrono::DateTime<chrono::Local>) -> String {
    now.format("%Y%m%d-%H%M%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn targets_from_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            OutputTarget::from_arg(None).unwrap(),
            OutputTarget::Dir(p(DEFAULT_DIR))
        );
        assert_eq!(
            OutputTarget::from_arg(Some(&p("fox.png"))).unwrap(),
            OutputTarget::File(p("fox.png"))
        );
        assert_eq!(
            OutputTarget::from_arg(Some(&p("a/FOX.PNG"))).unwrap(),
            OutputTarget::File(p("a/FOX.PNG"))
        );
        assert_eq!(
            OutputTarget::from_arg(Some(&p("renders"))).unwrap(),
            OutputTarget::Dir(p("renders"))
        );
        assert_eq!(
            OutputTarget::from_arg(Some(&p("shots.png/"))).unwrap(),
            OutputTarget::Dir(p("shots.png/"))
        );
        let existing = dir.path().join("x.png");
        std::fs::create_dir(&existing).unwrap();
        assert_eq!(
            OutputTarget::from_arg(Some(&existing)).unwrap(),
            OutputTarget::Dir(existing)
        );
        let err = OutputTarget::from_arg(Some(&p("fox.jpg")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fox.png"), "{err}");
        assert_eq!(OutputTarget::File(p("fox.png")).dir(), Path::new("."));
        assert_eq!(OutputTarget::File(p("a/fox.png")).dir(), Path::new("a"));
    }

    #[test]
    fn batch_file_names_get_suffixes() {
        let base = Path::new("out/fox.png");
        assert_eq!(file_for_index(base, 0, 1), base);
        assert_eq!(file_for_index(base, 0, 3), Path::new("out/fox-1.png"));
        assert_eq!(file_for_index(base, 2, 3), Path::new("out/fox-3.png"));
    }

    #[test]
    fn folder_names_are_unique_and_sort_by_time() {
        let t = chrono::Local.with_ymd_and_hms(2026, 3, 9, 7, 5, 2).unwrap();
        let s = stamp(t);
        assert_eq!(s, "20260309-070502");
        let later = stamp(
            chrono::Local
                .with_ymd_and_hms(2026, 11, 28, 23, 0, 0)
                .unwrap(),
        );
        assert!(later > s);
        let d = Path::new("o");
        assert_eq!(
            dir_candidate(d, &s, 7, 0, 0),
            Path::new("o/20260309-070502-7-0.png")
        );
        assert_eq!(
            dir_candidate(d, &s, 7, 1, 1),
            Path::new("o/20260309-070502-7-1_2.png")
        );
        let all: std::collections::HashSet<PathBuf> = (0..4)
            .flat_map(|i| (0..50).map(move |a| dir_candidate(d, "x", 7, i, a)))
            .collect();
        assert_eq!(all.len(), 200);
    }
}
