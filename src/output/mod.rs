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
    #[error("cannot write {path}: {source}")]
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
