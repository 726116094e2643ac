//! Stable Diffusion on libtorch. Knows nothing of terminals, files other than weights, or presets.
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod family;
pub mod image_input;
pub mod img2img;
pub mod loader;
pub mod lora;
pub mod mask;
pub mod memory_estimate;
pub mod models;
pub mod nn;
pub mod offload;
pub mod oom;
pub mod pipeline;
pub mod pipeline_sdxl;
pub mod preview;
pub mod prompt;
pub mod random;
pub mod schedulers;
pub mod tokenizer;
pub mod weights;

pub use error::{EngineError, Result};
