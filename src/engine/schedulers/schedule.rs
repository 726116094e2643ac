//! Sigma schedules and timestep spacings chosen over the model's scheduler config, and
//! AUTOMATIC1111's display names, which fold a schedule into the sampler's name.
use super::config::{SchedulerConfig, TimestepSpacing};
use super::SamplerKind;
use crate::engine::error::{EngineError, Result};
use serde::{Deserialize, Serialize};

/// How the noise levels of a run are spaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// What the model's scheduler config says (usually the training schedule's spacing).
    #[default]
    Default,
    /// Karras et al. (2022), rho = 7: diffusers' `use_karras_sigmas`.
    Karras,
    /// Evenly spaced in log sigma: `use_exponential_sigmas`.
    Exponential,
    /// Beta(0.6, 0.6) quantiles (Lee et al. 2024): `use_beta_sigmas`.
    Beta,
}

impl Schedule {
    pub const ALL: &'static [Schedule] = &[
        Schedule::Default,
        Schedule::Karras,
        Schedule::Exponential,
        Schedule::Beta,
    ];

    /// easel's name, as `--schedule` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Karras => "karras",
            Self::Exponential => "exponential",
            Self::Beta => "beta",
        }
    }

    /// AUTOMATIC1111's "Schedule type" label ("Automatic" is its name for the default).
    pub fn a1111_label(self) -> &'static str {
        match self {
            Self::Default => "Automatic",
            Self::Karras => "Karras",
            Self::Exponential => "Exponential",
            Self::Beta => "Beta",
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Schedule {
    type Err = EngineError;

    /// easel's names and AUTOMATIC1111's labels, ignoring case.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let key = s.trim().to_lowercase();
        Self::ALL
            .iter()
            .copied()
            .find(|k| key == k.name() || key == k.a1111_label().to_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                EngineError::Invalid(format!(
                    "unknown schedule {s:?}: choose one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// What a render asks of its sampler beyond the model's scheduler config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SamplerOptions {
    /// `Default` keeps the config's own `use_*_sigmas` keys.
    pub schedule: Schedule,
    /// Overrides the config's `timestep_spacing`.
    pub timestep_spacing: Option<TimestepSpacing>,
    /// dpmpp_sde's Brownian-tree seed when the config sets no `noise_sampler_seed` (the pipeline
    /// passes the render's seed, so a seed reproduces the image).
    pub noise_sampler_seed: Option<u64>,
}

impl SamplerOptions {
    /// The config with these options written into it, as diffusers would be configured
    /// (`from_config(config, use_karras_sigmas=True, timestep_spacing=...)`). A schedule the
    /// sampler's diffusers class does not offer is refused, naming the samplers that take it.
    pub(crate) fn apply(
        &self,
        kind: SamplerKind,
        config: &SchedulerConfig,
    ) -> Result<SchedulerConfig> {
        let mut config = config.clone();
        if let Some(spacing) = self.timestep_spacing {
            config.timestep_spacing = Some(spacing);
        }
        if self.schedule == Schedule::Default {
            return Ok(config);
        }
        if kind == SamplerKind::EulerAncestral {
            return Err(EngineError::Invalid(format!(
                "the euler_a sampler does not take the {schedule} schedule (diffusers' Euler \
                 ancestral has no such option): use --schedule default, or euler or dpmpp_2m \
                 with {schedule}",
                schedule = self.schedule
            )));
        }
        if !kind.schedules().contains(&self.schedule) {
            let takers: Vec<&str> = SamplerKind::ALL
                .iter()
                .filter(|k| k.schedules().contains(&self.schedule))
                .map(|k| k.name())
                .collect();
            return Err(EngineError::Invalid(format!(
                "the {kind} sampler does not take the {schedule} schedule: use --schedule \
                 default, or one of {takers} with {schedule}",
                schedule = self.schedule,
                takers = takers.join(", ")
            )));
        }
        config.use_karras_sigmas = Some(self.schedule == Schedule::Karras);
        config.use_exponential_sigmas = Some(self.schedule == Schedule::Exponential);
        config.use_beta_sigmas = Some(self.schedule == Schedule::Beta);
        Ok(config)
    }
}

/// AUTOMATIC1111's name for a sampler and schedule, as written in PNG metadata: the sampler's
/// display name, followed by the schedule's label unless it is the default ("DPM++ 2M Karras").
/// AUTOMATIC1111 (1.9 and later) reads such names back into a sampler and a schedule type.
pub fn display_name(kind: SamplerKind, schedule: Schedule) -> String {
    match schedule {
        Schedule::Default => kind.display_name().to_string(),
        other => format!("{} {}", kind.display_name(), other.a1111_label()),
    }
}

/// Reads a sampler name as AUTOMATIC1111 writes it, where a trailing schedule label ("Karras",
/// "Exponential", "Beta", "Automatic") names the schedule; easel's own names work too.
pub fn parse_a1111(name: &str) -> Result<(SamplerKind, Option<Schedule>)> {
    if let Ok(kind) = name.parse::<SamplerKind>() {
        return Ok((kind, None));
    }
    let trimmed = name.trim();
    for schedule in Schedule::ALL {
        for label in [schedule.a1111_label(), schedule.name()] {
            let Some(stem) = strip_suffix_ignoring_case(trimmed, label) else {
                continue;
            };
            let Some(stem) = stem.strip_suffix([' ', '_', '-']) else {
                continue;
            };
            if let Ok(kind) = stem.parse::<SamplerKind>() {
                return Ok((kind, Some(*schedule)));
            }
        }
    }
    // The plain parse's error lists the names.
    name.parse::<SamplerKind>().map(|kind| (kind, None))
}

/// A sampler as a user names it, AUTOMATIC1111-style names included: "DPM++ 2M Karras" is
/// dpmpp_2m with the Karras schedule implied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerChoice {
    pub kind: SamplerKind,
    /// The schedule the name implies, if it names one.
    pub schedule: Option<Schedule>,
}

impl SamplerChoice {
    /// The schedule to use: `explicit` if given, else the one the name implies. A name and an
    /// explicit schedule that disagree are refused rather than one silently winning.
    pub fn schedule_with(self, explicit: Option<Schedule>) -> Result<Schedule> {
        match (self.schedule, explicit) {
            (Some(implied), Some(given)) if implied != given => Err(EngineError::Invalid(format!(
                "the sampler name {:?} implies the {implied} schedule but the {given} schedule                  was asked for: drop one of them",
                display_name(self.kind, implied)
            ))),
            (implied, given) => Ok(given.or(implied).unwrap_or_default()),
        }
    }
}

impl From<SamplerKind> for SamplerChoice {
    fn from(kind: SamplerKind) -> Self {
        SamplerChoice {
            kind,
            schedule: None,
        }
    }
}

impl PartialEq<SamplerKind> for SamplerChoice {
    fn eq(&self, other: &SamplerKind) -> bool {
        self.kind == *other && self.schedule.is_none()
    }
}

impl std::str::FromStr for SamplerChoice {
    type Err = EngineError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        parse_a1111(s).map(|(kind, schedule)| SamplerChoice { kind, schedule })
    }
}

fn strip_suffix_ignoring_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let (stem, tail) = (text.get(..cut)?, text.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_carry_the_schedule() {
        assert_eq!(
            display_name(SamplerKind::DpmPP2M, Schedule::Karras),
            "DPM++ 2M Karras"
        );
        assert_eq!(
            display_name(SamplerKind::DpmPP2MSde, Schedule::Karras),
            "DPM++ 2M SDE Karras"
        );
        assert_eq!(display_name(SamplerKind::Pndm, Schedule::Default), "PLMS");
        assert_eq!(
            display_name(SamplerKind::Lms, Schedule::Exponential),
            "LMS Exponential"
        );
    }

    #[test]
    fn every_display_name_parses_back() {
        for &kind in SamplerKind::ALL {
            for &schedule in Schedule::ALL {
                let shown = display_name(kind, schedule);
                let expected = (schedule != Schedule::Default).then_some(schedule);
                assert_eq!(parse_a1111(&shown).unwrap(), (kind, expected), "{shown}");
            }
            assert_eq!(parse_a1111(kind.name()).unwrap(), (kind, None));
        }
    }

    #[test]
    fn a1111_names_imply_a_schedule() {
        for (name, kind, schedule) in [
            (
                "DPM++ 2M Karras",
                SamplerKind::DpmPP2M,
                Some(Schedule::Karras),
            ),
            (
                "DPM++ 2M SDE Karras",
                SamplerKind::DpmPP2MSde,
                Some(Schedule::Karras),
            ),
            (
                "DPM++ SDE Karras",
                SamplerKind::DpmPPSde,
                Some(Schedule::Karras),
            ),
            (
                "DPM2 a Karras",
                SamplerKind::Dpm2Ancestral,
                Some(Schedule::Karras),
            ),
            ("LMS Karras", SamplerKind::Lms, Some(Schedule::Karras)),
            (
                "dpmpp_2m_karras",
                SamplerKind::DpmPP2M,
                Some(Schedule::Karras),
            ),
            ("Euler a", SamplerKind::EulerAncestral, None),
            ("DPM++ 2M SDE", SamplerKind::DpmPP2MSde, None),
            ("DPM++ SDE", SamplerKind::DpmPPSde, None),
            ("DPM2", SamplerKind::Dpm2, None),
            ("Heun", SamplerKind::Heun, None),
            ("PLMS", SamplerKind::Pndm, None),
            ("DDPM", SamplerKind::Ddpm, None),
            (
                "DPM++ 2M Automatic",
                SamplerKind::DpmPP2M,
                Some(Schedule::Default),
            ),
        ] {
            assert_eq!(parse_a1111(name).unwrap(), (kind, schedule), "{name}");
        }
        let err = parse_a1111("DPM++ 3M Karras").unwrap_err().to_string();
        assert!(
            err.contains("unknown sampler") && err.contains("dpmpp_2m"),
            "{err}"
        );
    }

    #[test]
    fn a_named_schedule_and_an_explicit_one_must_agree() {
        let choice: SamplerChoice = "DPM++ 2M Karras".parse().unwrap();
        assert_eq!(choice.schedule_with(None).unwrap(), Schedule::Karras);
        assert_eq!(
            choice.schedule_with(Some(Schedule::Karras)).unwrap(),
            Schedule::Karras
        );
        let err = choice
            .schedule_with(Some(Schedule::Beta))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DPM++ 2M Karras") && err.contains("beta"),
            "{err}"
        );
        let plain: SamplerChoice = "dpmpp_2m".parse().unwrap();
        assert_eq!(plain.schedule_with(None).unwrap(), Schedule::Default);
        assert_eq!(
            plain.schedule_with(Some(Schedule::Beta)).unwrap(),
            Schedule::Beta
        );
    }

    #[test]
    fn schedules_parse_from_names_and_labels() {
        for &s in Schedule::ALL {
            assert_eq!(s.name().parse::<Schedule>().unwrap(), s);
            assert_eq!(s.a1111_label().parse::<Schedule>().unwrap(), s);
        }
        let err = "polyexponential"
            .parse::<Schedule>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("default, karras, exponential, beta"), "{err}");
    }

    #[test]
    fn options_write_the_config_keys_or_refuse() {
        let config = SchedulerConfig::default();
        let karras = SamplerOptions {
            schedule: Schedule::Karras,
            timestep_spacing: Some(TimestepSpacing::Trailing),
            noise_sampler_seed: None,
        };
        let amended = karras.apply(SamplerKind::DpmPP2M, &config).unwrap();
        assert_eq!(amended.use_karras_sigmas, Some(true));
        assert_eq!(amended.use_exponential_sigmas, Some(false));
        assert_eq!(amended.use_beta_sigmas, Some(false));
        assert_eq!(amended.timestep_spacing, Some(TimestepSpacing::Trailing));
        let err = karras
            .apply(SamplerKind::Ddim, &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ddim") && err.contains("karras") && err.contains("dpmpp_2m"),
            "{err}"
        );
        // The default schedule leaves the config's own keys alone.
        let own = SchedulerConfig {
            use_exponential_sigmas: Some(true),
            ..SchedulerConfig::default()
        };
        let kept = SamplerOptions::default()
            .apply(SamplerKind::Ddim, &own)
            .unwrap();
        assert_eq!(kept, own);
    }
}
