//! Trajectory Consistency Distillation (Zheng et al. 2024) sampling, as diffusers'
//! TCDScheduler: each step predicts the clean sample, moves it to an intermediate timestep s
//! set by gamma, then (gamma > 0) re-noises it to the next timestep with fresh noise.
use super::betas::{self, alphas_cumprod};
use super::config::{PredictionType, SchedulerConfig};
use super::lcm::{consistency_timesteps, predict_original};
use super::scalar::{sqrt, tensor_sqrt};
use super::{img2img, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// TCD's default gamma (diffusers' `eta` of `TCDScheduler.step`), the stochasticity.
pub const DEFAULT_GAMMA: f64 = 0.3;

pub struct Tcd {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    steps: Vec<i64>,
    timesteps: Vec<f64>,
    prediction_type: PredictionType,
    gamma: f64,
}

impl Tcd {
    /// TCD with gamma 0.3.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        Self::with_gamma(config, steps, DEFAULT_GAMMA)
    }

    /// Reads diffusers' TCD keys (`original_inference_steps`, `set_alpha_to_one`); `gamma` in
    /// [0, 1]: 0 is deterministic, larger values add more fresh noise each step.
    pub fn with_gamma(config: &SchedulerConfig, steps: usize, gamma: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&gamma) {
            return Err(EngineError::Invalid(format!(
                "TCD gamma {gamma} is out of range: choose a value from 0 to 1 (0.3 is usual)"
            )));
        }
        let steps_i64 = consistency_timesteps(config, steps, "TCD")?;
        let alphas_cumprod = alphas_cumprod(config)?;
        Ok(Tcd {
            final_alpha_cumprod: betas::final_alpha_cumprod(config, &alphas_cumprod, true),
            alphas_cumprod,
            timesteps: steps_i64.iter().map(|&t| t as f64).collect(),
            steps: steps_i64,
            prediction_type: config.prediction_type,
            gamma,
        })
    }

    fn alpha_at(&self, t: i64) -> f32 {
        if t >= 0 {
            self.alphas_cumprod[t as usize]
        } else {
            self.final_alpha_cumprod
        }
    }
}

impl Scheduler for Tcd {
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

    /// With gamma > 0, draws `noise(model_output.size())` once on every step but the last.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let t = self.steps[step];
        let last = step + 1 == self.steps.len();
        let prev_t = self.steps.get(step + 1).copied().unwrap_or(0);
        // floor((1 - gamma) * prev_t) in float32, as diffusers' tensor arithmetic.
        let s = ((1.0 - self.gamma) as f32 * prev_t as f32).floor() as i64;
        let alpha_t = self.alpha_at(t);
        let alpha_prev = self.alpha_at(prev_t);
        let alpha_s = self.alpha_at(s);
        let beta_t = 1.0 - alpha_t;
        // diffusers writes the sample and v-prediction forms with `** 0.5`, epsilon's with `.sqrt()`.
        let (original, epsilon) = match self.prediction_type {
            PredictionType::Epsilon => (
                predict_original(self.prediction_type, model_output, sample, alpha_t),
                model_output.shallow_clone(),
            ),
            PredictionType::Sample => {
                let epsilon =
                    (sample - model_output * f64::from(sqrt(alpha_t))) / f64::from(sqrt(beta_t));
                (model_output.shallow_clone(), epsilon)
            }
            PredictionType::VPrediction => {
                let (a, b) = (f64::from(sqrt(alpha_t)), f64::from(sqrt(beta_t)));
                (sample * a - model_output * b, model_output * a + sample * b)
            }
        };
        let noised = original * f64::from(tensor_sqrt(alpha_s))
            + epsilon * f64::from(tensor_sqrt(1.0 - alpha_s));
        if self.gamma <= 0.0 || last {
            return noised;
        }
        let fresh = noise(&model_output.size());
        let ratio = alpha_prev / alpha_s;
        noised * f64::from(tensor_sqrt(ratio)) + fresh * f64::from(tensor_sqrt(1.0 - ratio))
    }
}
