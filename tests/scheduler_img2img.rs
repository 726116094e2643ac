//! img2img and inpainting with every sampler, and Euler's Karras, exponential and beta schedules,
//! against diffusers 0.42: where a run at a strength begins, the noised start, every step of the
//! rest of the run, and the re-noising inpainting blends back after each step, from the
//! references scripts/fixtures/img2img_schedulers_ref.py computed.
mod common;

use common::{fixture_path, max_abs_diff, reference_path, Reference};
use easel::engine::random::SeededNoise;
use easel::engine::schedulers::{
    build, img2img_begin, img2img_start, SamplerKind, SamplerOptions, Schedule, Scheduler,
    SchedulerConfig,
};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

/// Tensors: absolute up to 1, else relative to the largest value (issue #3's 1e-4 for full runs).
const SAMPLE_TOL: f64 = 1e-4;
/// Timesteps and sigmas: relative.
const SCHEDULE_TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct File {
    cases: Vec<Case>,
    no_steps_left: Vec<NoStepsLeft>,
    euler: Vec<EulerCase>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    sampler: String,
    schedule: String,
    config: String,
    steps: usize,
    strength: f64,
    order: usize,
    begin: usize,
    timesteps: Vec<f64>,
    noise_seed: u64,
}

#[derive(Deserialize)]
struct NoStepsLeft {
    steps: usize,
    strength: f64,
    order: usize,
}

#[derive(Deserialize)]
struct EulerCase {
    name: String,
    schedule: String,
    config: String,
    steps: usize,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
}

fn file() -> File {
    let path = reference_path("scheduler_img2img.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/make-fixtures", path.display()));
    serde_json::from_str(&text).expect("scheduler_img2img.json parses")
}

