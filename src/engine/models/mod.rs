//! The networks of a Stable Diffusion pipeline, named as diffusers names their weights.
pub mod attention;
pub mod autoencoder_tiny;
pub mod clip;
pub mod clip_config;
pub mod embeddings;
pub mod resnet;
pub mod unet;
pub mod unet_blocks;
pub mod unet_config;
pub mod vae;
pub mod vae_config;
pub mod vae_tiling;
