use std::path::PathBuf;

/// Everything presets can fail with. Messages say what went wrong and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("{0:?} is not a usable preset name: {1}")]
    BadName(String, String),
    /// A file that does not parse or holds a bad value, with where the problem is.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("no preset named {name:?}{hint}: `easel preset list` shows the presets there are")]
    NotFound { name: String, hint: String },
    #[error("you already have a preset named {0:?}: pass --force to replace it (the old one goes to easel's trash), or choose another name")]
    Exists(String),
    #[error("{name:?} is a built-in preset and cannot be {action}{advice}")]
    BuiltIn {
        name: String,
        action: &'static str,
        advice: String,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl PresetError {
    pub fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, PresetError>;
