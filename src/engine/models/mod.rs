//! The networks of a Stable Diffusion pipeline, named as diffusers names their weights.
pub mod clip;
pub mod clip_config;
pub mod resnet;
pub mod vae;
pub mod vae_config;
