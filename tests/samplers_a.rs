//! DDPM, PLMS, LMS, Heun, DPM2, DPM2 a, DPM++ 2M, DPM++ 2M SDE and DPM++ SDE, with the default,
//! Karras, exponential and beta schedules, against diffusers 0.42: timesteps, sigmas, noise draws,
//! whole sampling runs, refusals, and images from the tiny SD 1.x pipeline. References come from
//! scripts/fixtures/schedulers2_ref.py.
mod common;

use common::{fixture_path, max_abs_diff, reference_path, tiny_sd1, Reference};
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use easel::engine::random::SeededNoise;
use easel::engine::schedulers::config::TimestepSpacing;
use easel::engine::schedulers::{
    build, torch_randn, SamplerKind, SamplerOptions, Schedule, SchedulerConfig,
};
use serde::Deserialize;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

/// Scaled inputs and step outputs: absolute for values up to 1, else relative to the largest
/// value (latents reach thousands with zero-SNR and cosine sigmas, where a float32 ulp is
/// already above 1e-4).
const SAMPLE_TOL: f64 = 1e-4;
/// Timesteps, sigmas and init_noise_sigma: relative.
const SCHEDULE_TOL: f64 = 1e-6;
/// End-to-end float images.
const IMAGE_TOL: f64 = 1e-3;

/// The samplers these references cover (DDIM and Euler: tests/schedulers.rs; UniPC, DEIS, LCM
/// and TCD: tests/samplers_b.rs).
const MINE: &[SamplerKind] = &[
    SamplerKind::Ddpm,
    SamplerKind::Pndm,
    SamplerKind::Lms,
    SamplerKind::Heun,
    SamplerKind::Dpm2,
    SamplerKind::Dpm2Ancestral,
    SamplerKind::DpmPP2M,
    SamplerKind::DpmPP2MSde,
    SamplerKind::DpmPPSde,
];

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
    refused: Vec<Refused>,
    e2e: Vec<EndToEnd>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    sampler: String,
    schedule: String,
    spacing: Option<String>,
    config: String,
    steps: usize,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
    noise_seed: u64,
    /// The shapes of the noise each step drew.
    draws: Vec<Vec<Vec<i64>>>,
}

#[derive(Deserialize)]
struct Refused {
    sampler: String,
    config: serde_json::Value,
    diffusers_error: String,
}

#[derive(Deserialize)]
struct EndToEnd {
    name: String,
    sampler: String,
    schedule: String,
    seed: u64,
    steps: usize,
    cfg: f64,
    prompt: String,
    height: i64,
    width: i64,
    model_calls: usize,
}

fn cases_file() -> File {
    let path = reference_path("samplers_a.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/make-fixtures", path.display()));
    serde_json::from_str(&text).expect("samplers_a.json parses")
}

impl Case {
    fn kind(&self) -> SamplerKind {
        self.sampler.parse().expect("reference sampler name")
    }

    fn options(&self) -> SamplerOptions {
        SamplerOptions {
            schedule: self.schedule.parse().expect("reference schedule"),
            timestep_spacing: self
                .spacing
                .as_deref()
                .map(|s| s.parse::<TimestepSpacing>().expect("reference spacing")),
            noise_sampler_seed: Some(self.noise_seed),
        }
    }

