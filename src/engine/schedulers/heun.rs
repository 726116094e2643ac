//! Heun's method on the Karras ODE (Karras et al. 2022, algorithm 1), as diffusers'
//! HeunDiscreteScheduler runs it: an Euler step, then a correction with the model evaluated at
//! its end. Two model evaluations per step except the last (an Euler step to sigma 0), listed
//! in `timesteps()` as diffusers lists them: [t0, t1, t1, t2, t2, ...].
use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_input};
use super::sigmas::{init_noise_sigma, k_schedule, with_final_zero, KOptions};
use super::{img2img, Scheduler};
use crate::engine::error::Result;
use tch::Tensor;

/// Heun's own default for `clip_sample`.
const CLIP_SAMPLE: bool = false;

/// What the first half of a step leaves for the second.
struct FirstHalf {
    derivative: Tensor,
    dt: f32,
    sample: Tensor,
}

pub struct HeunDiscrete {
    timesteps: Vec<f64>,
    /// [σ0, σ1, σ1, σ2, σ2, ..., σ(n-1), σ(n-1), 0], one per model evaluation plus the last.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
    clip_range: Option<f64>,
    first_half: Option<FirstHalf>,
}

/// `[x0, x1, x1, x2, x2, ...]`: every value after the first twice (diffusers' layout of
/// per-evaluation values for second-order schedulers).
pub(crate) fn doubled<T: Copy>(values: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(2 * values.len());
    for (i, &v) in values.iter().enumerate() {
        out.push(v);
        if i > 0 {
            out.push(v);
        }
    }
    out
}

impl HeunDiscrete {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = k_schedule(
            config,
            steps,
            KOptions {
                float64_timesteps: false,
                round_karras_timesteps: false,
            },
        )?;
        let plain = with_final_zero(&schedule.sigmas);
        // The final zero appears once: [s0, s1, s1, ..., s(n-1), s(n-1), 0].
        let mut sigmas = doubled(&plain[..plain.len() - 1]);
        sigmas.push(0.0);
        let timesteps: Vec<f64> = doubled(&schedule.timesteps)
            .into_iter()
            .map(|t| f64::from(t as f32))
            .collect();
        Ok(HeunDiscrete {
            timesteps,
            init_noise_sigma: init_noise_sigma(&sigmas, config),
            sigmas,
            prediction_type: config.prediction_type,
            clip_range: config
                .clip_sample_or(CLIP_SAMPLE)
                .then_some(config.clip_sample_range),
            first_half: None,
        })
    }
}

impl Scheduler for HeunDiscrete {
    fn order(&self) -> usize {
        2
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_sigma(self.sigmas.get(entry).copied(), original, noise)
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<Vec<f64>> {
        Some(self.sigmas.iter().map(|&s| f64::from(s)).collect())
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Tensor {
        scale_input(sample, self.sigmas[step])
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let first_order = self.first_half.is_none();
        let (sigma, sigma_next) = if first_order {
            (self.sigmas[step], self.sigmas[step + 1])
        } else {
            (self.sigmas[step - 1], self.sigmas[step])
        };
        let sigma_input = if first_order { sigma } else { sigma_next };
        let pred_original =
            predict_original(self.prediction_type, model_output, sample, sigma_input);
        let pred_original = match self.clip_range {
            Some(r) => pred_original.clamp(-r, r),
            None => pred_original,
        };
        match self.first_half.take() {
            None => {
                let derivative = (sample - pred_original) / f64::from(sigma);
                let dt = sigma_next - sigma;
                let prev = sample + &derivative * f64::from(dt);
                self.first_half = Some(FirstHalf {
                    derivative,
                    dt,
                    sample: sample.shallow_clone(),
                });
                prev
            }
            Some(first) => {
                let derivative = (sample - pred_original) / f64::from(sigma_next);
                let derivative = (first.derivative + derivative) / 2.0;
                first.sample + derivative * f64::from(first.dt)
            }
        }
    }
}
