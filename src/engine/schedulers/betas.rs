//! The training noise schedule (betas and their cumulative alphas), computed with the same
//! libtorch float32 ops diffusers uses so that the numbers agree bit for bit.
use super::config::{BetaSchedule, SchedulerConfig};
use crate::engine::error::Result;
use tch::{Device, Kind, Tensor};

const F32_CPU: (Kind, Device) = (Kind::Float, Device::Cpu);

/// `alphas_cumprod` of the config's schedule, as diffusers' schedulers hold it (float32).
pub fn alphas_cumprod(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let mut betas = betas(config)?;
    if config.rescale_betas_zero_snr {
        betas = rescale_zero_terminal_snr(&betas)?;
    }
    let alphas = betas.neg() + 1.0;
    // libtorch's CPU cumprod accumulates float32 in double; doing it here keeps that.
    let cumprod = alphas.f_cumprod(0, None::<Kind>)?;
    Ok(Vec::<f32>::try_from(&cumprod)?)
}

/// `alphas_cumprod` for the schedulers whose diffusers class has no `rescale_betas_zero_snr`
/// (PNDM, DEIS, the k-diffusion samplers) and so drops the key.
pub fn alphas_cumprod_unrescaled(config: &SchedulerConfig) -> Result<Vec<f32>> {
    alphas_cumprod(&SchedulerConfig {
        rescale_betas_zero_snr: false,
        ..config.clone()
    })
}

/// `alphas_cumprod` for the sigma-based schedulers that rescale (Euler, UniPC): after a zero
/// terminal SNR rescale diffusers sets the last to 2^-24, keeping its sigma finite (about 4096).
pub fn alphas_cumprod_finite(config: &SchedulerConfig) -> Result<Vec<f32>> {
    let mut alphas = alphas_cumprod(config)?;
    if config.rescale_betas_zero_snr {
        if let Some(last) = alphas.last_mut() {
            *last = 2f32.powi(-24);
        }
    }
    Ok(alphas)
}

/// ᾱ at training timestep `t`, indexed as diffusers' tensors are (-1 is the last); None
/// outside the table.
pub fn at(alphas_cumprod: &[f32], t: i64) -> Option<f32> {
    let n = alphas_cumprod.len() as i64;
    let i = if t < 0 { n + t } else { t };
    usize::try_from(i)
        .ok()
        .and_then(|i| alphas_cumprod.get(i).copied())
}

/// The ᾱ a step past timestep 0 lands on: 1 with `set_alpha_to_one` (`default` where the config
/// leaves it out, as each class has its own), else ᾱ at timestep 0.
pub fn final_alpha_cumprod(config: &SchedulerConfig, alphas_cumprod: &[f32], default: bool) -> f32 {
    match alphas_cumprod.first() {
        Some(&first) if !config.alpha_to_one_or(default) => first,
        _ => 1.0,
    }
}

fn betas(config: &SchedulerConfig) -> Result<Tensor> {
    let n = config.num_train_timesteps as i64;
    if let Some(trained) = &config.trained_betas {
        let values: Vec<f32> = trained.iter().map(|&b| b as f32).collect();
        return Ok(Tensor::from_slice(&values));
    }
    Ok(match config.beta_schedule {
        BetaSchedule::Linear => Tensor::f_linspace(config.beta_start, config.beta_end, n, F32_CPU)?,
        BetaSchedule::ScaledLinear => Tensor::f_linspace(
            // Python's `x ** 0.5` is C pow(), which `powf` calls too.
            config.beta_start.powf(0.5),
            config.beta_end.powf(0.5),
            n,
            F32_CPU,
        )?
        .f_pow_tensor_scalar(2)?,
        BetaSchedule::SquaredcosCapV2 => {
            Tensor::from_slice(&cosine_betas(config.num_train_timesteps))
        }
    })
}

/// diffusers' `betas_for_alpha_bar` with the cosine transform: computed in double, kept in float.
fn cosine_betas(n: usize) -> Vec<f32> {
    const MAX_BETA: f64 = 0.999;
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powf(2.0)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(MAX_BETA) as f32
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, algorithm 1), as diffusers does.
fn rescale_zero_terminal_snr(betas: &Tensor) -> Result<Tensor> {
    let alphas = betas.neg() + 1.0;
    let sqrt = alphas.f_cumprod(0, None::<Kind>)?.f_sqrt()?;
    let first = sqrt.f_double_value(&[0])? as f32;
    let last = sqrt.f_double_value(&[-1])? as f32;
    let shifted = sqrt - f64::from(last);
    let scaled = shifted * f64::from(first / (first - last));
    let alphas_bar = scaled.f_pow_tensor_scalar(2)?;
    let n = alphas_bar.size()[0];
    let ratios = alphas_bar.f_slice(0, 1, n, 1)? / alphas_bar.f_slice(0, 0, n - 1, 1)?;
    let alphas = Tensor::f_cat(&[alphas_bar.f_slice(0, 0, 1, 1)?, ratios], 0)?;
    Ok(alphas.neg() + 1.0)
}
