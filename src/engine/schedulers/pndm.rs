//! PLMS, the pseudo linear multistep method of PNDM (Liu et al. 2022), as diffusers'
//! PNDMScheduler runs it with `skip_prk_steps` (what Stable Diffusion's configs set, and what
//! AUTOMATIC1111 calls "PLMS"): Adams–Bashforth combinations of up to four model outputs, with
//! the first step taken twice to start the history.
use super::betas::{self, alphas_cumprod_unrescaled};
use super::config::{PredictionType, SchedulerConfig, TimestepSpacing};
use super::scalar::sqrt;
use super::{check_steps, img2img, spacing, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::Tensor;

pub struct Plms {
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    /// The model timesteps: the spaced timesteps, largest first, with the second repeated.
    steps: Vec<i64>,
    timesteps: Vec<f64>,
    /// diffusers' `num_train_timesteps // num_inference_steps`, whatever the spacing.
    ratio: i64,
    prediction_type: PredictionType,
    /// The last (up to four) model outputs.
    ets: Vec<Tensor>,
    counter: usize,
    cur_sample: Option<Tensor>,
}

impl Plms {
    /// PNDM has no `rescale_betas_zero_snr` in diffusers, which drops the key; so does this.
    /// `skip_prk_steps` is taken as true whatever the config says: this is the PLMS sampler.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        if config.prediction_type == PredictionType::Sample {
            return Err(EngineError::Invalid(
                "PLMS supports prediction_type epsilon and v_prediction, not \"sample\": pick \
                 ddim or euler for this model"
                    .into(),
            ));
        }
        let alphas_cumprod = alphas_cumprod_unrescaled(config)?;
        let train = config.num_train_timesteps;
        let spacing = config.spacing_or(TimestepSpacing::Leading);
        let mut ascending: Vec<i64> =
            spacing::timesteps(spacing, train, steps, config.steps_offset, true)
                .into_iter()
                .map(|t| t as i64)
                .collect();
        ascending.reverse();
        // [t0 .. t(n-2), t(n-2), t(n-1)], reversed: the first step is evaluated twice.
        let n = ascending.len();
        let mut model_steps: Vec<i64> = ascending[..n.saturating_sub(1)].to_vec();
        if n >= 2 {
            model_steps.push(ascending[n - 2]);
        }
        if let Some(&last) = ascending.last() {
            model_steps.push(last);
        }
        model_steps.reverse();
        let ratio = (train / steps) as i64;
        // Every index diffusers will read must exist (Python-style negative indices allowed).
        let reach = |t: i64| t < train as i64 && t >= -(train as i64);
        let restart = model_steps
            .get(1)
            .filter(|_| model_steps.len() > 2)
            .map(|&t| t + ratio);
        if let Some(t) = model_steps
            .iter()
            .copied()
            .chain(restart)
            .find(|&t| !reach(t))
        {
            return Err(EngineError::Invalid(format!(
                "timestep {t} is outside the {train} training timesteps: lower steps_offset \
                 ({}) in the scheduler config",
                config.steps_offset
            )));
        }
        Ok(Plms {
            final_alpha_cumprod: betas::final_alpha_cumprod(config, &alphas_cumprod, false),
            alphas_cumprod,
            timesteps: model_steps.iter().map(|&t| t as f64).collect(),
            steps: model_steps,
            ratio,
            prediction_type: config.prediction_type,
            ets: Vec::new(),
            counter: 0,
            cur_sample: None,
        })
    }

    /// Timesteps were checked against the table when the scheduler was built.
    fn alpha_at(&self, t: i64) -> f32 {
        betas::at(&self.alphas_cumprod, t).unwrap_or(f32::NAN)
    }

    /// Formula (9) of the PNDM paper: the sample at `prev` from the one at `t`.
    fn prev_sample(&self, sample: &Tensor, t: i64, prev: i64, model_output: &Tensor) -> Tensor {
        let alpha = self.alpha_at(t);
        let alpha_prev = if prev >= 0 {
            self.alpha_at(prev)
        } else {
            self.final_alpha_cumprod
        };
        let beta = 1.0 - alpha;
        let beta_prev = 1.0 - alpha_prev;
        let model_output = match self.prediction_type {
            PredictionType::VPrediction => {
                model_output * f64::from(sqrt(alpha)) + sample * f64::from(sqrt(beta))
            }
            _ => model_output.shallow_clone(),
        };
        let sample_coeff = sqrt(alpha_prev / alpha);
        let denominator = alpha * sqrt(beta_prev) + sqrt(alpha * beta * alpha_prev);
        sample * f64::from(sample_coeff)
            - model_output * f64::from(alpha_prev - alpha) / f64::from(denominator)
    }
}

impl Scheduler for Plms {
    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_alpha(
            &self.alphas_cumprod,
            self.steps.get(entry).copied(),
            original,
            noise,
        )
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step: usize,
        sample: &Tensor,
        _noise: &mut dyn FnMut(&[i64]) -> Tensor,
    ) -> Tensor {
        let mut t = self.steps[step];
        let mut prev = t - self.ratio;
        if self.counter != 1 {
            if self.ets.len() > 3 {
                let _oldest = self.ets.remove(0);
            }
            self.ets.push(model_output.shallow_clone());
        } else {
            // The repeated first timestep: step again from the first sample.
            prev = t;
            t += self.ratio;
        }
        let e = &self.ets;
        let k = e.len();
        let mut sample = sample.shallow_clone();
        let combined = if k == 1 && self.counter == 0 {
            self.cur_sample = Some(sample.shallow_clone());
            model_output.shallow_clone()
        } else if k == 1 && self.counter == 1 {
            if let Some(first) = self.cur_sample.take() {
                sample = first;
            }
            (model_output + &e[k - 1]) / 2.0
        } else if k == 2 {
            (&e[k - 1] * 3.0 - &e[k - 2]) / 2.0
        } else if k == 3 {
            (&e[k - 1] * 23.0 - &e[k - 2] * 16.0 + &e[k - 3] * 5.0) / 12.0
        } else {
            (&e[k - 1] * 55.0 - &e[k - 2] * 59.0 + &e[k - 3] * 37.0 - &e[k - 4] * 9.0)
                * (1.0 / 24.0)
        };
        let out = self.prev_sample(&sample, t, prev, &combined);
        self.counter += 1;
        out
    }
}
