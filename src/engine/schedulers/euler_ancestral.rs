//! Euler ancestral ("Euler a"), as diffusers' EulerAncestralDiscreteScheduler: an Euler step
//! down to sigma_down, then fresh noise up to the next sigma.
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::euler::{predict_original, scale_input, SigmaSchedule};
use super::scalar::{sqrt, square};
use super::{img2img, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::{Kind, Tensor};

pub struct EulerAncestralDiscrete {
    schedule: SigmaSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
}

impl EulerAncestralDiscrete {
    /// Reads the keys diffusers' EulerAncestralDiscreteScheduler takes; it has no Karras,
    /// interpolation, final-sigma or timestep-type options and ignores them, as diffusers does.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if config.prediction_type == PredictionType::Sample {
            return Err(EngineError::Invalid(
                "Euler a does not support prediction_type \"sample\": pick ddim or euler for \
                 this model"
                    .into(),
            ));
        }
        let schedule = SigmaSchedule::new(config, steps)?;
        let spacing = config.spacing_or(TimestepSpacing::Linspace);
        Ok(EulerAncestralDiscrete {
            init_noise_sigma: schedule.init_noise_sigma(spacing),
            timesteps: schedule.timesteps.iter().map(|&t| f64::from(t)).collect(),
            sigmas: schedule.sigmas.iter().map(|&s| f64::from(s)).collect(),
            schedule,
            prediction_type: config.prediction_type,
        })
    }

    /// The sigmas of every step and the final one, as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl Scheduler for EulerAncestralDiscrete {
    fn sigmas(&self) -> Option<Vec<f64>> {
        Some(self.sigmas.clone())
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_sigma(self.schedule.sigmas.get(entry).copied(), original, noise)
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Tensor {
        scale_input(sample, self.schedule.sigmas[step])
    }

    /// Draws `noise(model_output.size())` once, after the deterministic part, as diffusers does.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let sigma = self.schedule.sigmas[step];
        let sample = sample.to_kind(Kind::Float);
        let pred_original = predict_original(self.prediction_type, model_output, &sample, sigma);
        let sigma_to = self.schedule.sigmas[step + 1];
        let (from2, to2) = (square(sigma), square(sigma_to));
        let sigma_up = sqrt(to2 * (from2 - to2) / from2);
        let sigma_down = sqrt(to2 - square(sigma_up));
        let derivative = (&sample - pred_original) / f64::from(sigma);
        let prev = &sample + derivative * f64::from(sigma_down - sigma);
        let noise = noise(&model_output.size());
        let prev = prev + noise * f64::from(sigma_up);
        prev.to_kind(model_output.kind())
    }
}
