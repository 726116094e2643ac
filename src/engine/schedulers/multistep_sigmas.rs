//! Timesteps and sigmas of diffusers' multistep solvers (UniPC, DEIS), reproducing the numpy
//! float64 arithmetic of their `set_timesteps`, with the Karras, exponential and beta sigma
//! spacings those solvers offer.
//!
//! The spacing math here is private to the multistep solvers for now; where another module
//! offers the same schedules, the two should become one.
use super::config::{SchedulerConfig, TimestepSpacing};
use super::spacing;
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// How the inference sigmas are laid out (the config's `use_*_sigmas` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SigmaSpacing {
    /// The training sigmas at the spaced timesteps.
    Timesteps,
    Karras,
    Exponential,
    Beta,
}

impl SigmaSpacing {
    /// The spacing the config asks for; `sampler` names the sampler in errors.
    pub fn from_config(config: &SchedulerConfig, sampler: &str) -> Result<Self> {
        if config.use_flow_sigmas {
            return Err(EngineError::Invalid(format!(
                "the scheduler config sets use_flow_sigmas (a flow-matching model), which \
                 easel's {sampler} does not offer: set it to false or pick another model"
            )));
        }
        let flags = [
            (config.use_karras_sigmas, Self::Karras),
            (config.use_exponential_sigmas, Self::Exponential),
            (config.use_beta_sigmas, Self::Beta),
        ];
        let set: Vec<Self> = flags
            .iter()
            .filter(|(flag, _)| *flag == Some(true))
            .map(|(_, s)| *s)
            .collect();
        match set.as_slice() {
            [] => Ok(Self::Timesteps),
            [one] => Ok(*one),
            _ => Err(EngineError::Invalid(
                "the scheduler config sets more than one of use_karras_sigmas, \
                 use_exponential_sigmas and use_beta_sigmas: keep one"
                    .into(),
            )),
        }
    }
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

/// The training sigmas `sqrt((1 - ᾱ) / ᾱ)` in float32, with libtorch's kernels as diffusers.
pub(crate) fn train_sigmas(alphas_cumprod: &[f32]) -> Result<Vec<f32>> {
    let alphas = Tensor::from_slice(alphas_cumprod);
    let sigmas = ((alphas.neg() + 1.0) / &alphas).f_pow_tensor_scalar(0.5)?;
    Ok(Vec::<f32>::try_from(&sigmas)?)
}

/// `np.log` of the float32 training sigmas (float32 results).
pub(crate) fn log_sigmas(train_sigmas: &[f32]) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        &Tensor::from_slice(train_sigmas).f_log()?,
    )?)
}

/// The range a converted schedule spans: the config's `sigma_min`/`sigma_max` where the solver
/// reads them, else the smallest and largest training sigma.
pub(crate) fn sigma_range(
    train_sigmas: &[f32],
    config_min: Option<f64>,
    config_max: Option<f64>,
) -> (f64, f64) {
    let first = train_sigmas.first().copied().unwrap_or(0.0);
    let last = train_sigmas.last().copied().unwrap_or(0.0);
    (
        config_min.unwrap_or(f64::from(first)),
        config_max.unwrap_or(f64::from(last)),
    )
}

/// The inference sigmas of a converted spacing (not Timesteps), largest first, in float64.
pub(crate) fn convert(spacing: SigmaSpacing, min: f64, max: f64, steps: usize) -> Vec<f64> {
    match spacing {
        SigmaSpacing::Timesteps => Vec::new(),
        SigmaSpacing::Karras => {
            const RHO: f64 = 7.0;
            let (min_inv, max_inv) = (min.powf(1.0 / RHO), max.powf(1.0 / RHO));
            linspace(0.0, 1.0, steps)
                .into_iter()
                .map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO))
                .collect()
        }
        SigmaSpacing::Exponential => linspace(max.ln(), min.ln(), steps)
            .into_iter()
            .map(f64::exp)
            .collect(),
        SigmaSpacing::Beta => linspace(0.0, 1.0, steps)
            .into_iter()
            .map(|t| min + beta_ppf(1.0 - t, 0.6, 0.6) * (max - min))
            .collect(),
    }
}

