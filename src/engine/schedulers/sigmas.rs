//! Sigma schedules: Karras et al. (2022), exponential, and beta (Lee et al. 2024) spacings, the
//! sigma-to-timestep interpolation, and the `set_timesteps` the k-diffusion-style schedulers of
//! diffusers share (LMS, Heun, KDPM2, KDPM2 ancestral, DPM-Solver SDE).
//!
//! diffusers computes these with numpy in float64 on float32 training sigmas; so does this module,
//! including where it narrows to float32, so that timesteps and sigmas agree with it.
use super::betas::alphas_cumprod_unrescaled;
use super::config::{SchedulerConfig, TimestepSpacing};
use super::special::beta_ppf;
use super::{check_steps, spacing, Schedule};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// Karras' rho, as in the paper and in diffusers.
const RHO: f64 = 7.0;
/// The Beta(alpha, beta) distribution of diffusers' beta sigmas.
const BETA_ALPHA: f64 = 0.6;
const BETA_BETA: f64 = 0.6;

/// Which respacing the config asks for, from its `use_*_sigmas` keys (at most one may be set).
pub(crate) fn configured(config: &SchedulerConfig) -> Result<Schedule> {
    let flags = [
        (config.use_karras_sigmas, Schedule::Karras),
        (config.use_exponential_sigmas, Schedule::Exponential),
        (config.use_beta_sigmas, Schedule::Beta),
    ];
    let set: Vec<Schedule> = flags
        .iter()
        .filter(|(flag, _)| *flag == Some(true))
        .map(|(_, s)| *s)
        .collect();
    match set.as_slice() {
        [] => Ok(Schedule::Default),
        [one] => Ok(*one),
        _ => Err(EngineError::Invalid(
            "the scheduler config sets more than one of use_karras_sigmas, \
             use_exponential_sigmas and use_beta_sigmas: keep at most one true"
                .into(),
        )),
    }
}

/// `n` sigmas from `sigma_max` down to `sigma_min` in the given spacing (Default: none, empty).
pub(crate) fn respace(schedule: Schedule, sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    match schedule {
        Schedule::Default => Vec::new(),
        Schedule::Karras => {
            let min_inv_rho = sigma_min.powf(1.0 / RHO);
            let max_inv_rho = sigma_max.powf(1.0 / RHO);
            spacing::linspace(0.0, 1.0, n)
                .into_iter()
                .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(RHO))
                .collect()
        }
        Schedule::Exponential => spacing::linspace(sigma_max.ln(), sigma_min.ln(), n)
            .into_iter()
            .map(f64::exp)
            .collect(),
        Schedule::Beta => spacing::linspace(0.0, 1.0, n)
            .into_iter()
            .map(|x| {
                let ppf = beta_ppf(1.0 - x, BETA_ALPHA, BETA_BETA);
                sigma_min + ppf * (sigma_max - sigma_min)
            })
            .collect(),
    }
}

/// The training sigmas sqrt((1 - ᾱ) / ᾱ) in float32 (libtorch's pow, as diffusers computes
/// them) and their logs (float32, as numpy's `np.log` keeps them).
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let alphas = Tensor::from_slice(alphas_cumprod);
    let sigmas = ((alphas.neg() + 1.0) / &alphas).f_pow_tensor_scalar(0.5)?;
    let sigmas = Vec::<f32>::try_from(&sigmas)?;
    let logs = sigmas.iter().map(|&s| f64::from(s).ln() as f32).collect();
    Ok((sigmas, logs))
}

/// The last index whose log sigma is at most `log_sigma` (0 if none), capped so that it has a
/// right neighbour: numpy's `cumsum(dists >= 0).argmax().clip(max=len - 2)`.
fn low_index(below: impl Iterator<Item = bool>, len: usize) -> usize {
    let mut last = None;
    for (i, b) in below.enumerate() {
        if b {
            last = Some(i);
        }
    }
    last.unwrap_or(0).min(len - 2)
}

