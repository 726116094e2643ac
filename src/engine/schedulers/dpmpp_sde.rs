//! DPM-Solver++ SDE ("DPM++ SDE"), as diffusers' DPMSolverSDEScheduler runs it: a second-order
//! stochastic step through the log-sigma midpoint, its noise taken from a Brownian tree (so the
//! noise of an interval does not depend on the step sizes). Two model evaluations per step
//! except the last, listed in `timesteps()` as diffusers lists them: [t0, t(mid 0), t1, ...].
use super::brownian::BrownianInterval;
use super::config::{PredictionType, SchedulerConfig};
use super::euler::{predict_original, scale_input};
use super::heun::doubled;
use super::kdpm2::refuse_sample_prediction;
use super::scalar::{exp, expm1, ln, sqrt, square};
use super::sigmas::{init_noise_sigma, k_schedule, sigma_to_t, with_final_zero, KOptions};
use super::{img2img, Scheduler};
use crate::engine::error::Result;
use tch::Tensor;

/// The seed when neither the config nor the caller gives one.
const FALLBACK_SEED: u64 = 0;

/// What the first half of a step leaves for the second.
struct FirstHalf {
    sample: Tensor,
    mid_point_sigma: f32,
}

pub struct DpmSolverSde {
    timesteps: Vec<f64>,
    /// Per model evaluation, in diffusers' doubled layout, then the final zero.
    sigmas: Vec<f32>,
    init_noise_sigma: f64,
    prediction_type: PredictionType,
    seed: u64,
    tree: Option<BrownianInterval>,
    first_half: Option<FirstHalf>,
}

impl DpmSolverSde {
    /// `noise_seed` seeds the Brownian tree unless the config's `noise_sampler_seed` does.
    pub fn new(config: &SchedulerConfig, steps: usize, noise_seed: Option<u64>) -> Result<Self> {
        refuse_sample_prediction(config, "DPM++ SDE")?;
        let schedule = k_schedule(
            config,
            steps,
            KOptions {
                float64_timesteps: true,
                round_karras_timesteps: false,
            },
        )?;
        // Timesteps of the log-sigma midpoints between consecutive sigmas.
        let mids: Vec<f64> = schedule
            .sigmas
            .windows(2)
            .map(|pair| {
                let (t, t_next) = (-pair[0].ln(), -pair[1].ln());
                let proposed = t + (t_next - t) * 0.5;
                sigma_to_t((-proposed).exp(), &schedule.log_sigmas)
            })
            .collect();
        let mut timesteps = vec![schedule.timesteps[0]];
        for (i, &t) in schedule.timesteps.iter().enumerate().skip(1) {
            timesteps.push(mids[i - 1]);
            timesteps.push(t);
        }
        let plain = with_final_zero(&schedule.sigmas);
        let mut sigmas = doubled(&plain[..plain.len() - 1]);
        sigmas.push(0.0);
        Ok(DpmSolverSde {
            timesteps,
            init_noise_sigma: init_noise_sigma(&sigmas, config),
            sigmas,
            prediction_type: config.prediction_type,
            seed: config
                .noise_sampler_seed
                .or(noise_seed)
                .unwrap_or(FALLBACK_SEED),
            tree: None,
            first_half: None,
        })
    }

    /// Brownian noise over [sigma_to, sigma_from], normalised to unit variance, as diffusers'
    /// `BrownianTreeNoiseSampler(sigma_from, sigma_to)` returns it.
    fn brownian_noise(&mut self, shape: &[i64], sigma_from: f32, sigma_to: f32) -> Tensor {
        if self.tree.is_none() {
            let positive = self.sigmas.iter().copied().filter(|&s| s > 0.0);
            let min = positive.fold(f32::INFINITY, f32::min);
            let max = self
                .sigmas
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            self.tree = Some(BrownianInterval::new(
                f64::from(min),
                f64::from(max),
                shape,
                self.seed,
            ));
        }
        let Some(tree) = self.tree.as_mut() else {
            return Tensor::zeros(shape, (tch::Kind::Float, tch::Device::Cpu));
        };
        let (lo, hi, sign) = if sigma_from < sigma_to {
            (sigma_from, sigma_to, 1.0)
        } else {
            (sigma_to, sigma_from, -1.0)
        };
        let w = tree.increment(f64::from(lo), f64::from(hi)) * sign;
        w / f64::from((sigma_to - sigma_from).abs().sqrt())
    }
}

impl Scheduler for DpmSolverSde {
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
        let sigma = match &self.first_half {
            None => self.sigmas[step],
            Some(first) => first.mid_point_sigma,
        };
        scale_input(sample, sigma)
    }

    /// Draws nothing from `noise`: the Brownian tree has its own seeded generators.
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
        // Log-sigma time, in float32 as diffusers' 0-dim tensors.
        let t = -ln(sigma);
        let t_next = -ln(sigma_next);
        let t_proposed = t + (t_next - t) * 0.5;
        let sigma_input = if first_order { sigma } else { exp(-t_proposed) };
        let pred_original =
            predict_original(self.prediction_type, model_output, sample, sigma_input);
        if sigma_next == 0.0 {
            let derivative = (sample - pred_original) / f64::from(sigma);
            return sample + derivative * f64::from(sigma_next - sigma);
        }
        let (t_next, start) = match self.first_half.take() {
            None => (t_proposed, sample.shallow_clone()),
            Some(first) => (t_next, first.sample),
        };
        let sigma_from = exp(-t);
        let sigma_to = exp(-t_next);
        let candidate =
            sqrt(square(sigma_to) * (square(sigma_from) - square(sigma_to)) / square(sigma_from));
        let sigma_up = if candidate < sigma_to {
            candidate
        } else {
            sigma_to
        };
        let sigma_down = sqrt(square(sigma_to) - square(sigma_up));
        let ancestral_t = -ln(sigma_down);
        let prev = &start * f64::from(exp(-ancestral_t) / exp(-t))
            - pred_original * f64::from(expm1(t - ancestral_t));
        // The tree lives on the CPU in float32 (as torchsde's does for a CPU generator).
        let noise = crate::engine::device::upload(
            &self
                .brownian_noise(&sample.size(), sigma_from, sigma_to)
                .to_kind(sample.kind()),
            sample.device(),
        );
        let prev = prev + noise * f64::from(sigma_up);
        if first_order {
            self.first_half = Some(FirstHalf {
                sample: start,
                mid_point_sigma: sigma_to,
            });
        }
        prev
    }
}
