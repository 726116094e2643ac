//! DPM-Solver++(2M) (Lu et al. 2022), deterministic and SDE variants, as diffusers'
//! DPMSolverMultistepScheduler runs them with `solver_order=2` and `algorithm_type` set to
//! `dpmsolver++` or `sde-dpmsolver++`: a second-order multistep method in log-SNR time on the
//! model's predictions of the clean sample.
use super::betas::alphas_cumprod;
use super::config::{BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig};
use super::scalar::{alpha_sigma, exp, ln, sqrt};
use super::sigmas::{configured, respace, sigma_to_t, train_sigmas};
use super::{check_steps, img2img, spacing, Schedule, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::{Kind, Tensor};

/// Lower-order steps are used near the end below this many steps (diffusers' threshold).
const LOWER_ORDER_BELOW: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `dpmsolver++`: deterministic.
    DpmSolverPP,
    /// `sde-dpmsolver++`: fresh noise every step.
    SdeDpmSolverPP,
}

/// How the second-order update weighs the difference of the last two predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

impl SolverType {
    /// diffusers maps UniPC's and DEIS's names to midpoint.
    fn from_config(value: Option<&str>) -> Result<Self> {
        match value {
            None | Some("midpoint") | Some("logrho") | Some("bh1") | Some("bh2") => {
                Ok(Self::Midpoint)
            }
            Some("heun") => Ok(Self::Heun),
            Some(other) => Err(EngineError::Invalid(format!(
                "solver_type {other:?} is not supported by DPM-Solver: use midpoint or heun"
            ))),
        }
    }
}

pub struct DpmSolverMultistep {
    algorithm: Algorithm,
    solver_type: SolverType,
    timesteps: Vec<f64>,
    /// One per step, then the final sigma (float32, as diffusers keeps them).
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// The previous and the current clean-sample predictions.
    model_outputs: [Option<Tensor>; 2],
    lower_order_nums: usize,
}

fn refuse(condition: bool, message: &str) -> Result<()> {
    if condition {
        return Err(EngineError::Invalid(message.to_string()));
    }
    Ok(())
}

/// log-SNR: ln(alpha_t) - ln(sigma_t).
fn lambda(alpha: f32, sigma: f32) -> f32 {
    ln(alpha) - ln(sigma)
}

impl DpmSolverMultistep {
    pub fn new(config: &SchedulerConfig, steps: usize, algorithm: Algorithm) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        refuse(
            config.thresholding,
            "the scheduler config asks for dynamic thresholding (\"thresholding\": true), which \
             easel's DPM-Solver does not support: set it to false",
        )?;
        refuse(
            config.variance_type.is_some(),
            "the scheduler config sets variance_type, for models that predict a variance, which \
             Stable Diffusion models do not: remove it",
        )?;
        refuse(
            config.use_lu_lambdas,
            "the scheduler config sets use_lu_lambdas, which easel does not offer: set it to \
             false (or use --schedule karras or exponential)",
        )?;
        refuse(
            config.use_flow_sigmas,
            "the scheduler config sets use_flow_sigmas (flow-matching models), which easel does \
             not support: set it to false",
        )?;
        let solver_type = SolverType::from_config(config.solver_type.as_deref())?;
        let schedule = configured(config)?;

