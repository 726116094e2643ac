//! DDIM, Euler and Euler ancestral against diffusers 0.42: timesteps, sigmas, init_noise_sigma
//! and whole sampling runs, from references that scripts/fixtures/schedulers_ref.py computed.
mod common;

use common::{fixture_path, max_abs_diff, Reference};
use easel::engine::random::SeededNoise;
use easel::engine::schedulers::{
    build, EulerAncestralDiscrete, EulerDiscrete, SamplerKind, Scheduler, SchedulerConfig,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Scaled inputs and step outputs: absolute for values up to 1, else relative to the largest
/// value (Euler's latents reach 1e4-1e5 with large sigmas, where one float32 ulp exceeds 1e-5).
/// On the machine that made the references the runs agree bit for bit.
const SAMPLE_TOL: f64 = 1e-5;
/// Timesteps, sigmas and init_noise_sigma: relative.
const SCHEDULE_TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    sampler: String,
    config: String,
    steps: usize,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
    noise_seed: Option<i64>,
}

impl Case {
    fn kind(&self) -> SamplerKind {
        self.sampler.parse().expect("reference sampler name")
    }

    fn config(&self) -> SchedulerConfig {
        let path = fixture_path(&self.config);
        SchedulerConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

fn cases() -> Vec<Case> {
    let path = common::reference_path("schedulers.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/make-fixtures", path.display()));
    let cases: Cases = serde_json::from_str(&text).expect("schedulers.json parses");
    assert!(cases.cases.len() > 40, "the reference lists too few cases");
    cases.cases
}

fn assert_values(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {actual:?} vs {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= SCHEDULE_TOL * e.abs() + 1e-12,
            "{what}[{i}]: {a} vs diffusers' {e}"
        );
    }
}

#[test]
fn timesteps_sigmas_and_init_noise_match_diffusers() {
    let _guard = tch::no_grad_guard();
    for case in cases() {
        let config = case.config();
        let (timesteps, init, sigmas): (Vec<f64>, f64, Option<Vec<f64>>) = match case.kind() {
            SamplerKind::Ddim => {
                let s = build(SamplerKind::Ddim, &Default::default(), &config, case.steps).unwrap();
                (s.timesteps().to_vec(), s.init_noise_sigma(), None)
            }
            SamplerKind::Euler => {
                let s = EulerDiscrete::new(&config, case.steps).unwrap();
                let sigmas = s.sigmas().to_vec();
                (s.timesteps().to_vec(), s.init_noise_sigma(), Some(sigmas))
            }
            SamplerKind::EulerAncestral => {
                let s = EulerAncestralDiscrete::new(&config, case.steps).unwrap();
                let sigmas = s.sigmas().to_vec();
                (s.timesteps().to_vec(), s.init_noise_sigma(), Some(sigmas))
            }
            other => panic!("{}: {other} has its own reference file", case.name),
        };
        assert_values(
            &format!("{} timesteps", case.name),
            &timesteps,
            &case.timesteps,
        );
        assert_values(
            &format!("{} init_noise_sigma", case.name),
            &[init],
            &[case.init_noise_sigma],
        );
        assert_eq!(sigmas.is_some(), case.sigmas.is_some(), "{}", case.name);
        if let (Some(actual), Some(expected)) = (sigmas, &case.sigmas) {
            assert_values(&format!("{} sigmas", case.name), &actual, expected);
        }
    }
}

fn tolerance(expected: &Tensor) -> f64 {
    let scale = expected.abs().max().double_value(&[]);
    SAMPLE_TOL * scale.max(1.0)
}

