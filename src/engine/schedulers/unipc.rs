//! UniPC (Zhao et al. 2023), a multistep predictor-corrector, as diffusers'
//! UniPCMultistepScheduler runs it: each step first corrects the previous prediction with the
//! new model output (UniC), then predicts the next sample (UniP), both with the B(h) update.
use super::betas::alphas_cumprod_finite;
use super::config::{FinalSigmasType, PredictionType, SchedulerConfig};
use super::multistep_sigmas as ms;
use super::scalar;
use super::sigmas::train_sigmas;
use super::{check_steps, img2img, spacing, Schedule, Scheduler};
use crate::engine::error::{EngineError, Result};
use tch::{Kind, Tensor};

pub struct UniPcMultistep {
    timesteps: Vec<f64>,
    /// One per step plus the final one, float32 as diffusers holds them.
    sigmas: Vec<f32>,
    prediction_type: PredictionType,
    predict_x0: bool,
    /// bh1: B(h) = h; bh2: B(h) = e^h - 1.
    bh2: bool,
    solver_order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<usize>,
    /// Converted model outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    last_sample: Option<Tensor>,
    this_order: usize,
}

impl UniPcMultistep {
    /// Reads diffusers' UniPC keys: `solver_order`, `predict_x0`, `solver_type` (bh1 or bh2;
    /// the other solvers' names mean bh2), `lower_order_final`, `disable_corrector`, the
    /// Karras/exponential/beta sigma flags with `sigma_min`/`sigma_max`, `final_sigmas_type`.
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        config.validate()?;
        check_steps(config, steps)?;
        if config.thresholding {
            return Err(EngineError::Invalid(
                "the scheduler config asks for dynamic thresholding (\"thresholding\": true), \
                 which easel's UniPC does not support: set it to false or pick another sampler"
                    .into(),
            ));
        }
        if config.solver_order == 0 {
            return Err(EngineError::Invalid(
                "solver_order is 0 in the scheduler config: use 1 or more (2 for guided \
                 sampling)"
                    .into(),
            ));
        }
        // diffusers maps the other solvers' names to bh2.
        let bh2 = match config.solver_type.as_deref() {
            None | Some("bh2" | "midpoint" | "heun" | "logrho") => true,
            Some("bh1") => false,
            Some(other) => {
                return Err(EngineError::Invalid(format!(
                    "solver_type {other:?} in the scheduler config is not one UniPC knows: use \
                     bh1 or bh2"
                )))
            }
        };
        let schedule = ms::schedule(config, "UniPC")?;
        let alphas = alphas_cumprod_finite(config)?;
        let (train, logs) = train_sigmas(&alphas)?;
        let (timesteps, mut sigmas): (Vec<i64>, Vec<f32>) = if schedule == Schedule::Default {
            let t = ms::timesteps(config, steps);
            let s = t
                .iter()
                .map(|&t| spacing::interp(t as f64, &train) as f32)
                .collect();
            (t, s)
        } else {
            ms::respaced(schedule, config, steps, &train, &logs)
        };
        let last = match (config.final_sigmas_type, schedule) {
            (FinalSigmasType::Zero, _) => 0.0,
            (FinalSigmasType::SigmaMin, Schedule::Default) => {
                let a = alphas[0];
                scalar::sqrt((1.0 - a) / a)
            }
            (FinalSigmasType::SigmaMin, _) => sigmas.last().copied().unwrap_or(0.0),
        };
        sigmas.push(last);
        Ok(UniPcMultistep {
            timesteps: timesteps.iter().map(|&t| t as f64).collect(),
            sigmas,
            prediction_type: config.prediction_type,
            predict_x0: config.predict_x0,
            bh2,
            solver_order: config.solver_order,
            lower_order_final: config.lower_order_final,
            disable_corrector: config.disable_corrector.clone(),
            model_outputs: (0..config.solver_order).map(|_| None).collect(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 1,
        })
    }

    /// The sigmas of every step and the final one, as diffusers' `scheduler.sigmas`.
    pub fn sigmas(&self) -> Vec<f64> {
        self.sigmas.iter().map(|&s| f64::from(s)).collect()
    }

    fn lambda(sigma: f32) -> (f32, f32, f32) {
        let (alpha, sigma_t) = scalar::alpha_sigma(sigma);
        (alpha, sigma_t, scalar::ln(alpha) - scalar::ln(sigma_t))
    }

