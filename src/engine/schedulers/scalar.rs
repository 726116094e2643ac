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