/// One test for every run: Euler ancestral draws from libtorch's global generator, which tests
/// running in parallel threads would otherwise share.
#[test]
fn sampling_runs_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("schedulers.safetensors");
    let mut worst = (0.0f64, String::new());
    for case in cases() {
        let config = case.config();
        let mut scheduler = build(case.kind(), &Default::default(), &config, case.steps).unwrap();
        let get = |what: &str| reference.get(&format!("{}.{what}", case.name));
        let (model_outputs, scaled, outputs) =
            (get("model_outputs"), get("scaled"), get("outputs"));
        let n = scheduler.timesteps().len();
        assert_eq!(
            model_outputs.size()[0],
            n as i64,
            "{}: step count",
            case.name
        );
        // Every case seeds its own draws (non-ancestral samplers must never draw).
        let seeded = SeededNoise::new(
            case.noise_seed.unwrap_or(0) as u64,
            Kind::Float,
            Device::Cpu,
        );
        let mut draws: Vec<Vec<i64>> = Vec::new();
        let mut latents = get("initial") * scheduler.init_noise_sigma();
        for i in 0..n {
            let what = format!("{} step {i}", case.name);
            let model_output = model_outputs.get(i as i64);
            let input = scheduler.scale_model_input(&latents, i);
            let expected = scaled.get(i as i64);
            let diff = max_abs_diff(&input, &expected);
            assert!(
                diff <= tolerance(&expected),
                "{what}: scaled input differs by {diff:e}"
            );
            let drawn_before = draws.len();
            let mut noise = |shape: &[i64]| {
                draws.push(shape.to_vec());
                seeded.randn(shape)
            };
            latents = scheduler.step(&model_output, i, &latents, &mut noise);
            let expected_draws = usize::from(case.kind() == SamplerKind::EulerAncestral);
            assert_eq!(
                draws.len() - drawn_before,
                expected_draws,
                "{what}: noise draws"
            );
            if let Some(shape) = draws.get(drawn_before) {
                assert_eq!(shape, &model_output.size(), "{what}: noise shape");
            }
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
        // The final latents must be real numbers for the comparison to mean anything.
        let finite = bool::try_from(latents.isfinite().all()).unwrap();
        assert!(finite, "{}: non-finite latents", case.name);
    }
    println!(
        "largest step-output difference: {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn a_scheduler_moves_to_another_thread() {
    let config =
        SchedulerConfig::from_file(&common::tiny_sd1().join("scheduler/scheduler_config.json"))
            .unwrap();
    for &kind in SamplerKind::ALL {
        let here = build(kind, &Default::default(), &config, 4)
            .unwrap()
            .timesteps()
            .to_vec();
        let scheduler = build(kind, &Default::default(), &config, 4).unwrap();
        let there = std::thread::spawn(move || scheduler.timesteps().to_vec())
            .join()
            .unwrap();
        assert_eq!(here, there, "{kind}");
    }
}

#[test]
fn model_config_reads_with_its_own_keys() {
    let path = common::tiny_sd1().join("scheduler/scheduler_config.json");
    let config = SchedulerConfig::from_file(&path).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(Some(config.beta_start), json["beta_start"].as_f64());
    assert_eq!(Some(config.beta_end), json["beta_end"].as_f64());
    assert_eq!(
        json["beta_schedule"].as_str(),
        Some(config.beta_schedule.as_str())
    );
    assert_eq!(
        Some(config.steps_offset as u64),
        json["steps_offset"].as_u64()
    );
    assert_eq!(json["set_alpha_to_one"].as_bool(), config.set_alpha_to_one);
    assert_eq!(json["clip_sample"].as_bool(), config.clip_sample);
    assert_eq!(config.class_name.as_deref(), json["_class_name"].as_str());
    assert_eq!(
        config.timestep_spacing.map(|s| s.as_str()),
        json["timestep_spacing"].as_str()
    );
}

/// A config file under the system temp dir, removed when dropped.
struct TempConfig(PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("easel-schedulers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, text).unwrap();
        TempConfig(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config_error(name: &str, text: &str) -> String {
    let file = TempConfig::new(name, text);
    let err = SchedulerConfig::from_file(file.path())
        .expect_err(text)
        .to_string();
    let shown = file.path().display().to_string();
    assert!(err.contains(&shown), "the error should name {shown}: {err}");
    err
}

#[test]
fn bad_config_files_are_refused_naming_file_and_key() {
    for (name, text, must_say) in [
        (
            "schedule",
            r#"{"beta_schedule": "sigmoid"}"#,
            &["beta_schedule", "\"sigmoid\"", "scaled_linear"][..],
        ),
        (
            "spacing",
            r#"{"timestep_spacing": "even"}"#,
            &["timestep_spacing", "\"even\"", "trailing"],
        ),
        (
            "prediction",
            r#"{"prediction_type": "x0"}"#,
            &["prediction_type", "\"x0\"", "v_prediction"],
        ),
        (
            "final",
            r#"{"final_sigmas_type": "one"}"#,
            &["final_sigmas_type", "sigma_min"],
        ),
        (
            "train0",
            r#"{"num_train_timesteps": 0}"#,
            &["num_train_timesteps", "at least 2"],
        ),
        (
            "trained",
            r#"{"trained_betas": [0.1, 0.2]}"#,
            &["trained_betas", "2 values", "1000"],
        ),
        ("beta", r#"{"beta_end": 1.5}"#, &["beta_end"]),
        ("type", r#"{"beta_start": "small"}"#, &["invalid type"]),
        ("syntax", r#"{"beta_start": 0.1,"#, &["EOF"]),
    ] {
        let err = config_error(name, text);
        for word in must_say {
            assert!(
                err.contains(word),
                "{text}: the error should say {word}: {err}"
            );
        }
    }
    let missing = Path::new("/nonexistent/easel/scheduler_config.json");
    let err = SchedulerConfig::from_file(missing).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/easel/scheduler_config.json"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_ignored_and_missing_keys_default() {
    let file = TempConfig::new("unknown", r#"{"skip_prk_steps": true, "made_up": [1, 2]}"#);
    let config = SchedulerConfig::from_file(file.path()).unwrap();
    assert_eq!(config, SchedulerConfig::default());
}

fn build_error(kind: SamplerKind, json: &str, steps: usize) -> String {
    let config = SchedulerConfig::from_json(json).unwrap();
    match build(kind, &Default::default(), &config, steps) {
        Ok(_) => panic!("{kind} with {json} and {steps} steps should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_settings_are_refused_clearly() {
    for (kind, json, steps, must_say) in [
        (
            SamplerKind::Ddim,
            r#"{"thresholding": true}"#,
            4,
            "thresholding",
        ),
        (
            SamplerKind::Euler,
            r#"{"use_karras_sigmas": true, "use_beta_sigmas": true}"#,
            4,
            "more than one of use_karras_sigmas",
        ),
        (
            SamplerKind::Euler,
            r#"{"interpolation_type": "log_linear"}"#,
            4,
            "interpolation_type",
        ),
        (
            SamplerKind::EulerAncestral,
            r#"{"prediction_type": "sample"}"#,
            4,
            "sample",
        ),
        (
            SamplerKind::Ddim,
            r#"{"num_train_timesteps": 100}"#,
            101,
            "between 1 and 100",
        ),
        (
            SamplerKind::Ddim,
            r#"{"steps_offset": 600}"#,
            2,
            "steps_offset",
        ),
    ] {
        let err = build_error(kind, json, steps);
        assert!(err.contains(must_say), "{kind} {json}: {err}");
    }
    for &kind in SamplerKind::ALL {
        let err = build_error(kind, "{}", 0);
        assert!(err.contains("0 steps"), "{kind}: {err}");
    }
    // Keys a sampler does not read do not stop it, as in diffusers.
    let karras = SchedulerConfig::from_json(r#"{"use_karras_sigmas": true}"#).unwrap();
    assert!(build(SamplerKind::Ddim, &Default::default(), &karras, 4).is_ok());
    assert!(build(SamplerKind::EulerAncestral, &Default::default(), &karras, 4).is_ok());
}

#[test]
fn unknown_sampler_names_are_refused() {
    for name in ["dpm9", "", "euler_b", "DDIM2"] {
        let err = name.parse::<SamplerKind>().unwrap_err().to_string();
        assert!(err.contains("ddim, euler, euler_a"), "{name:?}: {err}");
        assert!(
            serde_json::from_str::<SamplerKind>(&format!("{name:?}")).is_err(),
            "{name:?}"
        );
    }
    for &kind in SamplerKind::ALL {
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(serde_json::from_str::<SamplerKind>(&json).unwrap(), kind);
    }
}
