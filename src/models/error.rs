//! What can go wrong with models, each message saying what the user can do next.
use std::path::PathBuf;

pub const ADD_HINT: &str = "or download the model elsewhere and register it with \
                            `easel models add PATH` (a diffusers folder or a .safetensors file)";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}", unknown_message(.name, .suggestions, .known))]
    Unknown {
        name: String,
        suggestions: Vec<String>,
        known: Vec<String>,
    },

    #[error("{name} is in the catalog but not downloaded yet: run `easel models pull {name}`{}, or pass --model with a folder or .safetensors file", size_note(*.size))]
    NotPulled { name: String, size: Option<u64> },

    #[error("{name} was only partly downloaded: run `easel models pull {name}` to finish it (it resumes where it stopped)")]
    Incomplete { name: String },

    #[error("{name} points at {}, which no longer exists: {what}", .path.display())]
    Missing {
        name: String,
        path: PathBuf,
        what: String,
    },

    #[error("cannot reach {endpoint} ({reason}): pulling a model needs the network. Try again when online, use a mirror with HF_ENDPOINT=https://..., {ADD_HINT}")]
    NoNetwork { endpoint: String, reason: String },

    #[error("the download of {file} was interrupted ({reason}): run the same command again to resume it where it stopped")]
    Interrupted { file: String, reason: String },

    #[error("{repo} refused access (HTTP {status}): it is gated or private. Accept its terms at {endpoint}/{repo} and set HF_TOKEN to an access token with read permission")]
    Gated {
        repo: String,
        endpoint: String,
        status: u16,
    },

    #[error("{endpoint}/{repo} has no {file} at revision {revision}: the catalog entry is out of date or the mirror is incomplete. Fix the entry in {catalog}, or use another HF_ENDPOINT")]
    HubMissing {
        endpoint: String,
        repo: String,
        revision: String,
        file: String,
        catalog: String,
    },

    #[error("{url} answered HTTP {status}: try again later, or use a mirror with HF_ENDPOINT")]
    Http { url: String, status: u16 },

    #[error("the hub's answer for {file} was not understood ({message}): is HF_ENDPOINT a Hugging Face hub or mirror?")]
    Protocol { file: String, message: String },

    #[error("pulling needs {} more in {}, which has {} free: free some space, or set HF_HOME to a folder on a disk with room", crate::models::human_bytes(*.needed), .dir.display(), crate::models::human_bytes(*.free))]
    DiskFull {
        needed: u64,
        free: u64,
        dir: PathBuf,
    },

    #[error("{file} does not match the hub's hash even after downloading it again (expected {expected}, got {actual}): the mirror may serve a damaged file; try again later or another HF_ENDPOINT")]
    HashMismatch {
        file: String,
        expected: String,
        actual: String,
    },

    #[error("{}: {message}", .path.display())]
    BadFile { path: PathBuf, message: String },

    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn size_note(size: Option<u64>) -> String {
    size.map(|s| format!(" (about {})", crate::models::human_bytes(s)))
        .unwrap_or_default()
}

fn unknown_message(name: &str, suggestions: &[String], known: &[String]) -> String {
    let mut out =
        format!("{name} does not exist as a file or folder, and no model is named {name:?}");
    if !suggestions.is_empty() {
        out.push_str(&format!(": did you mean {}?", suggestions.join(" or ")));
    }
    if known.is_empty() {
        out.push_str(" (no models are known yet)");
    } else {
        out.push_str(&format!("\n  known models: {}", known.join(", ")));
    }
    out.push_str(
        "\n  pass a diffusers folder or a .safetensors file, a name from `easel models list`, \
         or register a file with `easel models add PATH`",
    );
    out
}
