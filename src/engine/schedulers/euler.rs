//! Euler's method on the Karras et al. (2022) ODE, as diffusers' EulerDiscreteScheduler runs it
//! (s_churn = 0: no noise is added), with its Karras, exponential and beta sigma spacings. Also
//! the sigma schedule Euler ancestral shares.
use super::betas::alphas_cumprod_finite;
use super::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, TimestepSpacing,
    TimestepType,
};
use super::scalar::{ln, sqrt, square};
use super::{check_steps, img2img, sigmas, spacing, Schedule, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::{Kind, Tensor};

/// Timesteps and sigmas (one more sigma than timesteps), in float32 as diffusers stores them.
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f32>,
    pub sigmas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
}

impl SigmaSchedule {
    /// Linear interpolation of the training sigmas at the spaced timesteps, ending on zero.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        let alphas_cumprod = alphas_cumprod_finite(config)?;
        // libtorch's vectorised sqrt is not always correctly rounded: use it, not f32::sqrt.
        let alphas = Tensor::from_slice(&alphas_cumprod);
        let train_sigmas = ((alphas.neg() + 1.0) / &alphas).f_pow_tensor_scalar(0.5)?;
        let train_sigmas = Vec::<f32>::try_from(&train_sigmas)?;
        let spacing = config.spacing_or(TimestepSpacing::Linspace);
        let times = spacing::timesteps(
            spacing,
            config.num_train_timesteps,
            steps,
            config.steps_offset,
            false,
        );
        let timesteps: Vec<f32> = times.iter().map(|&t| t as f32).collect();
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|&t| spacing::interp(f64::from(t), &train_sigmas) as f32)
            .collect();
        sigmas.push(0.0);
        Ok(SigmaSchedule {
            timesteps,
            sigmas,
            alphas_cumprod,
        })
    }

    /// Euler's `use_*_sigmas`: `steps` sigmas respaced between the interpolated ones' ends (or
    /// the config's `sigma_min`/`sigma_max`), timesteps from them, and a zero after them.
    fn respace(
        &mut self,
        respacing: Schedule,
        config: &SchedulerConfig,
        steps: usize,
    ) -> Result<()> {
        let (train, log_sigmas) = sigmas::train_sigmas(&self.alphas_cumprod)?;
        // numpy's interp gives float64 here, which the respacing starts from.
        let interpolated: Vec<f64> = self
            .timesteps
            .iter()
            .map(|&t| spacing::interp(f64::from(t), &train))
            .collect();
        let (Some(&last), Some(&first)) = (interpolated.last(), interpolated.first()) else {
            return Err(EngineError::Invalid(
                "no timesteps to respace: use at least one step".into(),
            ));
        };
        let min = config.sigma_min.unwrap_or(last);
        let max = config.sigma_max.unwrap_or(first);
        let respaced = sigmas::respace(respacing, min, max, steps);
        self.timesteps = respaced
            .iter()
            .map(|&s| sigmas::sigma_to_t(s, &log_sigmas) as f32)
            .collect();
        self.sigmas = respaced
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(0.0))
            .collect();
        Ok(())
    }

    /// diffusers' `init_noise_sigma`: the largest sigma, or sqrt(sigma² + 1) with leading spacing.
    pub fn init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self
            .sigmas
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        f64::from(match spacing {
            TimestepSpacing::Leading => sqrt(square(max) + 1.0),
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        })
    }
}

/// `sample / sqrt(sigma² + 1)`, the input scaling of both Euler samplers.
pub(crate) fn scale_input(sample: &Tensor, sigma: f32) -> Tensor {
    sample / f64::from(sqrt(square(sigma) + 1.0))
}

/// The denoised sample the model's output implies at `sigma` (sample already float32).
pub(crate) fn predict_original(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> Tensor {
    match prediction_type {
        PredictionType::Epsilon => sample - model_output * f64::from(sigma),
        PredictionType::VPrediction => {
            let var = square(sigma) + 1.0;
            model_output * f64::from(-sigma / sqrt(var)) + sample / f64::from(var)
        }
        PredictionType::Sample => model_output.shallow_clone(),
    }
}

pub struct EulerDiscrete {
    schedule: SigmaSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
}

impl EulerDiscrete {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let respacing = sigmas::configured(config)?;
        if config.interpolation_type != InterpolationType::Linear {
            return Err(EngineError::Invalid(format!(
                "interpolation_type {:?} is not supported by easel's Euler yet: set it to \"linear\" \
                 in the scheduler config",
                config.interpolation_type.as_str()
            )));
        }
        let mut schedule = SigmaSchedule::new(config, steps)?;
        if respacing != Schedule::Default {
            schedule.respace(respacing, config, steps)?;
        }
        if config.final_sigmas_type == FinalSigmasType::SigmaMin {
            // Computed on its own, as diffusers does, which can differ from train_sigmas[0].
            let first = schedule.alphas_cumprod[0];
            if let Some(last) = schedule.sigmas.last_mut() {
                *last = sqrt((1.0 - first) / first);
            }
        }
        let continuous = config.timestep_type == TimestepType::Continuous
            && config.prediction_type == PredictionType::VPrediction;
        let timesteps = if continuous {
            let n = schedule.sigmas.len() - 1;
            schedule.sigmas[..n]
                .iter()
                .map(|&s| f64::from(0.25 * ln(s)))
                .collect()
        } else {
            schedule.timesteps.iter().map(|&t| f64::from(t)).collect()
        };
        let spacing = config.spacing_or(TimestepSpacing::Linspace);
        Ok(EulerDiscrete {
            init_noise_sigma: schedule.init_noise_sigma(spacing),
            sigmas: schedule.sigmas.iter().map(|&s| f64::from(s)).collect(),
            timesteps,
            schedule,
            prediction_type: config.prediction_type,
        })
    }

    /// The sigmas of every step and the final one, as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }
}

impl Scheduler for EulerDiscrete {
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

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let sample = sample.to_kind(Kind::Float);
        let sigma = self.schedule.sigmas[step];
        let pred_original = predict_original(self.prediction_type, model_output, &sample, sigma);
        let derivative = (&sample - pred_original) / f64::from(sigma);
        let dt = self.schedule.sigmas[step + 1] - sigma;
        let prev = &sample + derivative * f64::from(dt);
        prev.to_kind(model_output.kind())
    }
}
