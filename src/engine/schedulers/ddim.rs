//! DDIM (Song et al. 2020) with eta = 0, as diffusers' DDIMScheduler runs it in the
//! Stable Diffusion pipeline.
use super::betas::{self, alphas_cumprod};
use super::config::{PredictionType, SchedulerConfig};
use super::scalar::{sqrt, square};
use super::{check_steps, img2img, spacing, Scheduler};
use crate::engine::error::Result;
use tch::Tensor;

pub struct Ddim {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// Training timesteps as diffusers holds them (int64); may include -1 with trailing spacing.
    steps: Vec<i64>,
    timesteps: Vec<f64>,
    /// What diffusers subtracts from a timestep to get the previous one, whatever the spacing.
    stride: i64,
    prediction_type: PredictionType,
    clip_range: Option<f64>,
}

impl Ddim {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        config.refuse_thresholding("DDIM")?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let steps_i64 = spacing::integer_timesteps(config, steps)?;
        Ok(Ddim {
            final_alpha_cumprod: betas::final_alpha_cumprod(config, &alphas_cumprod, true),
            alphas_cumprod,
            timesteps: steps_i64.iter().map(|&t| t as f64).collect(),
            steps: steps_i64,
            stride: (config.num_train_timesteps / steps) as i64,
            prediction_type: config.prediction_type,
            clip_range: config
                .clip_sample_or(true)
                .then_some(config.clip_sample_range),
        })
    }

    /// Timesteps were checked against the table when the scheduler was built.
    fn alpha_at(&self, t: i64) -> f32 {
        betas::at(&self.alphas_cumprod, t).unwrap_or(f32::NAN)
    }
}

impl Scheduler for Ddim {
    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_alpha(
            &self.alphas_cumprod,
            self.steps.get(entry).copied(),
            original,
            noise,
        )
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let t = self.steps[step];
        let prev_t = t - self.stride;
        // Scalars in float32, as diffusers' 0-dim float32 tensors are.
        let alpha = self.alpha_at(t);
        let alpha_prev = if prev_t >= 0 {
            self.alpha_at(prev_t)
        } else {
            self.final_alpha_cumprod
        };
        let beta = 1.0 - alpha;
        let (sqrt_alpha, sqrt_beta) = (f64::from(sqrt(alpha)), f64::from(sqrt(beta)));
        let (pred_original, pred_epsilon) = match self.prediction_type {
            PredictionType::Epsilon => (
                (sample - model_output * sqrt_beta) / sqrt_alpha,
                model_output.shallow_clone(),
            ),
            PredictionType::Sample => (
                model_output.shallow_clone(),
                (sample - model_output * sqrt_alpha) / sqrt_beta,
            ),
            PredictionType::VPrediction => (
                sample * sqrt_alpha - model_output * sqrt_beta,
                model_output * sqrt_alpha + sample * sqrt_beta,
            ),
        };
        let pred_original = match self.clip_range {
            Some(r) => pred_original.clamp(-r, r),
            None => pred_original,
        };
        // eta = 0, but diffusers still forms eta * sqrt(variance), which carries a NaN through.
        let beta_prev = 1.0 - alpha_prev;
        let variance = (beta_prev / beta) * (1.0 - alpha / alpha_prev);
        let std_dev = 0.0 * sqrt(variance);
        let direction = pred_epsilon * f64::from(sqrt(1.0 - alpha_prev - square(std_dev)));
        pred_original * f64::from(sqrt(alpha_prev)) + direction
    }
}