/// diffusers' `_sigma_to_t`: the (fractional) training timestep of `sigma`, interpolating
/// linearly in log sigma between the neighbouring training sigmas.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of the cumulative count of training log-sigmas at or below log_sigma.
    let (mut count, mut best, mut low) = (0usize, 0usize, 0usize);
    for (j, &l) in log_sigmas.iter().enumerate() {
        if log_sigma - f64::from(l) >= 0.0 {
            count += 1;
        }
        if count > best {
            best = count;
            low = j;
        }
    }
    let low = low.min(log_sigmas.len().saturating_sub(2));
    let high = low + 1;
    let (lo, hi) = (log_sigmas[low], log_sigmas[high]);
    // `low - high` is float32 arithmetic in numpy; the rest is float64.
    let w = ((f64::from(lo) - log_sigma) / f64::from(lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// float32 transcendental functions with libtorch's kernels, as diffusers computes them on
/// 0-dim tensors (basic arithmetic is IEEE in both and needs no help).
pub(crate) mod f32_ops {
    use tch::{Device, Kind, Tensor};

    fn apply(x: f32, op: impl Fn(&Tensor) -> Tensor) -> f32 {
        let t = Tensor::scalar_tensor(f64::from(x), (Kind::Float, Device::Cpu));
        op(&t).double_value(&[]) as f32
    }

    pub fn ln(x: f32) -> f32 {
        apply(x, Tensor::log)
    }

    pub fn exp(x: f32) -> f32 {
        apply(x, Tensor::exp)
    }

    pub fn expm1(x: f32) -> f32 {
        apply(x, Tensor::expm1)
    }

    /// `x ** 0.5` (diffusers' pow, not sqrt).
    pub fn pow_half(x: f32) -> f32 {
        apply(x, |t| t.pow_tensor_scalar(0.5))
    }

    /// `x.sqrt()`.
    pub fn sqrt(x: f32) -> f32 {
        apply(x, Tensor::sqrt)
    }

    /// diffusers' `_sigma_to_alpha_sigma_t`: alpha = 1 / (sigma² + 1) ** 0.5, sigma_t = sigma * alpha.
    pub fn alpha_sigma(sigma: f32) -> (f32, f32) {
        let alpha = 1.0 / pow_half(sigma * sigma + 1.0);
        (alpha, sigma * alpha)
    }
}

/// `np.linspace(start, stop, num)` in float64.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
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

/// The inverse of the regularized incomplete beta function (scipy's `beta.ppf`), by bisection:
/// slow but exact to double precision, and it runs once per step.
fn beta_ppf(p: f64, a: f64, b: f64) -> f64 {
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularized incomplete beta function I_x(a, b), by its continued fraction.
fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = a * x.ln() + b * (1.0 - x).ln() - ln_beta(a, b);
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function (modified Lentz).
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let clamp = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / clamp(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..1000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / clamp(1.0 + aa * d);
        c = clamp(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / clamp(1.0 + aa * d);
        c = clamp(1.0 + aa / c);
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, accurate to about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_keeps_its_identities() {
        // Γ(1/2) = √π and Γ(x + 1) = x Γ(x), on both sides of the reflection.
        let sqrt_pi = std::f64::consts::PI.sqrt();
        assert!((ln_gamma(0.5) - sqrt_pi.ln()).abs() < 1e-14);
        for x in [0.1, 0.3, 0.6, 1.2, 2.5, 7.0] {
            let step = ln_gamma(x + 1.0) - ln_gamma(x) - f64::ln(x);
            assert!(step.abs() < 1e-13, "{x}: {step}");
        }
    }

    #[test]
    fn beta_ppf_inverts_the_cdf_and_is_symmetric() {
        for p in [0.001, 0.1, 0.25, 0.5, 0.8, 0.999] {
            let x = beta_ppf(p, 0.6, 0.6);
            assert!((incomplete_beta(x, 0.6, 0.6) - p).abs() < 1e-13, "{p}");
            // a = b: the distribution is symmetric about 1/2.
            assert!(
                (beta_ppf(1.0 - p, 0.6, 0.6) - (1.0 - x)).abs() < 1e-12,
                "{p}"
            );
        }
        assert!((beta_ppf(0.5, 0.6, 0.6) - 0.5).abs() < 1e-15);
        // a = b = 1 is the uniform distribution.
        assert!((beta_ppf(0.3, 1.0, 1.0) - 0.3).abs() < 1e-13);
    }
}
