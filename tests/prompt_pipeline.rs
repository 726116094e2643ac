//! Prompt features end to end on the tiny SD 1.x model (64x64, 4 Euler steps, seeded), against
//! diffusers' StableDiffusionPipeline (scripts/fixtures/prompt_ref.py): clip skip 2 (diffusers'
//! clip_skip=1), guidance rescale 0.7, textual inversion loaded with `load_textual_inversion`,
//! and a long weighted prompt pair given to diffusers as prompt_embeds from the A1111
//! re-implementation. Float images within 1e-3.
mod common;

use common::{assert_close, reference_path, tiny_sd1, Reference};
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind};

#[derive(Deserialize)]
struct ImageCase {
    prompt: String,
    #[serde(default)]
    negative: String,
    seed: u64,
    #[serde(default)]
    clip_skip: u32,
    #[serde(default)]
    guidance_rescale: f64,
}

#[derive(Deserialize)]
struct Meta {
    images: BTreeMap<String, ImageCase>,
    steps: usize,
    cfg: f64,
    sampler: String,
}

#[test]
fn images_match_diffusers() {
    let text = std::fs::read_to_string(reference_path("prompt.json")).unwrap();
    let meta: Meta = serde_json::from_str(&text).unwrap();
    assert_eq!(meta.images.len(), 4);
    let reference = Reference::open("prompt.safetensors");
    let model = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    let never = AtomicBool::new(false);
    for (name, case) in &meta.images {
        let request = TextToImage {
            prompt: case.prompt.clone(),
            negative_prompt: case.negative.clone(),
            steps: meta.steps,
            guidance_scale: meta.cfg,
            seed: case.seed,
            width: 64,
            height: 64,
            batch_size: 1,
            sampler: meta.sampler.parse().unwrap(),
            schedule: Default::default(),
            timestep_spacing: None,
            preview_every: 0,
            clip_skip: case.clip_skip,
            guidance_rescale: case.guidance_rescale,
            embeddings: vec![reference_path("prompt-embeddings")],
            init: None,
        };
        let out = model.generate(&request, &mut |_| {}, &never).unwrap();
        let key = format!("image.{name}");
        assert_close(name, &out.float_images, &reference.get(&key), 1e-3);
    }
}

#[test]
fn a_missing_embeddings_folder_is_an_error() {
    let model = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).unwrap();
    let request = TextToImage {
        prompt: "a fox".into(),
        negative_prompt: String::new(),
        steps: 1,
        guidance_scale: 1.0,
        seed: 1,
        width: 64,
        height: 64,
        batch_size: 1,
        sampler: "euler".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: vec![reference_path("no-such-folder")],
        init: None,
    };
    let err = model
        .generate(&request, &mut |_| {}, &AtomicBool::new(false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-folder"), "{err}");
}
