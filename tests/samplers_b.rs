//! UniPC, DEIS, LCM and TCD against diffusers 0.42: timesteps, sigmas, whole sampling runs,
//! LCM's guidance-scale embedding and end-to-end images, from the references that
//! scripts/fixtures/schedulers3_ref.py computed.
mod common;

use common::{
    assert_close, copy_dir, fixture_path, max_abs_diff, reference_path, tiny_sd1, Reference,
};
use easel::engine::models::embeddings::guidance_scale_embedding;
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use easel::engine::random::SeededNoise;
use easel::engine::schedulers::{
    build, DeisMultistep, Lcm, SamplerKind, Scheduler, SchedulerConfig, Tcd, UniPcMultistep,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

/// Step outputs: absolute for values up to 1, else relative to the largest value. UniPC, LCM
/// and TCD agree to about 1e-6; DEIS to a few 1e-6 relative, as diffusers takes its
/// coefficients' logarithms with numpy's float32 log, which rounds differently from libtorch's.
const SAMPLE_TOL: f64 = 1e-4;
/// Timesteps and sigmas: relative.
const SCHEDULE_TOL: f64 = 1e-6;
/// Decoded images in [0, 1].
const IMAGE_TOL: f64 = 1e-3;

#[derive(Deserialize)]
struct Cases {
    shape: Vec<i64>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    sampler: String,
    config: String,
    steps: usize,
    gamma: Option<f64>,
    timesteps: Vec<f64>,
    sigmas: Option<Vec<f64>>,
    init_noise_sigma: f64,
    data_seed: u64,
    noise_seed: Option<u64>,
}

impl Case {
    fn kind(&self) -> SamplerKind {
        self.sampler.parse().expect("reference sampler name")
    }

    fn config(&self) -> SchedulerConfig {
        let path = fixture_path(&self.config);
        SchedulerConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// The scheduler as the case ran it in diffusers (TCD with the case's gamma).
    fn scheduler(&self) -> Box<dyn Scheduler> {
        let config = self.config();
        match (self.kind(), self.gamma) {
            (SamplerKind::Tcd, Some(gamma)) => {
                Box::new(Tcd::with_gamma(&config, self.steps, gamma).unwrap())
            }
            (kind, _) => build(kind, &Default::default(), &config, self.steps)
                .unwrap_or_else(|e| panic!("{}: {e}", self.name)),
        }
    }
}

fn cases() -> Cases {
    let path = reference_path("samplers_b.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/make-fixtures", path.display()));
    let cases: Cases = serde_json::from_str(&text).expect("samplers_b.json parses");
    for kind in [
        SamplerKind::UniPc,
        SamplerKind::Deis,
        SamplerKind::Lcm,
        SamplerKind::Tcd,
    ] {
        let n = cases.cases.iter().filter(|c| c.kind() == kind).count();
        assert!(n >= 15, "the reference holds only {n} {kind} cases");
    }
    cases
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
fn timesteps_and_sigmas_match_diffusers() {
    let _guard = tch::no_grad_guard();
    for case in cases().cases {
        let config = case.config();
        let (timesteps, sigmas) = match case.kind() {
            SamplerKind::UniPc => {
                let s = UniPcMultistep::new(&config, case.steps).unwrap();
                (s.timesteps().to_vec(), Some(s.sigmas()))
            }
            SamplerKind::Deis => {
                let s = DeisMultistep::new(&config, case.steps).unwrap();
                (s.timesteps().to_vec(), Some(s.sigmas()))
            }
            SamplerKind::Lcm => {
                let s = Lcm::new(&config, case.steps).unwrap();
                (s.timesteps().to_vec(), None)
            }
            SamplerKind::Tcd => {
                let s = Tcd::new(&config, case.steps).unwrap();
                (s.timesteps().to_vec(), None)
            }
            other => panic!("{}: {other} is not in this reference", case.name),
        };
        assert_values(
            &format!("{} timesteps", case.name),
            &timesteps,
            &case.timesteps,
        );
        let init = case.scheduler().init_noise_sigma();
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

/// How many noise draws diffusers makes at `step` of `n`.
fn expected_draws(case: &Case, step: usize, n: usize) -> usize {
    let last = step + 1 == n;
    match case.kind() {
        SamplerKind::Lcm => usize::from(!last),
        SamplerKind::Tcd => usize::from(!last && case.gamma.unwrap_or(0.3) > 0.0),
        _ => 0,
    }
}

/// One test for every run: the stochastic samplers draw from libtorch's global generator,
/// which tests running in parallel threads would otherwise share.
#[test]
fn sampling_runs_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("samplers_b.safetensors");
    let all = cases();
    let mut worst = (0.0f64, String::new());
    for case in &all.cases {
        let mut scheduler = case.scheduler();
        let n = scheduler.timesteps().len();
        // The inputs come from the case's seed, drawn as the script drew them.
        let (initial, model_outputs) = {
            let data = SeededNoise::new(case.data_seed, Kind::Float, Device::Cpu);
            let initial = data.randn(&all.shape);
            let mut shape = vec![n as i64];
            shape.extend(&all.shape);
            (initial, data.randn(&shape))
        };
        let outputs = reference.get(&format!("{}.outputs", case.name));
        assert_eq!(outputs.size()[0], n as i64, "{}: step count", case.name);
        let seeded = SeededNoise::new(case.noise_seed.unwrap_or(0), Kind::Float, Device::Cpu);
        let mut draws: Vec<Vec<i64>> = Vec::new();
        let mut latents = initial * scheduler.init_noise_sigma();
        for i in 0..n {
            let what = format!("{} step {i}", case.name);
            let model_output = model_outputs.get(i as i64);
            let input = scheduler.scale_model_input(&latents, i);
            assert!(input.equal(&latents), "{what}: the input is not scaled");
            let drawn_before = draws.len();
            let mut noise = |shape: &[i64]| {
                draws.push(shape.to_vec());
                seeded.randn(shape)
            };
            latents = scheduler.step(&model_output, i, &latents, &mut noise);
            assert_eq!(
                draws.len() - drawn_before,
                expected_draws(case, i, n),
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
        let finite = bool::try_from(latents.isfinite().all()).unwrap();
        assert!(finite, "{}: non-finite latents", case.name);
    }
    println!(
        "largest step-output difference: {:e} ({})",
        worst.0, worst.1
    );
}

#[test]
fn guidance_scale_embedding_matches_diffusers() {
    let reference = Reference::open("samplers_b.safetensors");
    let w = reference.get("guidance.w");
    for dim in [8, 16, 7, 256] {
        let expected = reference.get(&format!("guidance.{dim}"));
        let actual = guidance_scale_embedding(&w, dim);
        assert_eq!(actual.size(), [w.size()[0], dim]);
        assert_close(&format!("width {dim}"), &actual, &expected, 1e-6);
    }
}

#[derive(Deserialize)]
struct PipelineCase {
    model: String,
    sampler: String,
    seed: u64,
    height: i64,
    width: i64,
    cfg: f64,
    steps: usize,
    prompt: String,
    negative: String,
    gamma: Option<f64>,
}

/// tiny-sd1, or tiny-sd1 with the LCM-style UNet the script wrote, assembled under `scratch`.
fn model_folder(name: &str, scratch: &Path) -> std::path::PathBuf {
    match name {
        "tiny-sd1" => tiny_sd1(),
        "tiny-sd1+samplers_b_lcm_unet" => {
            let dir = scratch.join("tiny-sd1-lcm");
            if !dir.exists() {
                copy_dir(&tiny_sd1(), &dir);
                std::fs::remove_dir_all(dir.join("unet")).unwrap();
                copy_dir(&reference_path("samplers_b_lcm_unet"), &dir.join("unet"));
            }
            dir
        }
        other => panic!("unknown model {other} in the reference"),
    }
}

#[test]
fn images_match_diffusers() {
    let text = std::fs::read_to_string(reference_path("samplers_b_pipeline.json")).unwrap();
    let cases: BTreeMap<String, PipelineCase> = serde_json::from_str(&text).unwrap();
    let reference = Reference::open("samplers_b_pipeline.safetensors");
    let scratch = common::scratch();
    let mut models: BTreeMap<String, StableDiffusion> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let never = AtomicBool::new(false);
    for (name, case) in &cases {
        let model = models.entry(case.model.clone()).or_insert_with(|| {
            let dir = model_folder(&case.model, scratch.path());
            StableDiffusion::load(&dir, Device::Cpu, Kind::Float).unwrap()
        });
        // The engine's TCD runs with gamma 0.3, the value every case uses.
        assert!(case.gamma.is_none_or(|g| g == 0.3), "{name}: gamma");
        let request = TextToImage {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: case.steps,
            guidance_scale: case.cfg,
            seed: case.seed,
            width: case.width,
            height: case.height,
            batch_size: 1,
            sampler: case.sampler.parse().unwrap(),
            schedule: Default::default(),
            timestep_spacing: None,
            preview_every: 0,
            clip_skip: 1,
            guidance_rescale: 0.0,
            embeddings: Vec::new(),
            init: None,
        };
        let mut steps_seen = 0;
        let out = model
            .generate(&request, &mut |p| steps_seen = p.step, &never)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(steps_seen, case.steps, "{name}: one callback per step");
        assert_close(name, &out.float_images, &reference.get(name), IMAGE_TOL);
        seen.insert((case.sampler.clone(), case.model.clone()));
    }
    for sampler in ["unipc", "deis", "lcm", "tcd"] {
        assert!(
            seen.iter().any(|(s, _)| s == sampler),
            "no end-to-end case for {sampler}"
        );
    }
    assert!(
        seen.iter().any(|(_, m)| m.contains("lcm_unet")),
        "no case with an LCM-style UNet"
    );
}

#[test]
fn names_and_a1111_aliases() {
    for (name, display, kind) in [
        ("unipc", "UniPC", SamplerKind::UniPc),
        ("deis", "DEIS", SamplerKind::Deis),
        ("lcm", "LCM", SamplerKind::Lcm),
        ("tcd", "TCD", SamplerKind::Tcd),
    ] {
        assert_eq!(kind.name(), name);
        assert_eq!(kind.display_name(), display);
        assert_eq!(name.parse::<SamplerKind>().unwrap(), kind);
        assert_eq!(display.parse::<SamplerKind>().unwrap(), kind);
        assert!(SamplerKind::ALL.contains(&kind));
        let json = serde_json::to_string(&kind).unwrap();
        assert_eq!(json, format!("{name:?}"));
        assert_eq!(serde_json::from_str::<SamplerKind>(&json).unwrap(), kind);
    }
    assert_eq!("Uni-PC".parse::<SamplerKind>().unwrap(), SamplerKind::UniPc);
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
    let ours = [
        SamplerKind::UniPc,
        SamplerKind::Deis,
        SamplerKind::Lcm,
        SamplerKind::Tcd,
    ];
    for kind in ours {
        assert!(build_error(kind, "{}", 0).contains("0 steps"), "{kind}");
        let err = build_error(kind, r#"{"thresholding": true}"#, 4);
        assert!(err.contains("thresholding"), "{kind}: {err}");
    }
    for kind in [SamplerKind::UniPc, SamplerKind::Deis] {
        for (json, must_say) in [
            (
                r#"{"use_karras_sigmas": true, "use_beta_sigmas": true}"#,
                "more than one",
            ),
            (r#"{"use_flow_sigmas": true}"#, "use_flow_sigmas"),
            (r#"{"solver_order": 0}"#, "solver_order"),
            (r#"{"solver_type": "euler"}"#, "\"euler\""),
        ] {
            let err = build_error(kind, json, 4);
            assert!(err.contains(must_say), "{kind} {json}: {err}");
        }
    }
    for kind in [SamplerKind::Lcm, SamplerKind::Tcd] {
        let err = build_error(kind, "{}", 51);
        assert!(err.contains("at most 50"), "{kind}: {err}");
        let err = build_error(kind, r#"{"original_inference_steps": 0}"#, 4);
        assert!(err.contains("original_inference_steps"), "{kind}: {err}");
        assert!(
            build(kind, &Default::default(), &SchedulerConfig::default(), 50).is_ok(),
            "{kind}"
        );
    }
    let config = SchedulerConfig::default();
    for gamma in [-0.1, 1.5, f64::NAN] {
        let err = Tcd::with_gamma(&config, 4, gamma).err().expect("refused");
        assert!(err.to_string().contains("gamma"), "{gamma}: {err}");
    }
}
