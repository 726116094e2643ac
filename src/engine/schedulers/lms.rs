//! The linear multistep method on the Karras ODE (Karras et al. 2022), as diffusers'
//! LMSDiscreteScheduler runs it: each step integrates the Lagrange polynomial through the last
//! (up to four) derivatives over the step's sigma interval.
use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_input};
use super::sigmas::{init_noise_sigma, k_schedule, with_final_zero, KOptions};
use super::special::integrate;
use super::{img2img, Scheduler};
use crate::engine::error::Result;
use std::collections::VecDeque;
use tch::Tensor;

/// diffusers' default (and the pipeline's) LMS order.
const ORDER: usize = 4;

pub struct LmsDiscrete {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
    /// The last derivatives, oldest first.
    derivatives: VecDeque<Tensor>,
}

impl LmsDiscrete {
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let schedule = k_schedule(
            config,
            steps,
            KOptions {
                float64_timesteps: false,
                round_karras_timesteps: false,
            },
        )?;
        let sigmas = with_final_zero(&schedule.sigmas);
        Ok(LmsDiscrete {
            timesteps: schedule
                .timesteps
                .iter()
                .map(|&t| f64::from(t as f32))
                .collect(),
            init_noise_sigma: init_noise_sigma(&sigmas, config),
            sigmas,
            prediction_type: config.prediction_type,
            derivatives: VecDeque::new(),
        })
    }

    /// ∫ over [σ_t, σ_(t+1)] of the Lagrange basis polynomial of derivative `current` among the
    /// last `order` ones. diffusers integrates it with scipy's adaptive quad (to a relative 1e-4,
    /// on float32 arithmetic); this integrates the same polynomial exactly in float64.
    pub fn coefficient(&self, order: usize, t: usize, current: usize) -> f64 {
        let s = |i: usize| f64::from(self.sigmas[i]);
        let basis = |tau: f64| {
            (0..order)
                .filter(|&k| k != current)
                .map(|k| (tau - s(t - k)) / (s(t - current) - s(t - k)))
                .product::<f64>()
        };
        integrate(basis, s(t), s(t + 1))
    }
}

impl Scheduler for LmsDiscrete {
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
        let sigma = self.sigmas[step];
        let pred_original = predict_original(self.prediction_type, model_output, sample, sigma);
        self.derivatives
            .push_back((sample - pred_original) / f64::from(sigma));
        if self.derivatives.len() > ORDER {
            self.derivatives.pop_front();
        }
        let order = (step + 1).min(ORDER);
        // Newest derivative first, as diffusers pairs the coefficients with `reversed(...)`.
        let mut update: Option<Tensor> = None;
        for (current, derivative) in (0..order).zip(self.derivatives.iter().rev()) {
            let term = derivative * self.coefficient(order, step, current);
            update = Some(match update {
                Some(sum) => sum + term,
                None => term,
            });
        }
        match update {
            Some(update) => sample + update,
            None => sample.shallow_clone(),
        }
    }
}