fn config(rel: &str) -> SchedulerConfig {
    SchedulerConfig::from_file(&fixture_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn options(schedule: &str, noise_seed: Option<u64>) -> SamplerOptions {
    SamplerOptions {
        schedule: schedule.parse().expect("reference schedule"),
        noise_sampler_seed: noise_seed,
        ..SamplerOptions::default()
    }
}

impl Case {
    fn kind(&self) -> SamplerKind {
        self.sampler.parse().expect("reference sampler name")
    }

    fn scheduler(&self) -> Box<dyn Scheduler> {
        build(
            self.kind(),
            &options(&self.schedule, Some(self.noise_seed)),
            &config(&self.config),
            self.steps,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", self.name))
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

/// Asserts `actual` within the sample tolerance of `expected`; returns the difference.
fn assert_sample(what: &str, actual: &Tensor, expected: &Tensor) -> f64 {
    let scale = expected.abs().max().double_value(&[]);
    assert!(scale > 0.0, "{what}: the reference is all zeros");
    let diff = max_abs_diff(actual, expected);
    assert!(
        diff <= SAMPLE_TOL * scale.max(1.0),
        "{what}: differs from diffusers by {diff:e}"
    );
    diff
}

#[test]
fn every_sampler_and_its_karras_schedule_have_img2img_cases() {
    let file = file();
    for &kind in SamplerKind::ALL {
        let mine: Vec<&Case> = file.cases.iter().filter(|c| c.kind() == kind).collect();
        assert!(
            mine.iter().any(|c| c.begin > 0),
            "no img2img case for {kind}"
        );
        assert!(
            mine.iter().any(|c| c.begin == 0),
            "no strength-1 case for {kind}"
        );
        if kind.schedules().contains(&Schedule::Karras) {
            assert!(
                mine.iter().any(|c| c.schedule == "karras" && c.begin > 0),
                "no Karras img2img case for {kind}"
            );
        }
    }
    for schedule in [Schedule::Karras, Schedule::Exponential, Schedule::Beta] {
        assert!(
            file.euler.iter().any(|c| c.schedule == schedule.name()),
            "no Euler case with {schedule}"
        );
    }
}

#[test]
fn start_entries_follow_diffusers_get_timesteps() {
    let _guard = tch::no_grad_guard();
    for case in file().cases {
        let s = case.scheduler();
        assert_eq!(s.order(), case.order, "{}: order", case.name);
        assert_values(
            &format!("{} timesteps", case.name),
            s.timesteps(),
            &case.timesteps,
        );
        assert_eq!(
            img2img_start(case.steps, case.strength, case.order),
            case.begin,
            "{}: start entry",
            case.name
        );
        let begin = img2img_begin(s.as_ref(), case.steps, case.strength)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(begin, case.begin, "{}: begin", case.name);
    }
}

#[test]
fn a_strength_that_leaves_no_step_is_refused() {
    let file = file();
    assert!(!file.no_steps_left.is_empty());
    let sd1 = config("tiny-sd1/scheduler/scheduler_config.json");
    for c in file.no_steps_left {
        let kind = if c.order == 2 {
            SamplerKind::Heun
        } else {
            SamplerKind::Euler
        };
        let s = build(kind, &SamplerOptions::default(), &sd1, c.steps).unwrap();
        assert_eq!(s.order(), c.order);
        let err = img2img_begin(s.as_ref(), c.steps, c.strength)
            .expect_err("no step left")
            .to_string();
        assert!(
            err.contains("no step") && err.contains("raise the strength"),
            "{err}"
        );
    }
    let s = build(SamplerKind::Ddim, &SamplerOptions::default(), &sd1, 4).unwrap();
    for strength in [-0.1, 1.5, f64::NAN] {
        let err = img2img_begin(s.as_ref(), 4, strength)
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 0 and 1"), "{strength}: {err}");
    }
}

/// One test for every run: the stochastic samplers draw from libtorch's global generator, which
/// tests running in parallel threads would otherwise share.
#[test]
fn img2img_runs_and_inpainting_renoise_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("scheduler_img2img.safetensors");
    let names = reference.names();
    let mut worst = (0.0f64, String::new());
    for case in file().cases {
        let mut s = case.scheduler();
        let get = |what: &str| reference.get(&format!("{}.{what}", case.name));
        let (original, noise, model_outputs) =
            (get("original"), get("noise"), get("model_outputs"));
        let n = s.timesteps().len();
        let begin = case.begin;
        assert_eq!(
            model_outputs.size()[0],
            (n - begin) as i64,
            "{}: model calls",
            case.name
        );
        s.set_begin_index(begin);
        let mut latents = s.add_noise(&original, &noise, begin);
        assert_sample(&format!("{} noised", case.name), &latents, &get("noised"));
        let seeded = SeededNoise::new(case.noise_seed, Kind::Float, Device::Cpu);
        let (scaled, outputs) = (get("scaled"), get("outputs"));
        let has_renoised = names.contains(&format!("{}.renoised", case.name));
        for entry in begin..n {
            let i = (entry - begin) as i64;
            let what = format!("{} entry {entry}", case.name);
            let input = s.scale_model_input(&latents, entry);
            assert_sample(&format!("{what} scaled"), &input, &scaled.get(i));
            let mut draw = |shape: &[i64]| seeded.randn(shape);
            latents = s.step(&model_outputs.get(i), entry, &latents, &mut draw);
            let diff = assert_sample(&format!("{what} output"), &latents, &outputs.get(i));
            if diff > worst.0 {
                worst = (diff, what.clone());
            }
            if entry + 1 < n {
                assert!(has_renoised, "{what}: no re-noise reference");
                let renoised = s.add_noise(&original, &noise, entry + 1);
                assert_sample(
                    &format!("{what} re-noise"),
                    &renoised,
                    &get("renoised").get(i),
                );
            }
        }
        let after = s.add_noise(&original, &noise, n);
        if names.contains(&format!("{}.renoised_final", case.name)) {
            assert_sample(
                &format!("{} re-noise after the last step", case.name),
                &after,
                &get("renoised_final"),
            );
        } else {
            // No sigmas: past the last timestep there is no noise left to add.
            assert!(s.sigmas().is_none(), "{}: has sigmas", case.name);
            assert_eq!(max_abs_diff(&after, &original), 0.0, "{}", case.name);
        }
    }
    println!(
        "largest step-output difference: {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn euler_schedules_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("scheduler_img2img.safetensors");
    for case in file().euler {
        let mut s = build(
            SamplerKind::Euler,
            &options(&case.schedule, None),
            &config(&case.config),
            case.steps,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_values(
            &format!("{} timesteps", case.name),
            s.timesteps(),
            &case.timesteps,
        );
        assert_values(
            &format!("{} sigmas", case.name),
            &s.sigmas().expect("Euler has sigmas"),
            &case.sigmas,
        );
        assert_values(
            &format!("{} init_noise_sigma", case.name),
            &[s.init_noise_sigma()],
            &[case.init_noise_sigma],
        );
        let get = |what: &str| reference.get(&format!("{}.{what}", case.name));
        let (model_outputs, scaled, outputs) =
            (get("model_outputs"), get("scaled"), get("outputs"));
        let mut latents = get("initial") * s.init_noise_sigma();
        for i in 0..s.timesteps().len() {
            let what = format!("{} step {i}", case.name);
            let input = s.scale_model_input(&latents, i);
            assert_sample(&format!("{what} scaled"), &input, &scaled.get(i as i64));
            let mut no_noise = |_: &[i64]| -> Tensor { panic!("Euler draws no noise") };
            latents = s.step(&model_outputs.get(i as i64), i, &latents, &mut no_noise);
            assert_sample(&format!("{what} output"), &latents, &outputs.get(i as i64));
        }
    }
}

#[test]
fn euler_ancestral_refuses_respaced_schedules_and_says_what_takes_them() {
    let sd1 = config("tiny-sd1/scheduler/scheduler_config.json");
    for schedule in [Schedule::Karras, Schedule::Exponential, Schedule::Beta] {
        let built = build(
            SamplerKind::EulerAncestral,
            &SamplerOptions {
                schedule,
                ..SamplerOptions::default()
            },
            &sd1,
            4,
        );
        let err = match built {
            Ok(_) => panic!("euler_a took {schedule}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("Euler ancestral has no such option")
                && err.contains("euler or dpmpp_2m")
                && err.contains(schedule.name()),
            "{err}"
        );
    }
}