    fn config(&self) -> SchedulerConfig {
        let path = fixture_path(&self.config);
        SchedulerConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

fn assert_values(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {actual:?} vs {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= SCHEDULE_TOL * e.abs() + 1e-9,
            "{what}[{i}]: {a} vs diffusers' {e}\n{actual:?}\n{expected:?}"
        );
    }
}

#[test]
fn every_sampler_and_schedule_is_covered() {
    let file = cases_file();
    for &kind in MINE {
        for schedule in std::iter::once(&Schedule::Default).chain(kind.schedules()) {
            let covered = file
                .cases
                .iter()
                .any(|c| c.kind() == kind && c.schedule == schedule.name());
            assert!(covered, "no reference case for {kind} with {schedule}");
        }
        let v_pred = file
            .cases
            .iter()
            .any(|c| c.kind() == kind && c.config.contains("sd2_v"));
        assert!(v_pred, "no v-prediction case for {kind}");
    }
    assert!(
        file.cases.len() > 100,
        "too few cases: {}",
        file.cases.len()
    );
}

#[test]
fn timesteps_sigmas_and_init_noise_match_diffusers() {
    let _guard = tch::no_grad_guard();
    for case in cases_file().cases {
        let s = build(case.kind(), &case.options(), &case.config(), case.steps)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_values(
            &format!("{} timesteps", case.name),
            s.timesteps(),
            &case.timesteps,
        );
        assert_values(
            &format!("{} init_noise_sigma", case.name),
            &[s.init_noise_sigma()],
            &[case.init_noise_sigma],
        );
        match (s.sigmas(), &case.sigmas) {
            (Some(actual), Some(expected)) => {
                assert_values(&format!("{} sigmas", case.name), &actual, expected)
            }
            (None, None) => {}
            (actual, expected) => panic!("{}: sigmas {actual:?} vs {expected:?}", case.name),
        }
    }
}

fn tolerance(expected: &Tensor) -> f64 {
    let scale = expected.abs().max().double_value(&[]);
    SAMPLE_TOL * scale.max(1.0)
}

/// One test for every run: the stochastic samplers draw from libtorch's global generator, which
/// tests running in parallel threads would otherwise share.
#[test]
fn sampling_runs_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("samplers_a.safetensors");
    let mut worst = (0.0f64, String::new());
    for case in cases_file().cases {
        let mut scheduler = build(case.kind(), &case.options(), &case.config(), case.steps)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let get = |what: &str| reference.get(&format!("{}.{what}", case.name));
        let (model_outputs, scaled, outputs) =
            (get("model_outputs"), get("scaled"), get("outputs"));
        let n = scheduler.timesteps().len();
        assert_eq!(
            model_outputs.size()[0],
            n as i64,
            "{}: model calls",
            case.name
        );
        let seeded = SeededNoise::new(case.noise_seed, Kind::Float, Device::Cpu);
        let mut latents = get("initial") * scheduler.init_noise_sigma();
        for i in 0..n {
            let what = format!("{} step {i}", case.name);
            let input = scheduler.scale_model_input(&latents, i);
            let expected = scaled.get(i as i64);
            let diff = max_abs_diff(&input, &expected);
            assert!(
                diff <= tolerance(&expected),
                "{what}: scaled input differs by {diff:e}"
            );
            let mut draws: Vec<Vec<i64>> = Vec::new();
            let mut noise = |shape: &[i64]| {
                draws.push(shape.to_vec());
                seeded.randn(shape)
            };
            latents = scheduler.step(&model_outputs.get(i as i64), i, &latents, &mut noise);
            assert_eq!(draws, case.draws[i], "{what}: noise draws");
            assert_eq!(latents.kind(), Kind::Float, "{what}: output dtype");
            let expected = outputs.get(i as i64);
            let diff = max_abs_diff(&latents, &expected);
            assert!(
                diff <= tolerance(&expected),
                "{what}: step output differs by {diff:e}"
            );
            if diff > worst.0 {
                worst = (diff, what);
            }
        }
        let finite = bool::try_from(latents.isfinite().all()).unwrap();
        assert!(finite, "{}: non-finite latents", case.name);
    }
    println!(
        "largest step-output difference: {:e} ({})",
        worst.0, worst.1
    );
}

/// diffusers' DPM-Solver++ with `solver_type: heun` divides 0 by 0 when a step has zero length:
/// Karras sigmas end on sigma_min, and so does a `sigma_min` final sigma; from 15 steps on, the
/// last step is second order. easel keeps the sample (the limit of the update) instead of NaN.
#[test]
fn a_zero_length_last_step_keeps_the_sample() {
    let _guard = tch::no_grad_guard();
    let config =
        SchedulerConfig::from_file(&reference_path("samplers_a_configs/dpm_saved.json")).unwrap();
    let steps = 20;
    for kind in [SamplerKind::DpmPP2M, SamplerKind::DpmPP2MSde] {
        let mut s = build(kind, &SamplerOptions::default(), &config, steps).unwrap();
        let sigmas = s.sigmas().unwrap();
        assert_eq!(
            sigmas[steps - 1],
            sigmas[steps],
            "{kind}: a zero-length last step"
        );
        let seeded = SeededNoise::new(3, Kind::Float, Device::Cpu);
        let mut latents = seeded.randn(&[1, 4, 2, 3]) * s.init_noise_sigma();
        let mut noise = |shape: &[i64]| seeded.randn(shape);
        for i in 0..steps {
            let before = latents.shallow_clone();
            let model_output = seeded.randn(&[1, 4, 2, 3]);
            latents = s.step(&model_output, i, &latents, &mut noise);
            if i + 1 == steps {
                assert_eq!(max_abs_diff(&latents, &before), 0.0, "{kind}");
            }
        }
        assert!(bool::try_from(latents.isfinite().all()).unwrap(), "{kind}");
    }
}

