//! Seeded noise drawn exactly as diffusers draws it with `torch.Generator("cpu").manual_seed(seed)`.
//!
//! tch exposes only libtorch's global CPU generator, so a render holds this lock from seeding to
//! its last draw: renders in one process never interleave their draws, and a seed always gives
//! the same numbers.
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

/// The global CPU generator, seeded and held for one render.
pub struct SeededNoise {
    _held: MutexGuard<'static, ()>,
    kind: Kind,
    device: Device,
}

impl SeededNoise {
    /// Seeds the generator; draws are made in `kind` on the CPU (as diffusers' `randn_tensor`
    /// does with a CPU generator) and then moved to `device`.
    pub fn new(seed: u64, kind: Kind, device: Device) -> Self {
        // A panic elsewhere while holding the lock leaves no broken state behind: reseeding resets it.
        let held = GLOBAL_GENERATOR
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tch::manual_seed(seed as i64);
        Self {
            _held: held,
            kind,
            device,
        }
    }

    /// Standard normal noise of `shape`.
    pub fn randn(&self, shape: &[i64]) -> Tensor {
        super::device::upload(&Tensor::randn(shape, (self.kind, Device::Cpu)), self.device)
    }
}
