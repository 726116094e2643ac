//! DPM-Solver-2 with ancestral noise ("DPM2 a"), as diffusers' KDPM2AncestralDiscreteScheduler
//! runs it: the DPM2 step lands on sigma_down, then fresh noise brings it up to the next sigma.
//! Two model evaluations per step except the last, as diffusers lists them.
use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_input};
use super::kdpm2::{doubled_with_last, geometric_midpoints, narrowed, refuse_sample_prediction};
use super::sigmas::{init_noise_sigma, k_schedule, sigma_to_t_f32, with_final_zero, KOptions};
use super::{img2img, Scheduler};
use crate::engine::error::Result;
use tch::Tensor;

pub struct Kdpm2AncestralDiscrete {
    timesteps: Vec<f64>,
    /// Per model evaluation, in diffusers' doubled layout.
    sigmas: Vec<f32>,
    sigmas_interpol: Vec<f32>,
    sigmas_up: Vec<f32>,
    sigmas_down: Vec<f32>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
    sample: Option<Tensor>,
}

/// sigma_up and sigma_down of each step, in float32 with libtorch's pow as diffusers does it.
fn up_and_down(sigmas: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let mut next = sigmas.to_vec();
    next.rotate_left(1);
    if let Some(last) = next.last_mut() {
        *last = 0.0;
    }
    let (s, next) = (Tensor::from_slice(sigmas), Tensor::from_slice(&next));
    let (s2, next2) = (s.f_pow_tensor_scalar(2)?, next.f_pow_tensor_scalar(2)?);
    let up = (&next2 * (&s2 - &next2) / &s2).f_pow_tensor_scalar(0.5)?;
    let down = (&next2 - up.f_pow_tensor_scalar(2)?).f_pow_tensor_scalar(0.5)?;
    let mut down = Vec::<f32>::try_from(&down)?;
    if let Some(last) = down.last_mut() {
        *last = 0.0;
    }
    Ok((Vec::<f32>::try_from(&up)?, down))
}

impl Kdpm2AncestralDiscrete {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        refuse_sample_prediction(config, "DPM2 a")?;
        let schedule = k_schedule(
            config,
            steps,
            KOptions {
                float64_timesteps: false,
                round_karras_timesteps: true,
            },
        )?;
        let plain = with_final_zero(&schedule.sigmas);
        let (up, down) = up_and_down(&plain)?;
        let mut interpol = geometric_midpoints(&plain, &down)?;
        let n1 = interpol.len();
        for v in &mut interpol[n1.saturating_sub(2)..] {
            *v = 0.0;
        }
        let timesteps = narrowed(&schedule.timesteps, schedule.schedule);
        let interpol_t: Vec<f64> = interpol
            .iter()
            .map(|&s| f64::from(sigma_to_t_f32(s, &schedule.log_sigmas)))
            .collect();
        // [t0, t(mid 0), t1, t(mid 1), ..., t(mid n-2), t(n-1)].
        let mut model_timesteps = vec![timesteps[0]];
        for i in 1..timesteps.len() {
            model_timesteps.push(interpol_t[i - 1]);
            model_timesteps.push(timesteps[i]);
        }
        let sigmas = doubled_with_last(&plain);
        Ok(Kdpm2AncestralDiscrete {
            timesteps: model_timesteps,
            init_noise_sigma: init_noise_sigma(&sigmas, config),
            sigmas,
            sigmas_interpol: doubled_with_last(&interpol),
            sigmas_up: doubled_with_last(&up),
            sigmas_down: doubled_with_last(&down),
            prediction_type: config.prediction_type,
            sample: None,
        })
    }
}

impl Scheduler for Kdpm2AncestralDiscrete {
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
            self.sigmas_interpol[step - 1]
        };
        scale_input(sample, sigma)
    }

    /// Draws `noise(model_output.size())` once per second half, after the deterministic part.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        match self.sample.take() {
            None => {
                let sigma = self.sigmas[step];
                let sigma_interpol = self.sigmas_interpol[step];
                let pred_original =
                    predict_original(self.prediction_type, model_output, sample, sigma);
                let derivative = (sample - pred_original) / f64::from(sigma);
                self.sample = Some(sample.shallow_clone());
                sample + derivative * f64::from(sigma_interpol - sigma)
            }
            Some(start) => {
                let sigma = self.sigmas[step - 1];
                let sigma_interpol = self.sigmas_interpol[step - 1];
                let sigma_up = self.sigmas_up[step - 1];
                let sigma_down = self.sigmas_down[step - 1];
                let pred_original =
                    predict_original(self.prediction_type, model_output, sample, sigma_interpol);
                let derivative = (sample - pred_original) / f64::from(sigma_interpol);
                let prev = start + derivative * f64::from(sigma_down - sigma);
                let drawn = noise(&model_output.size());
                prev + drawn * f64::from(sigma_up)
            }
        }
    }
}