    /// The x0 (or noise) prediction the solver works with.
    fn convert(&self, model_output: &Tensor, sample: &Tensor, step: usize) -> Tensor {
        let (alpha, sigma) = scalar::alpha_sigma(self.sigmas[step]);
        let (alpha, sigma) = (f64::from(alpha), f64::from(sigma));
        match (self.predict_x0, self.prediction_type) {
            (true, PredictionType::Epsilon) => (sample - model_output * sigma) / alpha,
            (true, PredictionType::Sample) | (false, PredictionType::Epsilon) => {
                model_output.shallow_clone()
            }
            (true, PredictionType::VPrediction) => sample * alpha - model_output * sigma,
            (false, PredictionType::Sample) => (sample - model_output * alpha) / sigma,
            (false, PredictionType::VPrediction) => model_output * alpha + sample * sigma,
        }
    }

    /// The B(h) update's shared pieces between sigma indices `s0` (from) and `t` (to), with
    /// the earlier outputs at indices `earlier` (most recent first) paired with `outputs`.
    fn update_terms(
        &self,
        t: usize,
        s0: usize,
        earlier: &[(usize, &Tensor)],
        m0: &Tensor,
        order: usize,
    ) -> Terms {
        let (alpha_t, sigma_t, lambda_t) = Self::lambda(self.sigmas[t]);
        let (alpha_s0, sigma_s0, lambda_s0) = Self::lambda(self.sigmas[s0]);
        let h = lambda_t - lambda_s0;
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for &(si, mi) in earlier {
            let (_, _, lambda_si) = Self::lambda(self.sigmas[si]);
            let rk = (lambda_si - lambda_s0) / h;
            rks.push(rk);
            d1s.push((mi - m0) / f64::from(rk));
        }
        rks.push(1.0);
        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = scalar::expm1(hh);
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial: i64 = 1;
        let b_h = if self.bh2 { scalar::expm1(hh) } else { hh };
        let mut r = Vec::with_capacity(order * order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.extend(rks.iter().map(|&rk| powi(rk, i as i64 - 1)));
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as i64 + 1;
            h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
        }
        Terms {
            alpha_t,
            sigma_t,
            alpha_s0,
            sigma_s0,
            h_phi_1,
            b_h,
            r,
            b,
            d1s,
        }
    }

    /// `x_t_`, the first-order part of both updates.
    fn base(&self, terms: &Terms, x: &Tensor, m0: &Tensor) -> (Tensor, f64) {
        if self.predict_x0 {
            let base = x * f64::from(terms.sigma_t / terms.sigma_s0)
                - m0 * f64::from(terms.alpha_t * terms.h_phi_1);
            (base, f64::from(terms.alpha_t * terms.b_h))
        } else {
            let base = x * f64::from(terms.alpha_t / terms.alpha_s0)
                - m0 * f64::from(terms.sigma_t * terms.h_phi_1);
            (base, f64::from(terms.sigma_t * terms.b_h))
        }
    }

    /// UniP: the sample at sigma index `step + 1` from `sample` at `step`.
    fn predict(&self, sample: &Tensor, step: usize, order: usize) -> Tensor {
        let outputs = self.recent_outputs(order);
        let m0 = outputs[0];
        let earlier: Vec<(usize, &Tensor)> = (1..order).map(|i| (step - i, outputs[i])).collect();
        let terms = self.update_terms(step + 1, step, &earlier, m0, order);
        let (base, scale) = self.base(&terms, sample, m0);
        let x_t = if terms.d1s.is_empty() {
            // diffusers subtracts `scale * 0`, which is NaN when scale is infinite.
            base - scale * 0.0
        } else {
            let rhos = if order == 2 {
                vec![0.5f32]
            } else {
                solve(&terms.r, &terms.b, order, order - 1)
            };
            base - combine(&rhos, &terms.d1s, sample) * scale
        };
        x_t.to_kind(sample.kind())
    }

