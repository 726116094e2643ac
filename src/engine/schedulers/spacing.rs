//! Inference timesteps and sigma interpolation, reproducing the numpy (float64) arithmetic of
//! diffusers' `set_timesteps`, quirks included, so that timesteps match it exactly.
use super::config::{SchedulerConfig, TimestepSpacing};
use crate::engine::error::{EngineError, Result};

/// The timesteps for `steps` inference steps, largest first, as float64 values before diffusers
/// casts them (DDIM to int64, Euler to float32). `round_linspace`: DDIM rounds linspace
/// timesteps to integers, Euler keeps the fractions.
///
/// Trailing spacing can yield one timestep more than `steps` (for 61 of 1000, say), because
/// numpy's float `arange` rounds its length up; diffusers keeps that extra step, and so do we.
pub fn timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    steps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let mut t = linspace(0.0, (train_steps - 1) as f64, steps);
            if round_linspace {
                t.iter_mut().for_each(|v| *v = v.round_ties_even());
            }
            t.reverse();
            t
        }
        TimestepSpacing::Leading => {
            let ratio = train_steps / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = train_steps as f64 / steps as f64;
            arange(train_steps as f64, 0.0, -ratio)
                .into_iter()
                .map(|v| v.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// DDIM's and DDPM's int64 timesteps (leading spacing unless the config says otherwise),
/// refused where one falls outside alphas_cumprod as diffusers indexes it (Python-style, so -1,
/// which trailing spacing can give, is the last).
pub(super) fn integer_timesteps(config: &SchedulerConfig, steps: usize) -> Result<Vec<i64>> {
    let train = config.num_train_timesteps;
    let spacing = config.spacing_or(TimestepSpacing::Leading);
    let times: Vec<i64> = timesteps(spacing, train, steps, config.steps_offset, true)
        .iter()
        .map(|&t| t as i64)
        .collect();
    if let Some(t) = times
        .iter()
        .find(|&&t| t >= train as i64 || t < -(train as i64))
    {
        return Err(EngineError::Invalid(format!(
            "timestep {t} is outside the {train} training timesteps: lower steps_offset ({}) in \
             the scheduler config",
            config.steps_offset
        )));
    }
    Ok(times)
}

/// `np.linspace(start, stop, num)` in float64.
pub(super) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// `np.arange(start, stop, step)` for floats: the length is `ceil((stop - start) / step)`, and
/// the values are `start + i * delta` with `delta` recomputed as `(start + step) - start`.
pub(super) fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return Vec::new();
    }
    let len = len as usize;
    let next = start + step;
    let delta = next - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => next,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// `np.interp(x, np.arange(len(fp)), fp)`: fp is float32 data, the arithmetic is float64.
pub fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    let (lo, hi) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    if j as f64 == x {
        return lo;
    }
    let slope = (hi - lo) / 1.0;
    let y = slope * (x - j as f64) + lo;
    if y.is_nan() {
        let y = slope * (x - (j + 1) as f64) + hi;
        return if y.is_nan() && lo == hi { lo } else { y };
    }
    y
}
