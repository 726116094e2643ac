//! Timesteps and sigmas of diffusers' multistep solvers (UniPC, DEIS), reproducing the numpy
//! float64 arithmetic of their `set_timesteps`. The respacings themselves (Karras, exponential,
//! beta) and the sigma-to-timestep interpolation are the k-diffusion samplers' (sigmas.rs); what
//! differs here is the timestep spacing, the range a respacing spans and the integer timesteps.
use super::config::{SchedulerConfig, TimestepSpacing};
use super::sigmas::{configured, respace, sigma_to_t};
use super::{spacing, Schedule};
use crate::engine::error::{EngineError, Result};

/// The respacing the config asks for (its `use_*_sigmas` flags); `sampler` names the sampler
/// in errors.
pub(crate) fn schedule(config: &SchedulerConfig, sampler: &str) -> Result<Schedule> {
    if config.use_flow_sigmas {
        return Err(EngineError::Invalid(format!(
            "the scheduler config sets use_flow_sigmas (a flow-matching model), which \
             easel's {sampler} does not offer: set it to false or pick another model"
        )));
    }
    configured(config)
}

/// The integer timesteps of the multistep solvers for `steps` steps, largest first. Unlike
/// DDIM's and Euler's, linspace and leading spacing split the range into `steps + 1` parts
/// and drop the last one.
pub(crate) fn timesteps(config: &SchedulerConfig, steps: usize) -> Vec<i64> {
    let train = config.num_train_timesteps;
    let spacing = config.spacing_or(TimestepSpacing::Linspace);
    let times = match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Leading => {
            let mut t = spacing::timesteps(spacing, train, steps + 1, config.steps_offset, true);
            t.pop();
            t
        }
        TimestepSpacing::Trailing => {
            spacing::timesteps(spacing, train, steps, config.steps_offset, false)
        }
    };
    times.iter().map(|&t| t as i64).collect()
}

/// A respaced schedule (not `Default`) of `steps` sigmas, float32, without the final one, and
/// its integer timesteps: Karras timesteps are rounded, the others truncated by the int64 cast.
/// It spans the config's `sigma_min`/`sigma_max`, else the training sigmas' ends.
pub(crate) fn respaced(
    schedule: Schedule,
    config: &SchedulerConfig,
    steps: usize,
    train_sigmas: &[f32],
    log_sigmas: &[f32],
) -> (Vec<i64>, Vec<f32>) {
    let first = train_sigmas.first().copied().unwrap_or(0.0);
    let last = train_sigmas.last().copied().unwrap_or(0.0);
    let min = config.sigma_min.unwrap_or(f64::from(first));
    let max = config.sigma_max.unwrap_or(f64::from(last));
    let sigmas = respace(schedule, min, max, steps);
    let timesteps = sigmas
        .iter()
        .map(|&sigma| {
            let t = sigma_to_t(sigma, log_sigmas);
            if schedule == Schedule::Karras {
                t.round_ties_even() as i64
            } else {
                t as i64
            }
        })
        .collect();
    (timesteps, sigmas.iter().map(|&s| s as f32).collect())
}
