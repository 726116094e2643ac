//! Samplers behind one trait, configured from a model's `scheduler/scheduler_config.json`.
use tch::Tensor;

/// One denoising schedule, set up for a number of steps.
pub trait Scheduler: Send {
    /// The model timesteps, one per step, in the order the pipeline uses them.
    fn timesteps(&self) -> &[f64];

    /// How much the initial Gaussian noise is scaled (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// The input the model sees at step `step` (diffusers' `scale_model_input`).
    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Tensor;

    /// One step from `sample` given the model's output at step `step`. `noise(shape)` draws
    /// standard normal noise for ancestral samplers: the pipeline decides the generator, dtype
    /// and device, so draws happen in the same order and shapes as in diffusers.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor;
}
