//! Samplers behind one trait, configured from a model's `scheduler/scheduler_config.json`.
//!
//! Each sampler reproduces its diffusers class (0.42) number for number: the same timesteps and
//! sigmas, and the same float32 step arithmetic, so easel's images match diffusers' for a seed.
mod betas;
pub mod config;
pub mod ddim;
pub mod euler;
pub mod euler_ancestral;
mod img2img;
mod scalar;
mod spacing;
// Samplers and schedules of the samplers-a branch.
mod brownian;
pub mod ddpm;
pub mod dpm_multistep;
pub mod dpmpp_sde;
pub mod heun;
pub mod kdpm2;
pub mod kdpm2_ancestral;
pub mod lms;
pub mod pndm;
pub mod schedule;
mod sigmas;
mod special;
pub mod torch_randn;

pub use config::SchedulerConfig;
pub use ddim::Ddim;
pub use euler::EulerDiscrete;
pub use euler_ancestral::EulerAncestralDiscrete;
pub use img2img::{img2img_begin, img2img_start};
pub use schedule::{display_name, parse_a1111, SamplerChoice, SamplerOptions, Schedule};

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

/// The scheduler for `kind`, set up for `steps` inference steps, with the model's scheduler
/// `config` as `options` amend it (a schedule, a timestep spacing).
///
/// The pipeline runs one model evaluation per entry of `timesteps()`. That is usually `steps`
/// entries, but diffusers' trailing spacing gives one more for some counts (61 of 1000, say),
/// and second-order samplers (heun, dpm2, dpm2_a, dpmpp_sde) evaluate the model twice per step
/// but the last: 2 * steps - 1 entries, as diffusers' `timesteps` lists them.
pub fn build(
    kind: SamplerKind,
    options: &SamplerOptions,
    config: &SchedulerConfig,
    steps: usize,
) -> Result<Box<dyn Scheduler>> {
    let amended = options.apply(kind, config)?;
    let config = &amended;
    Ok(match kind {
        SamplerKind::Ddim => Box::new(Ddim::new(config, steps)?),
        SamplerKind::Euler => Box::new(EulerDiscrete::new(config, steps)?),
        SamplerKind::EulerAncestral => Box::new(EulerAncestralDiscrete::new(config, steps)?),
        // samplers-a
        SamplerKind::Ddpm => Box::new(ddpm::Ddpm::new(config, steps)?),
        SamplerKind::Pndm => Box::new(pndm::Plms::new(config, steps)?),
        SamplerKind::Lms => Box::new(lms::LmsDiscrete::new(config, steps)?),
        SamplerKind::Heun => Box::new(heun::HeunDiscrete::new(config, steps)?),
        SamplerKind::Dpm2 => Box::new(kdpm2::Kdpm2Discrete::new(config, steps)?),
        SamplerKind::Dpm2Ancestral => {
            Box::new(kdpm2_ancestral::Kdpm2AncestralDiscrete::new(config, steps)?)
        }
        SamplerKind::DpmPP2M => Box::new(dpm_multistep::DpmSolverMultistep::new(
            config,
            steps,
            dpm_multistep::Algorithm::DpmSolverPP,
        )?),
        SamplerKind::DpmPP2MSde => Box::new(dpm_multistep::DpmSolverMultistep::new(
            config,
            steps,
            dpm_multistep::Algorithm::SdeDpmSolverPP,
        )?),
        SamplerKind::DpmPPSde => Box::new(dpmpp_sde::DpmSolverSde::new(
            config,
            steps,
            options.noise_sampler_seed,
        )?),
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

    /// How much the initial Gaussian noise is scaled (diffusers' `init_noise_sigma`): 1 for
    /// the samplers that work on alphas; the sigma-based ones override it.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// The input the model sees at step `step` (diffusers' `scale_model_input`): the sample
    /// itself for alpha-based samplers; sigma-based ones scale it.
    fn scale_model_input(&self, sample: &Tensor, _step: usize) -> Tensor {
        sample.shallow_clone()
    }

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

    /// diffusers' `scheduler.order`: model evaluations per step (2 for heun, dpm2, dpm2_a and
    /// dpmpp_sde, whose `timesteps()` list each step but the last twice).
    fn order(&self) -> usize {
        1
    }

    /// img2img: the run starts at entry `begin` of `timesteps()` (diffusers' `set_begin_index`,
    /// which img2img pipelines call with `t_start * order`). Later `scale_model_input`/`step`
    /// calls pass absolute entry indices begin, begin+1, ...
    ///
    /// easel's samplers keep their state (past model outputs, the first half of a two-stage
    /// step, step counters) empty until the first `step` and index everything by the entry it
    /// is given, as diffusers' step_index is after set_begin_index; so none needs more than
    /// this call to start later (hence the no-op default), but a pipeline must make it, as
    /// diffusers' do.
    fn set_begin_index(&mut self, _begin: usize) {}

    /// diffusers' `add_noise(original, noise, timesteps[entry])` as this sampler computes it
    /// (from alphas_cumprod, or from the sigma of that entry for the Karras-style samplers).
    /// `entry == timesteps().len()` (after the last step) gives the final noise level: the
    /// last sigma, or none at all (the original) for samplers without sigmas.
    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor;

    /// The noise levels, as diffusers' `scheduler.sigmas` holds them (one per model evaluation
    /// and the final one), for samplers that have them.
    fn sigmas(&self) -> Option<Vec<f64>> {
        None
    }
}

/// The samplers easel offers, by the names users type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    Ddim,
    Euler,
    #[serde(rename = "euler_a")]
    EulerAncestral,
    // samplers-a
    Ddpm,
    Pndm,
    Lms,
    Heun,
    Dpm2,
    #[serde(rename = "dpm2_a")]
    Dpm2Ancestral,
    #[serde(rename = "dpmpp_2m")]
    DpmPP2M,
    #[serde(rename = "dpmpp_2m_sde")]
    DpmPP2MSde,
    #[serde(rename = "dpmpp_sde")]
    DpmPPSde,
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
        // samplers-a
        Self::Ddpm,
        Self::Pndm,
        Self::Lms,
        Self::Heun,
        Self::Dpm2,
        Self::Dpm2Ancestral,
        Self::DpmPP2M,
        Self::DpmPP2MSde,
        Self::DpmPPSde,
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
            // samplers-a
            Self::Ddpm => "ddpm",
            Self::Pndm => "pndm",
            Self::Lms => "lms",
            Self::Heun => "heun",
            Self::Dpm2 => "dpm2",
            Self::Dpm2Ancestral => "dpm2_a",
            Self::DpmPP2M => "dpmpp_2m",
            Self::DpmPP2MSde => "dpmpp_2m_sde",
            Self::DpmPPSde => "dpmpp_sde",
            Self::UniPc => "unipc",
            Self::Deis => "deis",
            Self::Lcm => "lcm",
            Self::Tcd => "tcd",
        }
    }

    /// AUTOMATIC1111's display name (with its default schedule), written into PNG metadata;
    /// `schedulers::display_name` adds a schedule ("DPM++ 2M Karras").
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Ddim => "DDIM",
            Self::Euler => "Euler",
            Self::EulerAncestral => "Euler a",
            // samplers-a
            Self::Ddpm => "DDPM",
            Self::Pndm => "PLMS",
            Self::Lms => "LMS",
            Self::Heun => "Heun",
            Self::Dpm2 => "DPM2",
            Self::Dpm2Ancestral => "DPM2 a",
            Self::DpmPP2M => "DPM++ 2M",
            Self::DpmPP2MSde => "DPM++ 2M SDE",
            Self::DpmPPSde => "DPM++ SDE",
            Self::UniPc => "UniPC",
            Self::Deis => "DEIS",
            Self::Lcm => "LCM",
            Self::Tcd => "TCD",
        }
    }

    /// The schedules besides `Default` that this sampler takes (those its diffusers scheduler
    /// offers as `use_karras_sigmas` and its siblings). Others
    /// are refused rather than ignored.
    pub fn schedules(self) -> &'static [Schedule] {
        const RESPACED: &[Schedule] = &[Schedule::Karras, Schedule::Exponential, Schedule::Beta];
        match self {
            // diffusers' EulerAncestralDiscreteScheduler has no use_*_sigmas.
            Self::Ddim | Self::EulerAncestral => &[],
            Self::Euler => RESPACED,
            // samplers-a
            Self::Ddpm | Self::Pndm => &[],
            Self::Lms
            | Self::Heun
            | Self::Dpm2
            | Self::Dpm2Ancestral
            | Self::DpmPP2M
            | Self::DpmPP2MSde
            | Self::DpmPPSde => RESPACED,
            // samplers-b: UniPC and DEIS read use_*_sigmas; LCM and TCD have no such keys.
            Self::UniPc | Self::Deis => RESPACED,
            Self::Lcm | Self::Tcd => &[],
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
