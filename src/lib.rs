//! easel: a terminal image-generation studio. The library holds everything; the binary is thin.
#![warn(clippy::all)]

pub mod cli;
pub mod engine;
pub mod fault;
pub mod history;
pub mod init_files;
pub mod memory;
pub mod metadata;
pub mod models;
pub mod output;
pub mod paths;
pub mod presets;
pub mod recipe;
pub mod remote;
pub mod render;
pub mod store;
pub mod tui;
pub mod variations;
pub mod worker;
