//! The Hugging Face hub as `huggingface_hub` users configure it: HF_ENDPOINT (mirrors),
//! HF_HOME / HF_HUB_CACHE (where the shared cache lives), HF_TOKEN (gated models), and what its
//! failures mean for the user.
use super::error::ModelError;
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use hf_hub::Cache;
use std::path::PathBuf;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    pub endpoint: String,
    /// The hub cache folder (`.../huggingface/hub`), shared with Python's huggingface_hub.
    pub cache: PathBuf,
    pub token: Option<String>,
    /// HF_HUB_OFFLINE: the user asked for no network use.
    pub offline: bool,
}

impl HubConfig {
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .or_else(|| var("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
            .unwrap_or_else(|| {
                let home = directories::BaseDirs::new()
                    .map(|d| d.home_dir().to_path_buf())
                    .unwrap_or_else(|| PathBuf::from("."));
                home.join(".cache").join("huggingface").join("hub")
            });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            endpoint,
            cache,
            token: var("HF_TOKEN"),
            offline,
        }
    }

    /// A client for this configuration. Interrupted transfers are retried in place a few
    /// times (resuming with a Range request) before the pull gives up.
    pub fn api(&self) -> Result<Api, ModelError> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache.clone()))
            .with_endpoint(self.endpoint.clone())
            .with_progress(false)
            .with_retries(3)
            .with_user_agent("easel", env!("CARGO_PKG_VERSION"));
        if self.token.is_some() {
            builder = builder.with_token(self.token.clone());
        }
        builder
            .build()
            .map_err(|e| ModelError::Invalid(format!("cannot set up the hub client: {e}")))
    }
}

/// The step a hub error happened in: it decides what the message tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Asking for a file's size and hash: a connection failure means no network.
    Metadata,
    /// Transferring a file: a connection failure is an interruption to resume.
    Download,
}

/// What a failed hub request means, in the user's terms. None for a 404, which the caller
/// turns into its own message (it knows the file and revision).
pub fn explain(
    err: ApiError,
    stage: Stage,
    config: &HubConfig,
    repo: &str,
    file: &str,
) -> Result<ModelError, u16> {
    let url = format!("{}/{repo}", config.endpoint);
    let connection = |reason: String| match stage {
        Stage::Metadata => ModelError::NoNetwork {
            endpoint: config.endpoint.clone(),
            reason,
        },
        Stage::Download => ModelError::Interrupted {
            file: file.to_string(),
            reason,
        },
    };
    Ok(match err {
        ApiError::RequestError(e) => match *e {
            ureq::Error::StatusCode(404) => return Err(404),
            ureq::Error::StatusCode(status @ (401 | 403)) => ModelError::Gated {
                repo: repo.to_string(),
                endpoint: config.endpoint.clone(),
                status,
            },
            ureq::Error::StatusCode(status) => ModelError::Http { url, status },
            ureq::Error::Io(io) => connection(io.to_string()),
            ureq::Error::HostNotFound => connection("host not found".into()),
            ureq::Error::ConnectionFailed => connection("connection failed".into()),
            ureq::Error::Timeout(t) => connection(format!("timed out: {t}")),
            ureq::Error::BadUri(u) => ModelError::Invalid(format!(
                "{u} is not a usable address: check HF_ENDPOINT (for example https://huggingface.co)"
            )),
            other => connection(other.to_string()),
        },
        ApiError::TooManyRetries(inner) => match *inner {
            ApiError::RequestError(_) | ApiError::IoError(_) => {
                connection(format!("gave up after several tries: {inner}"))
            }
            other => ModelError::Protocol {
                file: file.to_string(),
                message: other.to_string(),
            },
        },
        ApiError::IoError(io) => match stage {
            Stage::Download => ModelError::Interrupted {
                file: file.to_string(),
                reason: io.to_string(),
            },
            Stage::Metadata => ModelError::io("fetch", file, io),
        },
        ApiError::LockAcquisition(path) => ModelError::Invalid(format!(
            "another download holds {}: wait for it to finish (or delete the lock file if none runs)",
            path.display()
        )),
        other => ModelError::Protocol {
            file: file.to_string(),
            message: other.to_string(),
        },
    })
}
