//! easel: a terminal image-generation studio. The library holds everything; the binary is thin.
#![warn(clippy::all)]

pub mod engine;
