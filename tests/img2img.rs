//! img2img against diffusers' StableDiffusionImg2ImgPipeline (SD 1.x with ddim, euler,
//! euler_a and dpmpp_2m at two strengths, not square, unguided, a batch; SD 2.x v-prediction)
//! and StableDiffusionXLImg2ImgPipeline: float images within 1e-3, and the steps that run.
mod common;
mod img2img_cases;

use common::{assert_close, Reference};
use easel::engine::img2img::InitImage;
use img2img_cases::{cases, load, request};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

fn images_match(model: &str, min_cases: usize) {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("img2img.safetensors");
    let cases: Vec<_> = cases("img2img")
        .into_iter()
        .filter(|(_, c)| c.model == model)
        .collect();
    assert!(cases.len() >= min_cases, "{model}: {} cases", cases.len());
    let sd = load(model);
    let never = AtomicBool::new(false);
    for (name, c) in &cases {
        let mut steps = Vec::new();
        let out = sd
            .generate(
                &request(&reference, name, c, false),
                &mut |p| steps.push((p.step, p.steps)),
                &never,
            )
            .unwrap();
        assert_close(name, &out.float_images, &reference.get(name), 1e-3);
        // diffusers runs int(steps * strength) steps.
        let runs = ((c.steps as f64 * c.strength) as usize).min(c.steps);
        let expected: Vec<_> = (1..=runs).map(|s| (s, runs)).collect();
        assert_eq!(steps, expected, "{name}: progress");
    }
}

#[test]
fn sd1_img2img_matches_diffusers_for_every_sampler_and_strength() {
    let cases = cases("img2img");
    let sd1: BTreeSet<(&str, u64)> = cases
        .iter()
        .filter(|(_, c)| c.model == "tiny-sd1")
        .map(|(_, c)| (c.sampler.as_str(), (c.strength * 100.0) as u64))
        .collect();
    for sampler in ["ddim", "euler", "euler_a", "dpmpp_2m"] {
        assert!(
            sd1.contains(&(sampler, 50)) && sd1.contains(&(sampler, 75)),
            "{sampler}"
        );
    }
    images_match("tiny-sd1", 10);
}

#[test]
fn sd2_v_prediction_img2img_matches_diffusers() {
    images_match("tiny-sd2", 1);
}

#[test]
fn sdxl_img2img_matches_diffusers() {
    images_match("tiny-sdxl", 2);
}

#[test]
fn strengths_that_run_no_step_or_are_out_of_range_are_refused() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("img2img.safetensors");
    let (name, case) = cases("img2img")
        .into_iter()
        .find(|(_, c)| c.model == "tiny-sd1" && c.batch == 1)
        .unwrap();
    let sd = load("tiny-sd1");
    let never = AtomicBool::new(false);
    for (strength, word) in [(0.2, "no step"), (0.0, "strength"), (1.5, "strength")] {
        let mut req = request(&reference, &name, &case, false);
        let init = req.init.take().unwrap();
        req.init = Some(InitImage { strength, ..init });
        let err = sd
            .generate(&req, &mut |_| {}, &never)
            .unwrap_err()
            .to_string();
        assert!(err.contains(word), "strength {strength}: {err}");
    }
    // An image of another size than the render.
    let mut req = request(&reference, &name, &case, false);
    req.width += 8;
    let err = sd
        .generate(&req, &mut |_| {}, &never)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resize"), "{err}");
}
