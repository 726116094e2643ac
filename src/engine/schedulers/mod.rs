//! Samplers behind one trait, configured from a model's `scheduler/scheduler_config.json`.
//!
//! Each sampler reproduces its diffusers class (0.42) number for number: the same timesteps and
//! sigmas, and the same float32 step arithmetic, so easel's images match diffusers' for a seed.
mod betas;
pub mod config;
pub mod ddim;
pub mod euler;
pub mod euler_ancestral;
mod scalar;
mod spacing;

pub use config::SchedulerConfig;
pub use ddim::Ddim;
pub use euler::EulerDiscrete;
pub use euler_ancestral::EulerAncestralDiscrete;

// UniPC, DEIS, LCM and TCD.
pub mod deis;
pub mod lcm;
mod multistep_sigmas;
pub mod tcd;
pub mod unipc;
pub use deis::DeisMultistep;
pub use lcm::Lcm;
pub use tcd::Tcd;
pub use unipc::UniPcMultistep;

use crate::engine::error::{EngineError, Result};
use tch::Tensor;

/// The scheduler for `kind`, set up for `steps` inference steps.
///
/// The pipeline runs one model evaluation per entry of `timesteps()`. That is usually `steps`
/// entries, but diffusers' trailing spacing gives one more for some counts (61 of 1000, say),
/// and easel keeps that to stay identical.
pub fn build(
    kind: SamplerKind,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SamplerKind::Ddim => Box::new(Ddim::new(config, steps)?),
        SamplerKind::Euler => Box::new(EulerDiscrete::new(config, steps)?),
        SamplerKind::EulerAncestral => Box::new(EulerAncestralDiscrete::new(config, steps)?),
        SamplerKind::UniPc => Box::new(UniPcMultistep::new(config, steps)?),
        SamplerKind::Deis => Box::new(DeisMultistep::new(config, steps)?),
        SamplerKind::Lcm => Box::new(Lcm::new(config, steps)?),
        SamplerKind::Tcd => Box::new(Tcd::new(config, steps)?),
    })
}

/// Step counts every scheduler accepts: 1 up to the number of training timesteps.
fn check_steps(config: &SchedulerConfig, steps: usize) -> Result<()> {
    if steps == 0 || steps > config.num_train_timesteps {
        return Err(EngineError::Invalid(format!(
            "{steps} steps: choose between 1 and {} (the model's training timesteps)",
            config.num_train_timesteps
        )));
    }
    Ok(())
}

/// One denoising schedule, set up for a number of steps.
pub trait Scheduler: Send {
    /// The model timesteps, one per step, in the order the pipeline uses them.
    fn timesteps(&self) -> &[f64];

    /// How much the initial Gaussian noise is scaled (diffusers' `init_noise_sigma`).
    fn init_noise_sigma(&self) -> f64;

    /// The input the model sees at step `step` (diffusers' `scale_model_input`).
    fn scale_model_input(&self, sample: &Tensor, step: usize) -> Tensor;

    /// One step from `sample` given the model's output at step `step`. `noise(shape)` draws
    /// standard normal noise for ancestral samplers: the pipeline decides the generator, dtype
    /// and device, so draws happen in the same order and shapes as in diffusers.
    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor;
}

/// The samplers easel offers, by the names users type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Euler,
    #[serde(rename = "euler_a")]
    EulerAncestral,
    #[serde(rename = "unipc")]
    UniPc,
    Deis,
    Lcm,
    Tcd,
}

impl SamplerKind {
    pub const ALL: &'static [SamplerKind] = &[
        Self::Ddim,
        Self::Euler,
        Self::EulerAncestral,
        Self::UniPc,
        Self::Deis,
        Self::Lcm,
        Self::Tcd,
    ];

    /// easel's own name, as `--sampler` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler_a",
            Self::UniPc => "unipc",
            Self::Deis => "deis",
            Self::Lcm => "lcm",
            Self::Tcd => "tcd",
        }
    }

    /// AUTOMATIC1111's display name, written into PNG metadata.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Euler => "Euler",
            Self::EulerAncestral => "Euler a",
            Self::UniPc => "UniPC",
            Self::Deis => "DEIS",
            Self::Lcm => "LCM",
            Self::Tcd => "TCD",
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SamplerKind {
    type Err = crate::engine::EngineError;

    /// Takes easel's names and AUTOMATIC1111's display names, ignoring case, spaces and dashes.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let key: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect();
        Self::ALL
            .iter()
            .copied()
            .find(|k| {
                let name: String = k.name().replace('_', "");
                let display: String = k.display_name().replace(' ', "").to_lowercase();
                key == name || key == display
            })
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                crate::engine::EngineError::Invalid(format!(
                    "unknown sampler {s:?}: choose one of {}",
                    names.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::SamplerKind;

    #[test]
    fn sampler_names_and_aliases() {
        for k in SamplerKind::ALL {
            assert_eq!(k.name().parse::<SamplerKind>().unwrap(), *k);
            assert_eq!(k.display_name().parse::<SamplerKind>().unwrap(), *k);
        }
        assert_eq!(
            "Euler a".parse::<SamplerKind>().unwrap(),
            SamplerKind::EulerAncestral
        );
        assert_eq!(
            "EULER-A".parse::<SamplerKind>().unwrap(),
            SamplerKind::EulerAncestral
        );
        let err = "dpm9".parse::<SamplerKind>().unwrap_err().to_string();
        assert!(err.contains("ddim, euler, euler_a"), "{err}");
    }
}
