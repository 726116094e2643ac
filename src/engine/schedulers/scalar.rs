//! float32 scalar math done the way diffusers does it: on 0-dim libtorch tensors. libtorch's
//! `pow` and `log` are not always correctly rounded, so Rust's `f32::sqrt` can differ from
//! diffusers' `x ** 0.5` in the last bit; these helpers use the same kernels instead.
use tch::{Device, Kind, Tensor};

fn zero_dim(x: f32) -> Tensor {
    Tensor::scalar_tensor(f64::from(x), (Kind::Float, Device::Cpu))
}

fn value(t: &Tensor) -> f32 {
    t.double_value(&[]) as f32
}

/// `x ** exponent` on a float32 tensor.
pub fn pow(x: f32, exponent: f64) -> f32 {
    value(&zero_dim(x).pow_tensor_scalar(exponent))
}

/// `x ** 0.5`.
pub fn sqrt(x: f32) -> f32 {
    pow(x, 0.5)
}

/// `x ** 2`.
pub fn square(x: f32) -> f32 {
    pow(x, 2.0)
}

/// `x.log()`.
pub fn ln(x: f32) -> f32 {
    value(&zero_dim(x).log())
}

/// `x.exp()`.
pub fn exp(x: f32) -> f32 {
    value(&zero_dim(x).exp())
}

/// `x.expm1()`.
pub fn expm1(x: f32) -> f32 {
    value(&zero_dim(x).expm1())
}

/// `x.sqrt()`: diffusers writes some formulas with it and others with `** 0.5`, whose kernels
/// can differ in the last bit.
pub fn tensor_sqrt(x: f32) -> f32 {
    value(&zero_dim(x).sqrt())
}

/// diffusers' `_sigma_to_alpha_sigma_t`: alpha_t = 1 / (sigma² + 1) ** 0.5, sigma_t = sigma * alpha_t.
pub fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / sqrt(square(sigma) + 1.0);
    (alpha, sigma * alpha)
}
