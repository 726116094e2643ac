//! DEIS (Zhang & Chen 2022), the log-rho multistep exponential integrator, as diffusers'
//! DEISMultistepScheduler runs it: up to third order on the model's noise prediction, lowering
//! the order for the first steps and (with few steps) the last ones.
use super::betas::alphas_cumprod_unrescaled;
use super::config::{PredictionType, SchedulerConfig};
use super::multistep_sigmas as ms;
use super::scalar;
use super::sigmas::train_sigmas;
use super::{check_steps, img2img, spacing, Schedule, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

pub struct DeisMultistep {
    timesteps: Vec<f64>,
    /// One per step plus the final one, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    solver_order: usize,
    lower_order_final: bool,
    /// Noise predictions of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

impl DeisMultistep {
    /// Reads diffusers' DEIS keys: `solver_order`, `lower_order_final`, the Karras/exponential/
    /// beta sigma flags with `sigma_min`/`sigma_max`. As in diffusers, DEIS always uses its
    /// log-rho solver (other `solver_type`/`algorithm_type` values mean that one), ends on the
    /// smallest training sigma (or the last converted one), and does not read
    /// `rescale_betas_zero_snr` or `final_sigmas_type`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        config.refuse_thresholding("DEIS")?;
        if config.solver_order == 0 {
            return Err(EngineError::Invalid(
                "solver_order is 0 in the scheduler config: use 1, 2 or 3".into(),
            ));
        }
        // diffusers maps the other solvers' names to logrho.
        if let Some(other) = config
            .solver_type
            .as_deref()
            .filter(|t| !matches!(*t, "logrho" | "midpoint" | "heun" | "bh1" | "bh2"))
        {
            return Err(EngineError::Invalid(format!(
                "solver_type {other:?} in the scheduler config is not one DEIS knows: use logrho"
            )));
        }
        let schedule = ms::schedule(config, "DEIS")?;
        let alphas = alphas_cumprod_unrescaled(config)?;
        let (train, logs) = train_sigmas(&alphas)?;
        let (timesteps, sigmas): (Vec<i64>, Vec<f32>) = if schedule == Schedule::Default {
            let t = ms::timesteps(config, steps);
            let mut s: Vec<f32> = t
                .iter()
                .map(|&t| spacing::interp(t as f64, &train) as f32)
                .collect();
            let a = alphas[0];
            s.push(scalar::sqrt((1.0 - a) / a));
            (t, s)
        } else {
            let (t, mut s) = ms::respaced(schedule, config, steps, &train, &logs);
            s.push(s.last().copied().unwrap_or(0.0));
            (t, s)
        };
        Ok(DeisMultistep {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            prediction_type: config.prediction_type,
            solver_order: config.solver_order,
            lower_order_final: config.lower_order_final,
            model_outputs: (0..config.solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
        })
    }

    /// The sigmas of every step and the final one, as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> Vec<f64> {
        self.sigmas.iter().map(|&s| f64::from(s)).collect()
    }

    /// The noise the model's output implies, through its x0 prediction as diffusers does.
    fn convert(&self, model_output: &Tensor, sample: &Tensor, step: usize) -> Tensor {
        let (alpha, sigma) = scalar::alpha_sigma(self.sigmas[step]);
        let (alpha, sigma) = (f64::from(alpha), f64::from(sigma));
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => (sample - model_output * sigma) / alpha,
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => sample * alpha - model_output * sigma,
        };
        (sample - x0 * alpha) / sigma
    }

    fn first_order(&self, m0: &Tensor, sample: &Tensor, step: usize) -> Tensor {
        let (alpha_t, sigma_t) = scalar::alpha_sigma(self.sigmas[step + 1]);
        let (alpha_s, sigma_s) = scalar::alpha_sigma(self.sigmas[step]);
        let lambda_t = scalar::ln(alpha_t) - scalar::ln(sigma_t);
        let lambda_s = scalar::ln(alpha_s) - scalar::ln(sigma_s);
        let h = lambda_t - lambda_s;
        sample * f64::from(alpha_t / alpha_s) - m0 * f64::from(sigma_t * (scalar::exp(h) - 1.0))
    }

    /// Second order (`outputs` most recent first, two of them) or third order (three).
    fn multistep(&self, outputs: &[&Tensor], sample: &Tensor, step: usize) -> Tensor {
        let alpha_sigma = |i: usize| scalar::alpha_sigma(self.sigmas[i]);
        let (alpha_t, sigma_t) = alpha_sigma(step + 1);
        let (alpha_s0, sigma_s0) = alpha_sigma(step);
        let rho_t = sigma_t / alpha_t;
        let rho_s0 = sigma_s0 / alpha_s0;
        let ln = scalar::ln;
        let coefs: Vec<f32> = if outputs.len() == 2 {
            let (alpha_s1, sigma_s1) = alpha_sigma(step - 1);
            let rho_s1 = sigma_s1 / alpha_s1;
            let ind = |t: f32, b: f32, c: f32| t * (-ln(c) + ln(t) - 1.0) / (ln(b) - ln(c));
            vec![
                ind(rho_t, rho_s0, rho_s1) - ind(rho_s0, rho_s0, rho_s1),
                ind(rho_t, rho_s1, rho_s0) - ind(rho_s0, rho_s1, rho_s0),
            ]
        } else {
            let (alpha_s1, sigma_s1) = alpha_sigma(step - 1);
            let (alpha_s2, sigma_s2) = alpha_sigma(step - 2);
            let (rho_s1, rho_s2) = (sigma_s1 / alpha_s1, sigma_s2 / alpha_s2);
            let ind = |t: f32, b: f32, c: f32, d: f32| {
                let (lt, lc, ld) = (ln(t), ln(c), ln(d));
                let numerator =
                    t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
                numerator / ((ln(b) - lc) * (ln(b) - ld))
            };
            vec![
                ind(rho_t, rho_s0, rho_s1, rho_s2) - ind(rho_s0, rho_s0, rho_s1, rho_s2),
                ind(rho_t, rho_s1, rho_s2, rho_s0) - ind(rho_s0, rho_s1, rho_s2, rho_s0),
                ind(rho_t, rho_s2, rho_s0, rho_s1) - ind(rho_s0, rho_s2, rho_s0, rho_s1),
            ]
        };
        let mut inner = sample / f64::from(alpha_s0);
        for (m, c) in outputs.iter().zip(&coefs) {
            inner += *m * f64::from(*c);
        }
        inner * f64::from(alpha_t)
    }
}

impl Scheduler for DeisMultistep {
    fn sigmas(&self) -> Option<Vec<f64>> {
        Some(DeisMultistep::sigmas(self))
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_alpha_sigma(self.sigmas.get(entry).copied(), original, noise)
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let n = self.timesteps.len();
        let lower = self.lower_order_final && n < 15;
        let final_first = lower && step + 1 == n;
        let final_second = lower && step + 2 == n;
        let converted = self.convert(model_output, sample, step);
        self.model_outputs.rotate_left(1);
        if let Some(newest) = self.model_outputs.last_mut() {
            *newest = Some(converted);
        }
        let held: Vec<&Tensor> = self.model_outputs.iter().rev().flatten().collect();
        let prev = if self.solver_order == 1 || self.lower_order_nums < 1 || final_first {
            self.first_order(held[0], sample, step)
        } else if self.solver_order == 2 || self.lower_order_nums < 2 || final_second {
            self.multistep(&held[..2], sample, step)
        } else {
            self.multistep(&held[..3], sample, step)
        };
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        prev
    }
}