        let mut alphas_cumprod = alphas_cumprod(config)?;
        if config.rescale_betas_zero_snr {
            // diffusers keeps the last sigma finite (about 4096) rather than infinite.
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
        let train = config.num_train_timesteps;
        let last_timestep = train - clipped_index(&alphas_cumprod, config.lambda_min_clipped)?;
        let spaced = spaced_timesteps(config, steps, last_timestep)?;
        let (train_sig, log_sigmas) = train_sigmas(&alphas_cumprod)?;

        let (timesteps, sigmas): (Vec<i64>, Vec<f64>) = if schedule == Schedule::Default {
            let sigmas = spaced
                .iter()
                .map(|&t| spacing::interp(t as f64, &train_sig))
                .collect();
            (spaced, sigmas)
        } else {
            // Respaced between the extreme training sigmas (not the spaced ones).
            let sigmas = respace(
                schedule,
                f64::from(train_sig[0]),
                f64::from(train_sig[train - 1]),
                steps,
            );
            let round = schedule == Schedule::Karras
                && config.beta_schedule != BetaSchedule::SquaredcosCapV2;
            let timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sigmas);
                    // Rounded for Karras; otherwise the cast to int64 truncates.
                    (if round { t.round_ties_even() } else { t }) as i64
                })
                .collect();
            (timesteps, sigmas)
        };
        let final_sigma = match config.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => {
                let first = alphas_cumprod[0];
                sqrt((1.0 - first) / first)
            }
        };
        let sigmas: Vec<f32> = sigmas
            .iter()
            .map(|&s| s as f32)
            .chain(std::iter::once(final_sigma))
            .collect();
        Ok(DpmSolverMultistep {
            algorithm,
            solver_type,
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            prediction_type: config.prediction_type,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigma_zero: config.final_sigmas_type == FinalSigmasType::Zero,
            model_outputs: [None, None],
            lower_order_nums: 0,
        })
    }

    /// The clean sample the model's output implies (`convert_model_output` for DPM-Solver++).
    fn predict_original(&self, model_output: &Tensor, sample: &Tensor, step: usize) -> Tensor {
        let (alpha, sigma) = alpha_sigma(self.sigmas[step]);
        match self.prediction_type {
            PredictionType::Epsilon => {
                (sample - model_output * f64::from(sigma)) / f64::from(alpha)
            }
            PredictionType::Sample => model_output.shallow_clone(),
            PredictionType::VPrediction => {
                sample * f64::from(alpha) - model_output * f64::from(sigma)
            }
        }
    }

    fn first_order(
        &self,
        step: usize,
        x0: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Tensor {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[step]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        match noise {
            None => {
                sample * f64::from(sigma_t / sigma_s) - x0 * f64::from(alpha_t * (exp(-h) - 1.0))
            }
            Some(noise) => {
                let decay = exp(-2.0 * h);
                sample * f64::from(sigma_t / sigma_s * exp(-h))
                    + x0 * f64::from(alpha_t * (1.0 - decay))
                    + noise * f64::from(sigma_t * sqrt(1.0 - decay))
            }
        }
    }

    fn second_order(
        &self,
        step: usize,
        m0: &Tensor,
        m1: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Tensor {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[step]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[step - 1]);
        let (lambda_t, lambda_s0) = (lambda(alpha_t, sigma_t), lambda(alpha_s0, sigma_s0));
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let (h, h_0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        if h == 0.0 {
            // A zero-length step (the last Karras or beta sigma equals a sigma_min final sigma):
            // the sample stays. diffusers divides 0 by 0 here with the heun solver type.
            return sample.shallow_clone();
        }
        let r0 = h_0 / h;
        let d1 = (m0 - m1) * f64::from(1.0 / r0);
        match (noise, self.solver_type) {
            (None, solver) => {
                let ratio = sample * f64::from(sigma_t / sigma_s0);
                let c0 = alpha_t * (exp(-h) - 1.0);
                let base = ratio - m0 * f64::from(c0);
                match solver {
                    SolverType::Midpoint => base - d1 * f64::from(0.5 * c0),
                    SolverType::Heun => {
                        base + d1 * f64::from(alpha_t * ((exp(-h) - 1.0) / h + 1.0))
                    }
                }
            }
            (Some(noise), solver) => {
                let decay = exp(-2.0 * h);
                let c0 = alpha_t * (1.0 - decay);
                let base = sample * f64::from(sigma_t / sigma_s0 * exp(-h)) + m0 * f64::from(c0);
                let with_d1 = match solver {
                    SolverType::Midpoint => base + d1 * f64::from(0.5 * c0),
                    SolverType::Heun => {
                        base + d1 * f64::from(alpha_t * ((1.0 - decay) / (-2.0 * h) + 1.0))
                    }
                };
                with_d1 + noise * f64::from(sigma_t * sqrt(1.0 - decay))
            }
        }
    }
}

/// diffusers' `searchsorted(flip(lambda_t), lambda_min_clipped)`: how many of the smallest
/// log-SNRs fall below the clipping threshold (0 for the default, -inf).
fn clipped_index(alphas_cumprod: &[f32], lambda_min_clipped: f64) -> Result<usize> {
    if lambda_min_clipped == f64::NEG_INFINITY {
        return Ok(0);
    }
    let ac = Tensor::from_slice(alphas_cumprod);
    let lambdas = ac.f_sqrt()?.f_log()? - (ac.neg() + 1.0).f_sqrt()?.f_log()?;
    let lambdas = Vec::<f32>::try_from(&lambdas)?;
    let threshold = lambda_min_clipped as f32;
    let clipped = lambdas.iter().rev().take_while(|&&l| l < threshold).count();
    if clipped >= alphas_cumprod.len() {
        return Err(EngineError::Invalid(format!(
            "lambda_min_clipped {lambda_min_clipped} clips every timestep: lower it in the \
             scheduler config"
        )));
    }
    Ok(clipped)
}

/// DPM-Solver's own timestep spacing (it spaces `steps + 1` points and drops the last).
fn spaced_timesteps(
    config: &SchedulerConfig,
    steps: usize,
    last_timestep: usize,
) -> Result<Vec<i64>> {
    use super::config::TimestepSpacing;
    let train = config.num_train_timesteps;
    let timesteps: Vec<i64> = match config.spacing_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Linspace => {
            let mut t = spacing::linspace(0.0, (last_timestep - 1) as f64, steps + 1);
            t.reverse();
            t.pop();
            t.into_iter().map(|v| v.round_ties_even() as i64).collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            spacing::arange(last_timestep as f64, 0.0, -(train as f64 / steps as f64))
                .into_iter()
                .map(|v| v.round_ties_even() as i64 - 1)
                .collect()
        }
    };
    if let Some(t) = timesteps.iter().find(|&&t| t >= train as i64 || t < 0) {
        return Err(EngineError::Invalid(format!(
            "timestep {t} is outside the {train} training timesteps: lower steps_offset ({}) in \
             the scheduler config",
            config.steps_offset
        )));
    }
    Ok(timesteps)
}

