//! DPM-Solver-2 on the Karras ODE (Karras et al. 2022; Lu et al. 2022), as diffusers'
//! KDPM2DiscreteScheduler runs it: a half step to the geometric midpoint of two sigmas, and the
//! full step with the derivative evaluated there. Two model evaluations per step except the last,
//! listed in `timesteps()` as diffusers lists them: [t0, t(mid 1), t1, t(mid 2), t2, ...].
use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_input};
use super::heun::doubled;
use super::sigmas::{init_noise_sigma, k_schedule, sigma_to_t_f32, with_final_zero, KOptions};
use super::{img2img, Schedule, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// exp(lerp(ln a, ln b, 0.5)) elementwise, with libtorch's kernels as diffusers computes it.
pub(crate) fn geometric_midpoints(a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    let (a, b) = (Tensor::from_slice(a), Tensor::from_slice(b));
    let mid = a.f_log()?.f_lerp(&b.f_log()?, 0.5)?.f_exp()?;
    Ok(Vec::<f32>::try_from(&mid)?)
}

/// The model timesteps of a schedule, narrowed as diffusers keeps them: float32 normally, but
/// float64 once a respacing (`use_*_sigmas`) produced them with numpy.
pub(crate) fn narrowed(timesteps: &[f64], schedule: Schedule) -> Vec<f64> {
    match schedule {
        Schedule::Default => timesteps.iter().map(|&t| f64::from(t as f32)).collect(),
        _ => timesteps.to_vec(),
    }
}

pub(crate) fn refuse_sample_prediction(config: &SchedulerConfig, name: &str) -> Result<()> {
    if config.prediction_type == PredictionType::Sample {
        return Err(EngineError::Invalid(format!(
            "{name} supports prediction_type epsilon and v_prediction, not \"sample\" (diffusers \
             has not implemented it): pick ddim or euler for this model"
        )));
    }
    Ok(())
}

pub struct Kdpm2Discrete {
    timesteps: Vec<f64>,
    /// Per model evaluation, in diffusers' doubled layout: [σ0, σ1, σ1, ..., 0, 0, 0].
    sigmas: Vec<f32>,
    /// The midpoints, in the same layout.
    sigmas_interpol: Vec<f32>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
    /// The sample at the start of a step, between its two halves.
    sample: Option<Tensor>,
}

impl Kdpm2Discrete {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        refuse_sample_prediction(config, "DPM2")?;
        let schedule = k_schedule(
            config,
            steps,
            KOptions {
                float64_timesteps: false,
                round_karras_timesteps: true,
            },
        )?;
        let plain = with_final_zero(&schedule.sigmas);
        // Each sigma with its predecessor (the first with the final zero, a NaN never read).
        let mut rolled = plain.clone();
        rolled.rotate_right(1);
        let interpol = geometric_midpoints(&plain, &rolled)?;
        let timesteps = narrowed(&schedule.timesteps, schedule.schedule);
        let interpol_t: Vec<f64> = interpol
            .iter()
            .map(|&s| f64::from(sigma_to_t_f32(s, &schedule.log_sigmas)))
            .collect();
        // [t0, t(mid 1), t1, t(mid 2), t2, ..., t(mid n-1), t(n-1)].
        let n = timesteps.len();
        let mut model_timesteps = vec![timesteps[0]];
        for i in 1..n {
            model_timesteps.push(interpol_t[i]);
            model_timesteps.push(timesteps[i]);
        }
        let sigmas = doubled_with_last(&plain);
        Ok(Kdpm2Discrete {
            timesteps: model_timesteps,
            init_noise_sigma: init_noise_sigma(&sigmas, config),
            sigmas,
            sigmas_interpol: doubled_with_last(&interpol),
            prediction_type: config.prediction_type,
            sample: None,
        })
    }
}

/// diffusers' `cat([x[:1], x[1:].repeat_interleave(2), x[-1:]])`.
pub(crate) fn doubled_with_last(values: &[f32]) -> Vec<f32> {
    let mut out = doubled(values);
    out.extend(values.last().copied());
    out
}

impl Scheduler for Kdpm2Discrete {
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
        let sigma = if self.sample.is_none() {
            self.sigmas[step]
        } else {
            self.sigmas_interpol[step]
        };
        scale_input(sample, sigma)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let first_order = self.sample.is_none();
        let (sigma, sigma_interpol, sigma_next) = if first_order {
            (
                self.sigmas[step],
                self.sigmas_interpol[step + 1],
                self.sigmas[step + 1],
            )
        } else {
            (
                self.sigmas[step - 1],
                self.sigmas_interpol[step],
                self.sigmas[step],
            )
        };
        let sigma_input = if first_order { sigma } else { sigma_interpol };
        let pred_original =
            predict_original(self.prediction_type, model_output, sample, sigma_input);
        match self.sample.take() {
            None => {
                let derivative = (sample - pred_original) / f64::from(sigma);
                self.sample = Some(sample.shallow_clone());
                sample + derivative * f64::from(sigma_interpol - sigma)
            }
            Some(start) => {
                let derivative = (sample - pred_original) / f64::from(sigma_interpol);
                start + derivative * f64::from(sigma_next - sigma)
            }
        }
    }
}
