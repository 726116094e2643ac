//! Free space where downloads go, asked before a pull starts rather than discovered half way.
use std::path::Path;

/// Bytes available to this user on the file system holding `dir` (or its nearest existing
/// ancestor, since the cache folder may not exist yet). `EASEL_TEST_FREE_BYTES` stands in for
/// the answer in tests, which cannot fill a disk.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    if let Some(v) = std::env::var_os("EASEL_TEST_FREE_BYTES") {
        if let Some(n) = v.to_str().and_then(|s| s.parse().ok()) {
            return Ok(n);
        }
    }
    let probe = dir
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .unwrap_or(Path::new("."));
    statvfs_free(probe)
}

#[cfg(unix)]
fn statvfs_free(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `stat` points at writable memory of the right
    // type; statvfs fills it in full when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(not(unix))]
fn statvfs_free(_dir: &Path) -> std::io::Result<u64> {
    Ok(u64::MAX)
}
