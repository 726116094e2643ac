//! End-to-end parity with diffusers' StableDiffusionPipeline on the tiny SD 1.x model: same
//! weights, seed, sampler and size give the same image (float images within 1e-3).
mod common;

use common::{assert_close, reference_path, tiny_sd1, Reference};
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use easel::engine::prompt::escape_attention;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind};

#[derive(serde::Deserialize)]
struct Case {
    sampler: String,
    seed: u64,
    height: i64,
    width: i64,
    cfg: f64,
    prompt: String,
    negative: String,
    batch: i64,
    steps: usize,
}

/// diffusers reads prompts as plain text, so they are escaped from A1111's weighting syntax
/// (which tests/prompt*.rs check).
fn request(case: &Case) -> TextToImage {
    TextToImage {
        prompt: escape_attention(&case.prompt),
        negative_prompt: escape_attention(&case.negative),
        steps: case.steps,
        guidance_scale: case.cfg,
        seed: case.seed,
        width: case.width,
        height: case.height,
        batch_size: case.batch,
        sampler: case.sampler.parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    }
}

#[test]
fn images_match_diffusers() {
    let text = std::fs::read_to_string(reference_path("pipeline.json")).unwrap();
    let cases: std::collections::BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    assert!(
        cases.len() >= 24,
        "the reference should hold every sampler, seed, size and guidance case"
    );
    let reference = Reference::open("pipeline.safetensors");
    let model = StableDiffusion::load(&tiny_sd1(), common::test_device(), Kind::Float).unwrap();
    let never = AtomicBool::new(false);
    for (name, case) in &cases {
        let mut steps_seen = Vec::new();
        let out = model
            .generate(&request(case), &mut |p| steps_seen.push(p.step), &never)
            .unwrap();
        assert_eq!(
            steps_seen,
            (1..=case.steps).collect::<Vec<_>>(),
            "{name}: one callback per step"
        );
        assert_eq!(out.images.len() as i64, case.batch, "{name}");
        assert_close(name, &out.float_images, &reference.get(name), 1e-3);
    }
}

#[test]
fn progress_carries_previews_and_cancel_stops_within_a_step() {
    let model = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    let mut req = TextToImage {
        prompt: "a red fox".into(),
        negative_prompt: String::new(),
        steps: 6,
        guidance_scale: 7.5,
        seed: 1,
        width: 64,
        height: 48,
        batch_size: 1,
        sampler: "euler".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 2,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    };
    let mut previews = Vec::new();
    let never = AtomicBool::new(false);
    model
        .generate(
            &req,
            &mut |p| previews.push((p.step, p.preview.as_ref().map(|i| (i.width, i.height)))),
            &never,
        )
        .unwrap();
    let with_preview: Vec<_> = previews.iter().filter(|(_, p)| p.is_some()).collect();
    assert_eq!(with_preview.len(), 3);
    assert_eq!(
        with_preview[0].1,
        Some((32, 24)),
        "previews are at latent resolution"
    );

    // Cancel after the second step: no third step runs.
    req.preview_every = 0;
    let cancel = AtomicBool::new(false);
    let mut seen = 0;
    let result = model.generate(
        &req,
        &mut |p| {
            seen = p.step;
            if p.step == 2 {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        },
        &cancel,
    );
    assert!(matches!(result, Err(easel::engine::EngineError::Cancelled)));
    assert_eq!(seen, 2);
}

#[test]
fn sizes_that_do_not_fit_are_refused_with_a_suggestion() {
    let model = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(model.latent_scale_factor(), 2);
    assert_eq!((model.defaults().width, model.defaults().height), (64, 64));
    let err = model.check_size(70, 64).unwrap_err().to_string();
    assert!(
        err.contains("multiple of 8") && err.contains("72x64"),
        "{err}"
    );
}

#[test]
fn same_seed_same_image_bf16_close_to_fp32() {
    let req = TextToImage {
        prompt: "a red fox".into(),
        negative_prompt: String::new(),
        steps: 3,
        guidance_scale: 5.0,
        seed: 99,
        width: 64,
        height: 64,
        batch_size: 1,
        sampler: "euler_a".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    };
    let never = AtomicBool::new(false);
    let fp32 = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    let a = fp32.generate(&req, &mut |_| {}, &never).unwrap();
    let b = fp32.generate(&req, &mut |_| {}, &never).unwrap();
    assert_eq!(
        a.images[0].rgb, b.images[0].rgb,
        "a seed reproduces its image exactly"
    );
    let bf16 = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::BFloat16).unwrap();
    let c = bf16.generate(&req, &mut |_| {}, &never).unwrap();
    let diff = (&a.float_images - &c.float_images)
        .abs()
        .mean(Kind::Double)
        .double_value(&[]);
    // bf16 keeps 8 bits of mantissa: the mean pixel moves by well under 5%.
    assert!(diff < 0.05, "bf16 mean abs diff {diff}");
}
