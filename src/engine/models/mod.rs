//! The networks of a Stable Diffusion pipeline, named as diffusers names their weights.
pub mod resnet;