    /// UniC: the sample at `step` again, from `last_sample` (the one the last prediction
    /// started from) and `model_t`, the converted output at `step`; it replaces the prediction.
    fn correct(&self, model_t: &Tensor, last_sample: &Tensor, step: usize, order: usize) -> Tensor {
        let outputs = self.recent_outputs(order);
        let m0 = outputs[0];
        let earlier: Vec<(usize, &Tensor)> =
            (1..order).map(|i| (step - (i + 1), outputs[i])).collect();
        let terms = self.update_terms(step, step - 1, &earlier, m0, order);
        let rhos = if order == 1 {
            vec![0.5f32]
        } else {
            solve(&terms.r, &terms.b, order, order)
        };
        let (base, scale) = self.base(&terms, last_sample, m0);
        let (last_rho, rest) = rhos.split_last().unwrap_or((&0.5, &[]));
        let d1_t = model_t - m0;
        let correction = if terms.d1s.is_empty() {
            d1_t * f64::from(*last_rho)
        } else {
            combine(rest, &terms.d1s, last_sample) + d1_t * f64::from(*last_rho)
        };
        (base - correction * scale).to_kind(last_sample.kind())
    }

    /// The last `order` converted outputs, most recent first.
    fn recent_outputs(&self, order: usize) -> Vec<&Tensor> {
        self.model_outputs
            .iter()
            .rev()
            .take(order)
            .map(|m| {
                m.as_ref()
                    .expect("the warm-up keeps the order within the outputs held")
            })
            .collect()
    }
}

/// The per-update scalars, float32 as diffusers' 0-dim tensors.
struct Terms {
    alpha_t: f32,
    sigma_t: f32,
    alpha_s0: f32,
    sigma_s0: f32,
    h_phi_1: f32,
    b_h: f32,
    /// R row-major, `order` x `order`: row i holds rks^i.
    r: Vec<f32>,
    b: Vec<f32>,
    d1s: Vec<Tensor>,
}

/// `torch.pow(rk, n)` for the small integer powers of the R matrix.
fn powi(x: f32, n: i64) -> f32 {
    Tensor::scalar_tensor(f64::from(x), (Kind::Float, tch::Device::Cpu))
        .pow_tensor_scalar(n)
        .double_value(&[]) as f32
}

/// `torch.linalg.solve(R[:k, :k], b[:k])` in float32, as diffusers solves for the rhos.
fn solve(r: &[f32], b: &[f32], order: usize, k: usize) -> Vec<f32> {
    let n = order as i64;
    let k = k as i64;
    let r = Tensor::from_slice(r)
        .view([n, n])
        .slice(0, 0, k, 1)
        .slice(1, 0, k, 1);
    let b = Tensor::from_slice(b).slice(0, 0, k, 1);
    // A singular system (repeated sigmas) gives NaNs, as an unusable step should, not a panic.
    Tensor::f_linalg_solve(&r, &b, true)
        .ok()
        .and_then(|x| Vec::<f32>::try_from(&x).ok())
        .unwrap_or_else(|| vec![f32::NAN; k as usize])
}

/// `einsum("k,bkc...->bc...", rhos, stack(d1s, dim=1))`.
fn combine(rhos: &[f32], d1s: &[Tensor], like: &Tensor) -> Tensor {
    let rhos = crate::engine::device::upload(
        &Tensor::from_slice(rhos).to_kind(like.kind()),
        like.device(),
    );
    let stacked = Tensor::stack(d1s, 1);
    Tensor::einsum("k,bkc...->bc...", &[rhos, stacked], None::<&[i64]>)
}

impl Scheduler for UniPcMultistep {
    fn sigmas(&self) -> Option<Vec<f64>> {
        Some(UniPcMultistep::sigmas(self))
    }

    fn add_noise(&self, original: &Tensor, noise: &Tensor, entry: usize) -> Tensor {
        img2img::by_alpha_sigma(self.sigmas.get(entry).copied(), original, noise)
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
        let converted = self.convert(model_output, sample, step);
        let use_corrector = step > 0 && !self.disable_corrector.contains(&(step - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.correct(&converted, last, step, self.this_order),
            _ => sample.shallow_clone(),
        };
        self.model_outputs.rotate_left(1);
        if let Some(newest) = self.model_outputs.last_mut() {
            *newest = Some(converted);
        }
        let order = if self.lower_order_final {
            self.solver_order.min(self.timesteps.len() - step)
        } else {
            self.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predict(&sample, step, self.this_order);
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.solver_order {
            self.lower_order_nums += 1;
        }
        prev
    }
}
