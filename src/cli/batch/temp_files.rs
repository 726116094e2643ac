//! Temporary files left by a killed easel (`.easel-PID-...tmp`, never a `.png`): removed when a
//! batch starts, but only when old and not its writer's any more, since other shards (on this
//! host or another one sharing the folder) may be writing theirs right now.
use crate::output::atomic::TEMP_PREFIX;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// A PNG's temporary file lives for milliseconds; one this old is abandoned.
const STALE_AFTER: Duration = Duration::from_secs(60);
/// How deep the output folder's templates may nest.
const MAX_DEPTH: usize = 8;

/// Removes abandoned temporary files under `dir`; returns how many.
pub fn remove_stale(dir: &Path) -> usize {
    remove_in(dir, 0, SystemTime::now())
}

fn remove_in(dir: &Path, depth: usize, now: SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let path = entry.path();
        if kind.is_dir() && depth < MAX_DEPTH {
            removed += remove_in(&path, depth + 1, now);
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !kind.is_file() || !is_stale(&name, &path, now) {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn is_stale(name: &str, path: &Path, now: SystemTime) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    if !name.ends_with(".tmp") {
        return false;
    }
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age > STALE_AFTER);
    let writer_alive = rest
        .split('-')
        .next()
        .and_then(|pid| pid.parse::<i32>().ok())
        .is_some_and(alive);
    old && !writer_alive
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_temporary_files_of_gone_writers_go() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        let gone = sub.join(".easel-999999999-1-2.tmp");
        let mine = sub.join(format!(".easel-{}-1-2.tmp", std::process::id()));
        let png = sub.join("x.png");
        for p in [&gone, &mine, &png] {
            std::fs::write(p, b"x").unwrap();
        }
        // Fresh files stay whoever wrote them.
        assert_eq!(remove_in(dir.path(), 0, SystemTime::now()), 0);
        assert_eq!(remove_in(dir.path(), 0, later), 1);
        assert!(!gone.exists() && mine.exists() && png.exists());
    }
}