impl Scheduler for DpmSolverMultistep {
    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_alpha_sigma(self.sigmas.get(entry).copied(), original, noise)
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<Vec<f64>> {
        Some(self.sigmas.iter().map(|&s| f64::from(s)).collect())
    }

    /// The SDE variant draws `noise(model_output.size())` at every step, before the update.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let n = self.timesteps.len();
        let short = self.lower_order_final && n < LOWER_ORDER_BELOW;
        let lower_order_final =
            step == n - 1 && (self.euler_at_final || short || self.final_sigma_zero);
        let x0 = self.predict_original(model_output, sample, step);
        let [_, last] = std::mem::take(&mut self.model_outputs);
        self.model_outputs = [last, Some(x0.shallow_clone())];
        let sample = sample.to_kind(Kind::Float);
        let drawn = match self.algorithm {
            Algorithm::SdeDpmSolverPP => Some(noise(&model_output.size()).to_kind(Kind::Float)),
            Algorithm::DpmSolverPP => None,
        };
        let previous = self.model_outputs[0].as_ref();
        let prev = match previous {
            // With solver_order 2, diffusers' `lower_order_second` changes nothing.
            Some(m1) if self.lower_order_nums >= 1 && !lower_order_final => {
                self.second_order(step, &x0, m1, &sample, drawn.as_ref())
            }
            _ => self.first_order(step, &x0, &sample, drawn.as_ref()),
        };
        if self.lower_order_nums < 2 {
            self.lower_order_nums += 1;
        }
        prev.to_kind(model_output.kind())
    }
}
