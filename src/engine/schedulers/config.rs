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
    /// DDIM, PNDM: the alpha of the step after the last is 1 (else the first training alpha).
    /// Absent: each scheduler's own default (DDIM true, PNDM false), read with `alpha_to_one_or`.
    pub set_alpha_to_one: Option<bool>,
    /// DDIM, DDPM, Heun: clamp the predicted clean sample to ±`clip_sample_range`.
    /// Absent: each scheduler's own default (DDIM and DDPM true, Heun false), via `clip_sample_or`.
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// DDIM dynamic thresholding; easel does not support it.
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub rescale_betas_zero_snr: bool,
    pub interpolation_type: InterpolationType,
    /// Karras, exponential and beta sigma spacings (Euler, the k-diffusion samplers, the multistep
    /// solvers); at most one may be true.
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
    // Keys of DDPM, DPM-Solver (which also reads solver_type, lower_order_final and
    // use_flow_sigmas above) and DPM-Solver SDE.
    /// DDPM: fixed_small (the default), fixed_small_log, fixed_large; DPM-Solver: absent.
    pub variance_type: Option<String>,
    /// DPM-Solver: a first-order (Euler) final step at any step count.
    pub euler_at_final: bool,
    /// DPM-Solver: the smallest log-SNR kept when spacing timesteps. diffusers writes the
    /// default, -inf, as the JSON extension `-Infinity`, which `from_file` accepts.
    #[serde(deserialize_with = "number_or_infinity")]
    pub lambda_min_clipped: f64,
    /// DPM-Solver: log-SNR-uniform steps; easel does not offer them.
    pub use_lu_lambdas: bool,
    /// DPM-Solver SDE: the Brownian tree's seed (absent: easel uses the render's seed).
    pub noise_sampler_seed: Option<u64>,
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
            set_alpha_to_one: None,
            clip_sample: None,
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
            variance_type: None,
            euler_at_final: false,
            lambda_min_clipped: f64::NEG_INFINITY,
            use_lu_lambdas: false,
            noise_sampler_seed: None,
        }
    }
}

impl SchedulerConfig {
    /// Refuses dynamic thresholding, which none of easel's samplers offers; `sampler` names
    /// the sampler in the message.
    pub(crate) fn refuse_thresholding(&self, sampler: &str) -> Result<()> {
        if self.thresholding {
            return Err(EngineError::Invalid(format!(
                "the scheduler config asks for dynamic thresholding (\"thresholding\": true), \
                 which easel's {sampler} does not support: set it to false or pick another sampler"
            )));
        }
        Ok(())
    }

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
        let config: Self =
            serde_json::from_str(&quote_non_finite(&text)).map_err(|e| bad(e.to_string()))?;
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Parses config JSON that came from somewhere other than a file.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(&quote_non_finite(text))
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

    /// `set_alpha_to_one`, or the reading scheduler's `default` when the config leaves it out.
    pub fn alpha_to_one_or(&self, default: bool) -> bool {
        self.set_alpha_to_one.unwrap_or(default)
    }

    /// `clip_sample`, or the reading scheduler's `default` when the config leaves it out.
    pub fn clip_sample_or(&self, default: bool) -> bool {
        self.clip_sample.unwrap_or(default)
    }
}

/// Python's json writes infinities and NaN as the bare words `Infinity`, `-Infinity` and `NaN`,
/// which strict JSON (and serde_json) refuses; this turns them into strings outside of strings.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if let Some(word) = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w))
        {
            out.push('"');
            out.push_str(word);
            out.push('"');
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A float written as a JSON number or as one of Python's non-finite words.
fn number_or_infinity<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f64),
        Word(String),
    }
    match Value::deserialize(d)? {
        Value::Number(v) => Ok(v),
        Value::Word(w) => match w.as_str() {
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "Infinity" => Ok(f64::INFINITY),
            _ => Err(serde::de::Error::custom(format!(
                "{w:?} is not a number: use a number or -Infinity"
            ))),
        },
    }
}
