//! Writing images: atomic files, names that never collide, PNGs that carry their recipe.
pub mod a1111;
pub mod atomic;
pub mod naming;
pub mod png;
pub mod save;

pub use save::save_png;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}{}", write_hint(source))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a readable PNG: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("cannot encode the PNG: {0}")]
    Encode(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, OutputError>;

/// What to do about a failed write, for the errors people meet in practice (a full disk, a
/// folder they may not write in); empty when the system's own words are all there is.
pub fn write_hint(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            ": the disk is full: free some space or choose another --out folder"
        }
        ErrorKind::FileTooLarge => {
            ": the file is larger than this system allows (see `ulimit -f`): raise the limit \
             or choose another --out folder"
        }
        ErrorKind::PermissionDenied => {
            ": you may not write there: choose another --out folder, or change its permissions"
        }
        ErrorKind::ReadOnlyFilesystem => {
            ": the filesystem is read-only: choose another --out folder"
        }
        _ => "",
    }
}
