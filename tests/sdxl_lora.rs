//! LoRAs on SDXL, text_encoder_2 included, against diffusers' `load_lora_weights` +
//! `fuse_lora` on the tiny SDXL model (scripts/fixtures/sdxl_prompt_ref.py): a diffusers/PEFT
//! file on the UNet and both text encoders, and a kohya file on `lora_te2_*` only. Images within
//! 1e-3 of diffusers'; unloading gives the base model's image bit for bit.
mod common;

use common::{assert_close, cached_fixture, max_abs_diff, reference_path, tiny_sd1, Reference};
use easel::engine::lora::LoraSpec;
use easel::engine::pipeline::{LoadOptions, StableDiffusion, TextToImage};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

#[derive(serde::Deserialize)]
struct Image {
    prompt: String,
    negative: String,
    seed: u64,
    #[serde(default)]
    lora: Option<String>,
    #[serde(default)]
    weight: Option<f64>,
}

#[derive(serde::Deserialize)]
struct Meta {
    images: BTreeMap<String, Image>,
    steps: usize,
    cfg: f64,
    size: i64,
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(reference_path("sdxl_prompt.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn spec(case: &Image) -> LoraSpec {
    LoraSpec {
        path: reference_path("sdxl_lora").join(case.lora.as_ref().unwrap()),
        weight: case.weight.unwrap(),
    }
}

fn load(loras: Vec<LoraSpec>) -> StableDiffusion {
    let options = LoadOptions {
        loras,
        ..Default::default()
    };
    StableDiffusion::load_with(
        &cached_fixture("tiny-sdxl"),
        Device::Cpu,
        Kind::Float,
        &options,
    )
    .unwrap()
}

fn render(sd: &StableDiffusion, meta: &Meta, case: &Image) -> Tensor {
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
    sd.generate(&request, &mut |_| {}, &AtomicBool::new(false))
        .unwrap()
        .float_images
}

#[test]
fn peft_and_kohya_loras_on_text_encoder_2_match_diffusers_fuse_lora() {
    let _guard = tch::no_grad_guard();
    let meta = meta();
    let reference = Reference::open("sdxl_prompt.safetensors");
    for name in ["lora-peft", "lora-kohya-te2"] {
        let case = &meta.images[name];
        let sd = load(vec![spec(case)]);
        let image = render(&sd, &meta, case);
        assert_close(name, &image, &reference.get(&format!("image.{name}")), 1e-3);
    }
}

#[test]
fn unloading_restores_the_base_weights() {
    let _guard = tch::no_grad_guard();
    let meta = meta();
    let reference = Reference::open("sdxl_prompt.safetensors");
    let base = &meta.images["base"];
    let fresh = render(&load(Vec::new()), &meta, base);
    assert_close("base", &fresh, &reference.get("image.base"), 1e-3);

    let lora = &meta.images["lora-kohya-te2"];
    let mut sd = load(vec![spec(lora)]);
    assert!(max_abs_diff(&render(&sd, &meta, base), &fresh) > 1e-2);
    sd.set_loras(&[]).unwrap();
    assert_eq!(max_abs_diff(&render(&sd, &meta, base), &fresh), 0.0);
    // And on again: the text_encoder_2 LoRA is fused by set_loras too.
    sd.set_loras(&[spec(lora)]).unwrap();
    let image = render(&sd, &meta, lora);
    assert_close(
        "lora-kohya-te2 after set_loras",
        &image,
        &reference.get("image.lora-kohya-te2"),
        1e-3,
    );
}

#[test]
fn an_sdxl_lora_is_refused_by_an_sd1_model() {
    let _guard = tch::no_grad_guard();
    let meta = meta();
    let options = LoadOptions {
        loras: vec![spec(&meta.images["lora-kohya-te2"])],
        ..Default::default()
    };
    let err = StableDiffusion::load_with(&tiny_sd1(), Device::Cpu, Kind::Float, &options)
        .err()
        .expect("SD 1.x has no text_encoder_2");
    let message = err.to_string();
    assert!(
        message.contains("text_encoder_2") && message.contains("another model version"),
        "{message}"
    );
}
