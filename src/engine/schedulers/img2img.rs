//! What img2img and inpainting need from a sampler: where a run that keeps part of an image
//! starts, and the forward process that noises the image to that point. The arithmetic is done
//! on 0-dim tensors of the sample's dtype, as diffusers casts its schedule to it first.
use super::{betas, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::{Device, Kind, Tensor};

/// diffusers' img2img `get_timesteps`: the entry of `timesteps()` a run of `steps` steps at
/// `strength` starts from (`t_start * order`, where `t_start = steps - min(int(steps *
/// strength), steps)`). An entry at or past the end of `timesteps()` leaves nothing to run:
/// [`img2img_begin`] reports that.
pub fn img2img_start(steps: usize, strength: f64, order: usize) -> usize {
    // Python's int() truncates; `as` does too, and maps negatives and NaN to 0.
    let init_timestep = ((steps as f64 * strength) as usize).min(steps);
    steps.saturating_sub(init_timestep) * order
}

/// [`img2img_start`] for `scheduler`, refusing a strength that leaves no step to run.
pub fn img2img_begin(scheduler: &dyn Scheduler, steps: usize, strength: f64) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(EngineError::Invalid(format!(
            "strength {strength}: choose a value between 0 and 1 (1 repaints the whole image)"
        )));
    }
    let begin = img2img_start(steps, strength, scheduler.order());
    if begin >= scheduler.timesteps().len() {
        return Err(EngineError::Invalid(format!(
            "strength {strength} with {steps} steps leaves no step to run (int({steps} * \
             {strength}) is 0): raise the strength or the number of steps"
        )));
    }
    Ok(begin)
}

/// `x` as a 0-dim tensor of `like`'s dtype and device, as diffusers' `.to(dtype=...)` makes it.
fn level(x: f32, like: &Tensor) -> Tensor {
    Tensor::scalar_tensor(f64::from(x), (Kind::Float, Device::Cpu))
        .to_kind(like.kind())
        .to_device(like.device())
}

/// `sqrt(a) * original + sqrt(1 - a) * noise` with `a = alphas_cumprod[t]` (Python indexing:
/// a negative `t` counts from the end), the add_noise of DDIM, DDPM, PNDM, LCM and TCD.
/// Without a timestep (the entry after the last) the original comes back unchanged.
pub(crate) fn by_alpha(
    alphas_cumprod: &[f32],
    t: Option<i64>,
    original: &Tensor,
    noise: &Tensor,
) -> Tensor {
    let Some(alpha) = t.and_then(|t| betas::at(alphas_cumprod, t)) else {
        return original.shallow_clone();
    };
    let alpha = level(alpha, original);
    let sqrt_alpha = alpha.pow_tensor_scalar(0.5);
    let sqrt_beta = (alpha.neg() + 1.0).pow_tensor_scalar(0.5);
    sqrt_alpha * original + sqrt_beta * noise
}

/// `original + noise * sigma`, the add_noise of the Karras-style samplers (Euler, Heun, LMS,
/// DPM2, DPM++ SDE). Past the last sigma the original comes back unchanged.
pub(crate) fn by_sigma(sigma: Option<f32>, original: &Tensor, noise: &Tensor) -> Tensor {
    match sigma {
        Some(sigma) => original + noise * level(sigma, original),
        None => original.shallow_clone(),
    }
}

/// `alpha_t * original + sigma_t * noise` with `alpha_t = 1 / sqrt(sigma² + 1)` and
/// `sigma_t = sigma * alpha_t`, the add_noise of the multistep solvers (DPM++ 2M, UniPC, DEIS).
pub(crate) fn by_alpha_sigma(sigma: Option<f32>, original: &Tensor, noise: &Tensor) -> Tensor {
    let Some(sigma) = sigma else {
        return original.shallow_clone();
    };
    let sigma = level(sigma, original);
    // Python's `1 / x` on a tensor is `x.reciprocal() * 1`.
    let alpha_t = (sigma.pow_tensor_scalar(2.0) + 1.0)
        .pow_tensor_scalar(0.5)
        .reciprocal();
    let sigma_t = &sigma * &alpha_t;
    alpha_t * original + sigma_t * noise
}
