//! Which device and number format a render uses.
use super::error::{EngineError, Result};
use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// The user's device choice, before it is resolved against what libtorch sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or(EngineError::UnknownDevice(s.clone())),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => write!(f, "auto"),
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Auto picks the first CUDA device when libtorch sees one.
    pub fn resolve(self) -> Result<Device> {
        let count = if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        };
        match self {
            Self::Auto if count > 0 => Ok(Device::Cuda(0)),
            Self::Auto | Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) if n < count => Ok(Device::Cuda(n)),
            Self::Cuda(n) => Err(EngineError::DeviceUnavailable(format!("cuda:{n}"), count)),
        }
    }
}

/// The user's number-format choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeChoice {
    #[default]
    Auto,
    Fp32,
    Fp16,
    Bf16,
}

impl FromStr for DtypeChoice {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "fp32" | "f32" | "float32" | "float" => Ok(Self::Fp32),
            "fp16" | "f16" | "float16" | "half" => Ok(Self::Fp16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            other => Err(EngineError::UnknownDtype(other.to_string())),
        }
    }
}

impl fmt::Display for DtypeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Bf16 => "bf16",
        })
    }
}

impl DtypeChoice {
    /// Auto: fp16 on CUDA, fp32 on CPU.
    pub fn resolve(self, device: Device) -> Kind {
        match self {
            Self::Auto if device.is_cuda() => Kind::Half,
            Self::Auto | Self::Fp32 => Kind::Float,
            Self::Fp16 => Kind::Half,
            Self::Bf16 => Kind::BFloat16,
        }
    }
}

/// A short name for a resolved dtype, as recipes and metadata record it.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "fp16",
        Kind::BFloat16 => "bf16",
        Kind::Double => "fp64",
        _ => "fp32",
    }
}

/// A short name for a resolved device.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(n) => format!("cuda:{n}"),
        _ => "cpu".to_string(),
    }
}

/// A host tensor copied to `device` without making the host wait: through pinned memory and
/// non-blocking on CUDA. A plain copy from pageable memory blocks until the GPU has finished
/// everything queued before it, which inside the sampling loop would stall every step.
pub fn upload(t: &Tensor, device: Device) -> Tensor {
    if t.device() == device {
        return t.shallow_clone();
    }
    match device {
        Device::Cuda(_) => t
            .f_pin_memory(device)
            .and_then(|pinned| pinned.f_to_device_(device, pinned.kind(), true, false))
            .unwrap_or_else(|_| t.to_device(device)),
        _ => t.to_device(device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_dtype_follows_device() {
        assert_eq!(DtypeChoice::Auto.resolve(Device::Cpu), Kind::Float);
        assert_eq!(DtypeChoice::Auto.resolve(Device::Cuda(0)), Kind::Half);
        assert_eq!(
            "bf16".parse::<DtypeChoice>().unwrap().resolve(Device::Cpu),
            Kind::BFloat16
        );
    }
}
