//! The keys of diffusers' `scheduler/scheduler_config.json` that easel's schedulers read.
//!
//! Every key has diffusers' default, and keys easel does not know are ignored, so the config of
//! any model (whatever scheduler class it shipped with) can drive any of easel's samplers, the
//! way diffusers' `Scheduler.from_config(pipe.scheduler.config)` does.
use crate::engine::error::{EngineError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A config value that is one of a few names; parsing names the key and the accepted values.
macro_rules! named_values {
    ($(#[$meta:meta])* $name:ident, $key:literal, { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// The value as written in scheduler_config.json.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(value: $name) -> Self {
                value.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($text $(| $alias)* => Ok(Self::$variant),)+
                    _ => Err(format!(
                        "{} {:?} is not supported: use one of {}",
                        $key,
                        s,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> std::result::Result<Self, String> {
                s.parse()
            }
        }
    };
}

named_values!(
    /// How the training noise schedule (the betas) is laid out.
    BetaSchedule, "beta_schedule", {
        Linear => "linear",
        ScaledLinear => "scaled_linear",
        SquaredcosCapV2 => "squaredcos_cap_v2",
    }
);

named_values!(
    /// What the model predicts.
    PredictionType, "prediction_type", {
        Epsilon => "epsilon",
        VPrediction => "v_prediction",
        // diffusers' Euler also takes the older name "original_sample".
        Sample => "sample" | "original_sample",
    }
);

named_values!(
    /// How inference timesteps are picked from the training timesteps.
    TimestepSpacing, "timestep_spacing", {
        Leading => "leading",
        Linspace => "linspace",
        Trailing => "trailing",
    }
);

named_values!(
    /// How Euler interpolates sigmas between training timesteps.
    InterpolationType, "interpolation_type", {
        Linear => "linear",
        LogLinear => "log_linear",
    }
);

named_values!(
    /// The sigma Euler ends on.
    FinalSigmasType, "final_sigmas_type", {
        Zero => "zero",
        SigmaMin => "sigma_min",
    }
);

named_values!(
    /// Whether Euler hands the model discrete timesteps or `0.25 * ln(sigma)` (v-prediction only).
    TimestepType, "timestep_type", {
        Discrete => "discrete",
        Continuous => "continuous",
    }
);

/// A model's scheduler config. Field names are diffusers' config keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// `_class_name`: the scheduler the model shipped with; informational only.
    #[serde(rename = "_class_name", skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    /// Overrides `beta_schedule` when present.
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    /// Absent: the scheduler's own default (DDIM leading, Euler linspace), as in diffusers, whose
    /// `from_config` does not carry over a value the original scheduler only defaulted.
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps_offset: usize,
    /// DDIM: the alpha of the step after the last is 1 (else the first training alpha).
    pub set_alpha_to_one: bool,
    /// DDIM: clamp the predicted clean sample to ±`clip_sample_range`.
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    /// DDIM dynamic thresholding; easel does not support it.
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub rescale_betas_zero_snr: bool,
    pub interpolation_type: InterpolationType,
    /// Euler: Karras, exponential and beta sigma spacings; easel does not offer them yet.
    pub use_karras_sigmas: Option<bool>,
    pub use_exponential_sigmas: Option<bool>,
    pub use_beta_sigmas: Option<bool>,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub final_sigmas_type: FinalSigmasType,
    pub timestep_type: TimestepType,
    // Multistep solvers (UniPC, DEIS) and consistency samplers (LCM, TCD).
    /// `solver_order`: how many past model outputs a multistep solver uses.
    pub solver_order: usize,
    /// `solver_type`, kept as text as diffusers' solvers read it with different vocabularies
    /// (UniPC bh1/bh2, DEIS logrho); absent means the solver's own default.
    pub solver_type: Option<String>,
    /// `lower_order_final`: lower the order for the last steps (more stable with few steps).
    pub lower_order_final: bool,
    /// UniPC: `predict_x0` updates on the predicted clean sample (else on the noise).
    pub predict_x0: bool,
    /// UniPC: `disable_corrector`, the steps whose corrector is skipped.
    pub disable_corrector: Vec<usize>,
    /// Flow-matching sigmas (SD3, Flux); easel's samplers do not offer them.
    pub use_flow_sigmas: bool,
    /// LCM and TCD: `original_inference_steps`, the distillation schedule's length.
    pub original_inference_steps: usize,
    /// LCM: `timestep_scaling` of the consistency boundary condition.
    pub timestep_scaling: f64,
}

impl Default for SchedulerConfig {
    /// diffusers' defaults (those of DDIMScheduler and EulerDiscreteScheduler, which agree on
    /// every key they share except `timestep_spacing`).
    fn default() -> Self {
        SchedulerConfig {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            set_alpha_to_one: true,
            clip_sample: true,
            clip_sample_range: 1.0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            rescale_betas_zero_snr: false,
            interpolation_type: InterpolationType::Linear,
            use_karras_sigmas: Some(false),
            use_exponential_sigmas: Some(false),
            use_beta_sigmas: Some(false),
            sigma_min: None,
            sigma_max: None,
            final_sigmas_type: FinalSigmasType::Zero,
            timestep_type: TimestepType::Discrete,
            solver_order: 2,
            solver_type: None,
            lower_order_final: true,
            predict_x0: true,
            disable_corrector: Vec::new(),
            use_flow_sigmas: false,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
        }
    }
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`. Errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let bad = |message: String| EngineError::Config {
            path: path.to_path_buf(),
            message,
        };
        let config: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Parses config JSON that came from somewhere other than a file.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| EngineError::Invalid(format!("invalid scheduler config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what every scheduler needs; each scheduler checks its own keys when built.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|message| EngineError::Invalid(format!("scheduler config: {message}")))
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.num_train_timesteps < 2 {
            return Err(format!(
                "num_train_timesteps is {}: it must be at least 2",
                self.num_train_timesteps
            ));
        }
        if let Some(betas) = &self.trained_betas {
            if betas.len() != self.num_train_timesteps {
                return Err(format!(
                    "trained_betas has {} values but num_train_timesteps is {}: they must agree",
                    betas.len(),
                    self.num_train_timesteps
                ));
            }
            if let Some(b) = betas
                .iter()
                .find(|b| !(b.is_finite() && **b > 0.0 && **b <= 1.0))
            {
                return Err(format!(
                    "trained_betas holds {b}: every beta must lie in (0, 1]"
                ));
            }
        } else {
            for (key, value) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
                if !(value.is_finite() && (0.0..1.0).contains(&value)) {
                    return Err(format!("{key} is {value}: it must lie in [0, 1)"));
                }
            }
        }
        Ok(())
    }

    /// `timestep_spacing`, or `default` when the config leaves it out.
    pub fn spacing_or(&self, default: TimestepSpacing) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(default)
    }
}
