//! DDIM (Song et al. 2020) with eta = 0, as diffusers' DDIMScheduler runs it in the
//! Stable Diffusion pipeline.
use super::betas::alphas_cumprod;
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::scalar::{sqrt, square};
use super::{check_steps, img2img, spacing, Scheduler};
use crate::engine::error::{EngineError, Result};
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
        if config.thresholding {
            return Err(EngineError::Invalid(
                "the scheduler config asks for dynamic thresholding (\"thresholding\": true), \
                 which easel's DDIM does not support: set it to false or pick another sampler"
                    .into(),
            ));
        }
        let alphas_cumprod = alphas_cumprod(config)?;
        let train = config.num_train_timesteps;
        let spacing = config.spacing_or(TimestepSpacing::Leading);
        let times = spacing::timesteps(spacing, train, steps, config.steps_offset, true);
        let steps_i64: Vec<i64> = times.iter().map(|&t| t as i64).collect();
        // diffusers indexes alphas_cumprod with these, Python-style (-1 is the last).
        if let Some(t) = steps_i64
            .iter()
            .find(|&&t| t >= train as i64 || t < -(train as i64))
        {
            return Err(EngineError::Invalid(format!(
                "timestep {t} is outside the {train} training timesteps: lower steps_offset \
                 ({}) in the scheduler config",
                config.steps_offset
            )));
        }
        Ok(Ddim {
            final_alpha_cumprod: if config.alpha_to_one_or(true) {
                1.0
            } else {
                alphas_cumprod[0]
            },
            alphas_cumprod,
            timesteps: steps_i64.iter().map(|&t| t as f64).collect(),
            steps: steps_i64,
            stride: (train / steps) as i64,
            prediction_type: config.prediction_type,
            clip_range: config
                .clip_sample_or(true)
                .then_some(config.clip_sample_range),
        })
    }

    fn alpha_at(&self, t: i64) -> f32 {
        let n = self.alphas_cumprod.len() as i64;
        self.alphas_cumprod[if t < 0 { n + t } else { t } as usize]
    }
}

impl Scheduler for Ddim {
    fn order(&self) -> usize {
        1
    }

    // State starts empty and `step` takes absolute entries, as diffusers' step_index does after
    // set_begin_index: a run that starts later needs nothing more.
    fn set_begin_index(&mut self, _begin: usize) {}

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

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(&self, sample: &Tensor, _step: usize) -> Tensor {
        sample.shallow_clone()
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
