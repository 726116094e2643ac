//! DDPM (Ho et al. 2020) ancestral sampling, as diffusers' DDPMScheduler runs it with fewer
//! inference steps than training steps: each step jumps between the spaced timesteps and adds
//! fresh noise scaled by the posterior variance.
use super::betas::{self, alphas_cumprod};
use super::config::{PredictionType, SchedulerConfig};
use super::scalar::{exp, ln, sqrt};
use super::{check_steps, img2img, spacing, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// The posterior variance diffusers adds (its `variance_type`); the learned kinds need a model
/// that predicts a variance, which Stable Diffusion UNets do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variance {
    Small,
    SmallLog,
    Large,
}

impl Variance {
    fn from_config(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("fixed_small") => Ok(Self::Small),
            Some("fixed_small_log") => Ok(Self::SmallLog),
            Some("fixed_large") => Ok(Self::Large),
            Some(other) => Err(EngineError::Invalid(format!(
                "variance_type {other:?} is not supported by easel's DDPM (learned variances need \
                 a model that predicts them; diffusers' fixed_large_log takes the root of a \
                 logarithm): use fixed_small, fixed_small_log or fixed_large"
            ))),
        }
    }
}

pub struct Ddpm {
    alphas_cumprod: Vec<f32>,
    /// Training timesteps as diffusers holds them (int64); may include -1 with trailing spacing.
    steps: Vec<i64>,
    timesteps: Vec<f64>,
    prediction_type: PredictionType,
    clip_range: Option<f64>,
    variance: Variance,
}

impl Ddpm {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        config.refuse_thresholding("DDPM")?;
        let variance = Variance::from_config(config.variance_type.as_deref())?;
        let alphas_cumprod = alphas_cumprod(config)?;
        let steps_i64 = spacing::integer_timesteps(config, steps)?;
        Ok(Ddpm {
            alphas_cumprod,
            timesteps: steps_i64.iter().map(|&t| t as f64).collect(),
            steps: steps_i64,
            prediction_type: config.prediction_type,
            clip_range: config
                .clip_sample_or(true)
                .then_some(config.clip_sample_range),
            variance,
        })
    }

    /// Timesteps were checked against the table when the scheduler was built.
    fn alpha_at(&self, t: i64) -> f32 {
        betas::at(&self.alphas_cumprod, t).unwrap_or(f32::NAN)
    }

    /// ᾱ at the step after `step`, or 1 past the last (diffusers' `self.one`).
    fn alpha_prev(&self, step: usize) -> f32 {
        match self.steps.get(step + 1) {
            Some(&prev) if prev >= 0 => self.alpha_at(prev),
            _ => 1.0,
        }
    }
}

impl Scheduler for Ddpm {
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

    /// Draws `noise(model_output.size())` once, at every step but one at timestep 0.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let t = self.steps[step];
        // Scalars in float32, as diffusers' 0-dim float32 tensors are.
        let alpha = self.alpha_at(t);
        let alpha_prev = self.alpha_prev(step);
        let beta = 1.0 - alpha;
        let beta_prev = 1.0 - alpha_prev;
        let current_alpha = alpha / alpha_prev;
        let current_beta = 1.0 - current_alpha;
        let (sqrt_alpha, sqrt_beta) = (f64::from(sqrt(alpha)), f64::from(sqrt(beta)));
        let pred_original = match self.prediction_type {
            PredictionType::Epsilon => (sample - model_output * sqrt_beta) / sqrt_alpha,
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => sample * sqrt_alpha - model_output * sqrt_beta,
        };
        let pred_original = match self.clip_range {
            Some(r) => pred_original.clamp(-r, r),
            None => pred_original,
        };
        let original_coeff = (sqrt(alpha_prev) * current_beta) / beta;
        let sample_coeff = sqrt(current_alpha) * beta_prev / beta;
        let prev = pred_original * f64::from(original_coeff) + sample * f64::from(sample_coeff);
        if t <= 0 {
            return prev;
        }
        let drawn = noise(&model_output.size());
        let variance = ((beta_prev / beta) * current_beta).max(1e-20);
        let scale = match self.variance {
            Variance::Small => sqrt(variance),
            Variance::SmallLog => exp(0.5 * ln(variance)),
            Variance::Large => sqrt(current_beta),
        };
        prev + drawn * f64::from(scale)
    }
}
