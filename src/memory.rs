//! Memory use for status displays: this process's resident memory (from /proc) and a CUDA
//! GPU's memory (from nvidia-smi, which ships with every NVIDIA driver: libtorch's bindings
//! offer no memory query).
use std::path::Path;
use std::process::{Command, Stdio};

/// This process's resident memory in MB (None where /proc is missing).
pub fn rss_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096 / (1024 * 1024))
}

/// The GPU's memory in use (by every process: inside containers nvidia-smi often cannot see
/// which process holds what) and its total, in MB, for the device named like "cuda:0".
/// None on CPU, or where nvidia-smi is missing or says nothing usable.
pub fn gpu_mb(device: &str) -> Option<(u64, u64)> {
    gpu_mb_with(Path::new("nvidia-smi"), device)
}

/// `gpu_mb` with another nvidia-smi (tests use a stand-in).
pub fn gpu_mb_with(nvidia_smi: &Path, device: &str) -> Option<(u64, u64)> {
    let index: u32 = device.strip_prefix("cuda:")?.parse().ok()?;
    let out = Command::new(nvidia_smi)
        .args([
            "--query-gpu=memory.used,memory.total",
            "--format=csv,noheader,nounits",
            &format!("--id={index}"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_used_total(&String::from_utf8_lossy(&out.stdout))
}

/// Reads nvidia-smi's "used, total" line (MiB, no units).
fn parse_used_total(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut fields = line.split(',').map(|f| f.trim().parse::<u64>());
    match (fields.next(), fields.next()) {
        (Some(Ok(used)), Some(Ok(total))) if used <= total => Some((used, total)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_used_and_total() {
        assert_eq!(parse_used_total("5120, 81559\n"), Some((5120, 81559)));
        assert_eq!(parse_used_total("\n 0, 143771 \n"), Some((0, 143771)));
        assert_eq!(parse_used_total("[N/A], [N/A]\n"), None);
        assert_eq!(parse_used_total(""), None);
    }

    #[test]
    fn asks_the_named_gpu_and_only_for_cuda() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nvidia-smi");
        // Answers only for --id=1, as the real one answers for the GPU asked about.
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = --id=1 ] && echo '2048, 24576' && exit 0; done\nexit 6\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(gpu_mb_with(&fake, "cuda:1"), Some((2048, 24576)));
        assert_eq!(gpu_mb_with(&fake, "cuda:0"), None);
        assert_eq!(gpu_mb_with(&fake, "cpu"), None);
        assert_eq!(gpu_mb_with(&dir.path().join("absent"), "cuda:1"), None);
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(rss_mb().is_some_and(|mb| mb > 0));
    }
}
