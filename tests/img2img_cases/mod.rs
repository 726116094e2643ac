//! The img2img and inpainting reference cases (scripts/fixtures/img2img_ref.py), shared by
//! tests/img2img.rs and tests/inpaint.rs.
use crate::common::{cached_fixture, reference_path, tiny_sd1, Reference};
use easel::engine::img2img::{InitImage, InpaintMask};
use easel::engine::mask::Mask;
use easel::engine::pipeline::{Image, StableDiffusion, TextToImage};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

pub const PROMPT: &str = "a red fox in the snow";

#[derive(serde::Deserialize, Clone)]
pub struct Case {
    pub kind: String,
    pub model: String,
    pub sampler: String,
    pub strength: f64,
    pub seed: u64,
    pub height: i64,
    pub width: i64,
    pub cfg: f64,
    pub steps: usize,
    pub batch: i64,
    #[serde(default)]
    pub blur: u32,
}

pub fn cases(kind: &str) -> Vec<(String, Case)> {
    let text = std::fs::read_to_string(reference_path("img2img.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    cases.into_iter().filter(|(_, c)| c.kind == kind).collect()
}

pub fn model_dir(model: &str) -> PathBuf {
    if model == "tiny-sd1" {
        tiny_sd1()
    } else {
        cached_fixture(model)
    }
}

pub fn load(model: &str) -> StableDiffusion {
    StableDiffusion::load(&model_dir(model), Device::Cpu, Kind::Float).unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let n = t.numel();
    let mut v = vec![0u8; n];
    t.copy_data(&mut v, n);
    v
}

pub fn image(reference: &Reference, name: &str) -> Image {
    let t = reference.get(name);
    let s = t.size();
    Image {
        width: s[1] as u32,
        height: s[0] as u32,
        rgb: bytes(&t),
    }
}

pub fn mask(reference: &Reference, name: &str) -> Mask {
    let t = reference.get(name);
    let s = t.size();
    Mask::new(s[1] as u32, s[0] as u32, bytes(&t)).unwrap()
}

/// The engine request of a case, with its image (and mask) from the reference file.
pub fn request(reference: &Reference, name: &str, c: &Case, keep_unmasked: bool) -> TextToImage {
    let mask = (c.kind == "inpaint").then(|| InpaintMask {
        mask: mask(reference, &format!("{name}.mask")),
        blur: c.blur,
        keep_unmasked,
    });
    TextToImage {
        prompt: PROMPT.into(),
        steps: c.steps,
        guidance_scale: c.cfg,
        seed: c.seed,
        width: c.width,
        height: c.height,
        batch_size: c.batch,
        sampler: c.sampler.parse().unwrap(),
        clip_skip: 1,
        init: Some(InitImage {
            image: image(reference, &format!("{name}.image")),
            strength: c.strength,
            mask,
        }),
        ..Default::default()
    }
}