/// diffusers' `_sigma_to_t` on a float64 sigma: the fractional training timestep whose
/// interpolated log sigma is `ln(sigma)`.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let low = low_index(
        log_sigmas.iter().map(|&l| log_sigma - f64::from(l) >= 0.0),
        log_sigmas.len(),
    );
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    // numpy subtracts the two float32 neighbours in float32.
    let w = ((f64::from(lo) - log_sigma) / f64::from(lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// The same on a float32 sigma, all in float32: KDPM2 runs `_sigma_to_t` on libtorch tensors
/// for its interpolated sigmas.
pub(crate) fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f32 {
    let log_sigma = (f64::from(sigma.max(1e-10)).ln()) as f32;
    let low = low_index(
        log_sigmas.iter().map(|&l| log_sigma - l >= 0.0),
        log_sigmas.len(),
    );
    let (lo, hi) = (log_sigmas[low], log_sigmas[low + 1]);
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f32 + w * (low + 1) as f32
}

/// What the k-diffusion-style schedulers' `set_timesteps` computes before each adds its own
/// sub-steps: one timestep and one sigma per step (no final zero yet).
pub(crate) struct KSchedule {
    /// Timesteps before the scheduler narrows them (some keep float64, some float32).
    pub timesteps: Vec<f64>,
    /// Sigmas in float64, before the final sigma and the cast to float32.
    pub sigmas: Vec<f64>,
    pub log_sigmas: Vec<f32>,
    pub schedule: Schedule,
}

/// How a k-diffusion-style scheduler differs in `set_timesteps`.
pub(crate) struct KOptions {
    /// DPM-Solver SDE spaces timesteps in float64; the others narrow them to float32 first.
    pub float64_timesteps: bool,
    /// KDPM2 and KDPM2 ancestral round the timesteps of Karras sigmas.
    pub round_karras_timesteps: bool,
}

/// Spaced training timesteps, their interpolated sigmas, and the config's respacing.
///
/// These schedulers have no `rescale_betas_zero_snr` in diffusers, which drops the key; so
/// does this.
pub(crate) fn k_schedule(
    config: &SchedulerConfig,
    steps: usize,
    options: KOptions,
) -> Result<KSchedule> {
    config.validate()?;
    check_steps(config, steps)?;
    let schedule = configured(config)?;
    let (train, log_sigmas) = train_sigmas(&alphas_cumprod_unrescaled(config)?)?;
    let spaced = spacing::timesteps(
        config.spacing_or(TimestepSpacing::Linspace),
        config.num_train_timesteps,
        steps,
        config.steps_offset,
        false,
    );
    let timesteps: Vec<f64> = if options.float64_timesteps {
        spaced
    } else {
        spaced.into_iter().map(|t| f64::from(t as f32)).collect()
    };
    let interpolated: Vec<f64> = timesteps
        .iter()
        .map(|&t| spacing::interp(t, &train))
        .collect();
    if schedule == Schedule::Default {
        return Ok(KSchedule {
            timesteps,
            sigmas: interpolated,
            log_sigmas,
            schedule,
        });
    }
    let (sigma_min, sigma_max) = match (interpolated.last(), interpolated.first()) {
        (Some(&min), Some(&max)) => (min, max),
        _ => {
            return Err(EngineError::Invalid(
                "no timesteps to respace: use at least one step".into(),
            ))
        }
    };
    let sigmas = respace(schedule, sigma_min, sigma_max, timesteps.len());
    let round = options.round_karras_timesteps && schedule == Schedule::Karras;
    let timesteps = sigmas
        .iter()
        .map(|&s| {
            let t = sigma_to_t(s, &log_sigmas);
            if round {
                t.round_ties_even()
            } else {
                t
            }
        })
        .collect();
    Ok(KSchedule {
        timesteps,
        sigmas,
        log_sigmas,
        schedule,
    })
}

/// `sigmas` as float32 with a final zero appended, as these schedulers store them.
pub(crate) fn with_final_zero(sigmas: &[f64]) -> Vec<f32> {
    sigmas
        .iter()
        .map(|&s| s as f32)
        .chain(std::iter::once(0.0))
        .collect()
}

/// `init_noise_sigma` of the k-diffusion-style schedulers: the largest sigma, or
/// sqrt(max² + 1) with leading spacing (all in float32, as diffusers' tensors).
pub(crate) fn init_noise_sigma(sigmas: &[f32], config: &SchedulerConfig) -> f64 {
    use super::scalar::{sqrt, square};
    let max = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    f64::from(match config.spacing_or(TimestepSpacing::Linspace) {
        TimestepSpacing::Leading => sqrt(square(max) + 1.0),
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respacings_run_from_sigma_max_to_sigma_min() {
        for schedule in [Schedule::Karras, Schedule::Exponential, Schedule::Beta] {
            let s = respace(schedule, 0.03, 14.6, 10);
            assert_eq!(s.len(), 10);
            assert!((s[0] - 14.6).abs() < 1e-12, "{schedule:?}: {s:?}");
            assert!((s[9] - 0.03).abs() < 1e-12, "{schedule:?}: {s:?}");
            assert!(s.windows(2).all(|w| w[0] > w[1]), "{schedule:?}: {s:?}");
        }
        assert!(respace(Schedule::Default, 0.03, 14.6, 10).is_empty());
    }

    #[test]
    fn sigma_to_t_inverts_the_training_sigmas() {
        let logs: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 2.0).collect();
        // Exactly on a training sigma, halfway between two, and beyond both ends.
        assert_eq!(sigma_to_t(f64::from(logs[3]).exp(), &logs), 3.0);
        let mid = (f64::from(logs[3]) + 0.25).exp();
        assert!((sigma_to_t(mid, &logs) - 3.5).abs() < 1e-12);
        assert_eq!(sigma_to_t(1e-6, &logs), 0.0);
        assert_eq!(sigma_to_t(1e6, &logs), 9.0);
        assert!((f64::from(sigma_to_t_f32(mid as f32, &logs)) - 3.5).abs() < 1e-5);
    }
}
