use std::path::PathBuf;

/// Everything the engine can fail with. Messages say what went wrong and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid JSON config: {message}. Check the file, or download the model again"
    )]
    Config { path: PathBuf, message: String },
    #[error("{path} is not a readable safetensors file: {message}. The download may be incomplete: fetch it again")]
    Safetensors { path: PathBuf, message: String },
    #[error("the weights in {location} do not match the model's configuration:\n{report}")]
    WeightMismatch { location: String, report: String },
    #[error("{path}: {message}. Check the model's tokenizer/ folder, or download the model again")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("unknown device {0:?}: use auto, cpu, cuda or cuda:N")]
    UnknownDevice(String),
    #[error("unknown dtype {0:?}: use auto, fp32, fp16 or bf16")]
    UnknownDtype(String),
    #[error("device {0} is not available: libtorch sees {1} CUDA device(s). Use --device cpu, or check the driver")]
    DeviceUnavailable(String, usize),
    #[error("cancelled")]
    Cancelled,
    /// A render that the memory estimate says cannot fit; the message says what to try.
    #[error("{0}")]
    WontFit(String),
    /// The device (or the CPU's allocator) ran out of memory; built by `super::oom`, which
    /// recognises libtorch's errors, so every face shows the same advice.
    #[error("{}", super::oom::describe(.stage, .tried.as_deref(), .detail))]
    OutOfMemory {
        /// What the engine was doing: "denoising", "decoding", ...
        stage: String,
        /// The size of what was tried and its memory estimate, when known.
        tried: Option<String>,
        /// libtorch's own words (its first line).
        detail: String,
    },
    #[error("libtorch error: {0}")]
    Torch(tch::TchError),
}

// Written out rather than derived: libtorch reports running out of memory as a plain error,
// which must become `OutOfMemory` wherever it surfaces.
impl From<tch::TchError> for EngineError {
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        match super::oom::detail(&text) {
            Some(detail) => Self::OutOfMemory {
                stage: super::oom::current_stage().to_string(),
                tried: None,
                detail,
            },
            None => Self::Torch(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;
