//! Single-file SDXL checkpoints (the original sgm layout: `model.diffusion_model.`,
//! `first_stage_model.`, `conditioner.embedders.0/1.`) against diffusers' `from_single_file`:
//! the tiny SDXL model written in that layout by scripts/fixtures/sdxl_prompt_ref.py renders
//! diffusers' image within 1e-3, and exactly the folder's image.
mod common;

use common::{assert_close, cached_fixture, max_abs_diff, reference_path, Reference};
use easel::engine::family::Family;
use easel::engine::pipeline::{LoadOptions, StableDiffusion, TextToImage};
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind};

#[derive(serde::Deserialize)]
struct Image {
    prompt: String,
    negative: String,
    seed: u64,
}

#[derive(serde::Deserialize)]
struct Meta {
    images: std::collections::BTreeMap<String, Image>,
    steps: usize,
    cfg: f64,
    size: i64,
}

#[test]
fn single_file_sdxl_renders_diffusers_from_single_file_image() {
    let _guard = tch::no_grad_guard();
    let text = std::fs::read_to_string(reference_path("sdxl_prompt.json")).unwrap();
    let meta: Meta = serde_json::from_str(&text).unwrap();
    let case = &meta.images["single-file"];
    let file = reference_path("sdxl_checkpoint/tiny-sdxl.safetensors");
    let folder = cached_fixture("tiny-sdxl");
    let options = LoadOptions {
        config: Some(folder.clone()),
        ..Default::default()
    };
    let single = StableDiffusion::load_with(&file, Device::Cpu, Kind::Float, &options).unwrap();
    assert_eq!(single.info().family, Family::Sdxl);
    assert_eq!(single.name(), "tiny-sdxl");
    let request = TextToImage {
        prompt: case.prompt.clone(),
        negative_prompt: case.negative.clone(),
        steps: meta.steps,
        guidance_scale: meta.cfg,
        seed: case.seed,
        width: meta.size,
        height: meta.size,
        ..Default::default()
    };
    let never = AtomicBool::new(false);
    let image = single
        .generate(&request, &mut |_| {}, &never)
        .unwrap()
        .float_images;
    let reference = Reference::open("sdxl_prompt.safetensors");
    assert_close(
        "single-file",
        &image,
        &reference.get("image.single-file"),
        1e-3,
    );
    let from_folder = StableDiffusion::load(&folder, Device::Cpu, Kind::Float)
        .unwrap()
        .generate(&request, &mut |_| {}, &never)
        .unwrap()
        .float_images;
    assert_eq!(max_abs_diff(&image, &from_folder), 0.0);
}
