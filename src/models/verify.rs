//! The hashes the hub publishes for its files, computed over a local file: an LFS file's etag
//! is the sha256 of its bytes; any other file's is git's blob id (sha1 of "blob LEN\0" + bytes).
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// How an etag is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Sha256,
    GitBlob,
}

/// The kind of hash an etag is, from its length (64 or 40 hex digits); None for other etags,
/// which cannot be checked.
pub fn kind_of(etag: &str) -> Option<HashKind> {
    if !etag.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match etag.len() {
        64 => Some(HashKind::Sha256),
        40 => Some(HashKind::GitBlob),
        _ => None,
    }
}

/// The file's hash in the form `kind` names, as lowercase hex.
pub fn hash_file(path: &Path, kind: HashKind) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; 1 << 20];
    match kind {
        HashKind::Sha256 => {
            let mut h = Sha256::new();
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(hex(&h.finalize()))
        }
        HashKind::GitBlob => {
            let mut h = Sha1::new();
            h.update(format!("blob {len}\0").as_bytes());
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(hex(&h.finalize()))
        }
    }
}

/// Whether `path` has the hash `etag` names: Some(actual) on a mismatch, None when it
/// matches or the etag is not a hash easel knows.
pub fn mismatch(path: &Path, etag: &str) -> std::io::Result<Option<String>> {
    let Some(kind) = kind_of(etag) else {
        return Ok(None);
    };
    let actual = hash_file(path, kind)?;
    Ok((!actual.eq_ignore_ascii_case(etag)).then_some(actual))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
