//! Latent Consistency Models (Luo et al. 2023) multistep sampling, as diffusers' LCMScheduler:
//! each step maps the sample to a clean estimate with the consistency boundary condition, then
//! re-noises it to the next timestep with fresh noise (all steps but the last).
use super::betas::alphas_cumprod;
use super::config::{PredictionType, SchedulerConfig};
use super::scalar::{sqrt, tensor_sqrt};
use super::{check_steps, img2img, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

pub struct Lcm {
    alphas_cumprod: Vec<f32>,
    steps: Vec<i64>,
    timesteps: Vec<f64>,
    prediction_type: PredictionType,
    clip_range: Option<f64>,
    timestep_scaling: f64,
}

/// The timesteps LCM and TCD pick from the distillation schedule: every
/// `num_train_timesteps / original_inference_steps`-th training step, then `steps` of those,
/// evenly by index and largest first.
pub(crate) fn consistency_timesteps(
    config: &SchedulerConfig,
    steps: usize,
    sampler: &str,
) -> Result<Vec<i64>> {
    config.validate()?;
    check_steps(config, steps)?;
    config.refuse_thresholding(sampler)?;
    let original = config.original_inference_steps;
    let train = config.num_train_timesteps;
    if original == 0 || original > train {
        return Err(EngineError::Invalid(format!(
            "original_inference_steps is {original} in the scheduler config: it must lie \
             between 1 and num_train_timesteps ({train})"
        )));
    }
    if steps > original {
        return Err(EngineError::Invalid(format!(
            "{steps} steps: {sampler} takes at most {original} (the model's \
             original_inference_steps); LCM-style models need only 2 to 8"
        )));
    }
    let k = (train / original) as i64;
    let origin: Vec<i64> = (1..=original as i64).rev().map(|i| i * k - 1).collect();
    // np.floor(np.linspace(0, len, steps, endpoint=False)).
    let stride = origin.len() as f64 / steps as f64;
    Ok((0..steps)
        .map(|i| origin[(i as f64 * stride).floor() as usize])
        .collect())
}

impl Lcm {
    /// Reads diffusers' LCM keys: `original_inference_steps`, `timestep_scaling`, `clip_sample`
    /// with `clip_sample_range`; `timestep_spacing` plays no part, as in diffusers.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let steps_i64 = consistency_timesteps(config, steps, "LCM")?;
        Ok(Lcm {
            alphas_cumprod: alphas_cumprod(config)?,
            timesteps: steps_i64.iter().map(|&t| t as f64).collect(),
            steps: steps_i64,
            prediction_type: config.prediction_type,
            clip_range: config
                .clip_sample_or(false)
                .then_some(config.clip_sample_range),
            timestep_scaling: config.timestep_scaling,
        })
    }

    /// c_skip and c_out of the consistency boundary condition at timestep `t` (sigma_data 0.5).
    fn boundary_scalings(&self, t: i64) -> (f32, f32) {
        let scaled = t as f32 * self.timestep_scaling as f32;
        let denominator = scaled * scaled + 0.25;
        (0.25 / denominator, scaled / sqrt(denominator))
    }
}

/// The clean sample a model output implies at `alpha_prod` (diffusers' `.sqrt()` forms).
pub(crate) fn predict_original(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod: f32,
) -> Tensor {
    let beta_prod = 1.0 - alpha_prod;
    match prediction_type {
        PredictionType::Epsilon => {
            (sample - model_output * f64::from(tensor_sqrt(beta_prod)))
                / f64::from(tensor_sqrt(alpha_prod))
        }
        PredictionType::Sample => model_output.shallow_clone(),
        PredictionType::VPrediction => {
            sample * f64::from(tensor_sqrt(alpha_prod))
                - model_output * f64::from(tensor_sqrt(beta_prod))
        }
    }
}

impl Scheduler for Lcm {
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

    /// Draws `noise(model_output.size())` once on every step but the last, after the
    /// denoised estimate, as diffusers does.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let t = self.steps[step];
        let last = step + 1 == self.steps.len();
        // On the last step diffusers' "previous" timestep is the current one; unused there.
        let prev_t = self.steps.get(step + 1).copied().unwrap_or(t);
        let alpha_prod = self.alphas_cumprod[t as usize];
        let alpha_prod_prev = self.alphas_cumprod[prev_t as usize];
        let (c_skip, c_out) = self.boundary_scalings(t);
        let original = predict_original(self.prediction_type, model_output, sample, alpha_prod);
        let original = match self.clip_range {
            Some(r) => original.clamp(-r, r),
            None => original,
        };
        let denoised = original * f64::from(c_out) + sample * f64::from(c_skip);
        if last {
            return denoised;
        }
        let fresh = noise(&model_output.size());
        denoised * f64::from(tensor_sqrt(alpha_prod_prev))
            + fresh * f64::from(tensor_sqrt(1.0 - alpha_prod_prev))
    }
}