#[test]
fn what_diffusers_refuses_easel_refuses() {
    let file = cases_file();
    assert!(file.refused.len() >= 10);
    for refused in file.refused {
        let kind: SamplerKind = refused.sampler.parse().unwrap();
        let config = SchedulerConfig::from_json(&refused.config.to_string()).unwrap();
        match build(kind, &SamplerOptions::default(), &config, 4) {
            Ok(_) => panic!(
                "{kind} with {} should be refused (diffusers: {})",
                refused.config, refused.diffusers_error
            ),
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("sample") || text.contains("use_"),
                    "{kind}: the error should name the setting: {text}"
                );
            }
        }
    }
}

#[test]
fn schedules_a_sampler_lacks_are_refused_by_name() {
    let config =
        SchedulerConfig::from_file(&tiny_sd1().join("scheduler/scheduler_config.json")).unwrap();
    for &kind in SamplerKind::ALL {
        for &schedule in &[Schedule::Karras, Schedule::Exponential, Schedule::Beta] {
            let options = SamplerOptions {
                schedule,
                ..SamplerOptions::default()
            };
            let built = build(kind, &options, &config, 4);
            if kind.schedules().contains(&schedule) {
                assert!(built.is_ok(), "{kind} with {schedule}");
                continue;
            }
            let err = match built {
                Ok(_) => panic!("{kind} has no {schedule} schedule in diffusers"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains(kind.name()) && err.contains(schedule.name()),
                "{kind} {schedule}: {err}"
            );
            assert!(err.contains("dpmpp_2m"), "{err}");
        }
    }
}

#[test]
fn configs_saved_by_python_with_infinities_load() {
    let path = reference_path("samplers_a_configs/dpm_saved.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("-Infinity"),
        "the fixture should hold -Infinity"
    );
    let config = SchedulerConfig::from_file(&path).unwrap();
    assert_eq!(config.lambda_min_clipped, f64::NEG_INFINITY);
    assert_eq!(config.solver_type.as_deref(), Some("heun"));
    let err = SchedulerConfig::from_json(r#"{"lambda_min_clipped": "NaN"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lambda_min_clipped") || err.contains("NaN"),
        "{err}"
    );
    // The words inside strings are left alone.
    let config = SchedulerConfig::from_json(r#"{"_class_name": "Infinity NaN"}"#).unwrap();
    assert_eq!(config.class_name.as_deref(), Some("Infinity NaN"));
}

#[test]
fn seeded_draws_match_libtorch_without_its_global_generator() {
    for seed in [0u64, 1, 42, 2_147_483_647, 4_294_967_295] {
        for shape in [
            &[1i64][..],
            &[5],
            &[15],
            &[16],
            &[17],
            &[1, 4, 2, 3],
            &[2, 4, 9, 7],
        ] {
            let ours = torch_randn::randn(seed, shape);
            let theirs = SeededNoise::new(seed, Kind::Float, Device::Cpu).randn(shape);
            let diff = max_abs_diff(&ours, &theirs);
            assert!(
                diff < 1e-5,
                "seed {seed} shape {shape:?}: differs by {diff:e}"
            );
        }
    }
}

#[test]
fn images_match_diffusers_for_every_sampler() {
    let file = cases_file();
    assert!(file.e2e.len() >= 14);
    let reference = Reference::open("samplers_a.safetensors");
    let model = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    let never = AtomicBool::new(false);
    for case in &file.e2e {
        let request = TextToImage {
            prompt: case.prompt.clone(),
            negative_prompt: String::new(),
            steps: case.steps,
            guidance_scale: case.cfg,
            seed: case.seed,
            width: case.width,
            height: case.height,
            batch_size: 1,
            sampler: case.sampler.parse().unwrap(),
            schedule: case.schedule.parse().unwrap(),
            timestep_spacing: None,
            preview_every: 0,
            clip_skip: 1,
            guidance_rescale: 0.0,
            embeddings: Vec::new(),
            init: None,
        };
        let mut seen = Vec::new();
        let out = model
            .generate(&request, &mut |p| seen.push((p.step, p.steps)), &never)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        // One callback per model evaluation, counted against the evaluations.
        let calls = case.model_calls;
        let expected: Vec<(usize, usize)> = (1..=calls).map(|i| (i, calls)).collect();
        assert_eq!(seen, expected, "{}: progress", case.name);
        // The reference keeps every other row and column.
        let image = out.float_images.slice(1, 0, None, 2).slice(2, 0, None, 2);
        let expected = reference.get(&case.name);
        let diff = max_abs_diff(&image, &expected);
        assert!(
            diff <= IMAGE_TOL,
            "{}: image differs by {diff:e}",
            case.name
        );
        let scale = expected.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{}: an all-zero reference", case.name);
    }
}
