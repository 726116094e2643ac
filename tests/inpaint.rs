//! Inpainting against diffusers' StableDiffusionInpaintPipeline: with the 9-channel UNet and
//! with a regular UNet by latent blending, two samplers each, one with mask blur (float images
//! within 1e-3); the mask blur and overlay equal PIL's byte for byte; --keep-unmasked keeps
//! every pixel outside the mask exactly.
mod common;
mod img2img_cases;

use common::{assert_close, Reference};
use easel::engine::mask::Mask;
use easel::engine::pipeline::Image;
use img2img_cases::{cases, image, load, mask, request};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

fn images_match(model: &str) {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("img2img.safetensors");
    let cases: Vec<_> = cases("inpaint")
        .into_iter()
        .filter(|(_, c)| c.model == model)
        .collect();
    let samplers: BTreeSet<&str> = cases.iter().map(|(_, c)| c.sampler.as_str()).collect();
    assert!(samplers.len() >= 2, "{model}: samplers {samplers:?}");
    assert!(
        cases.iter().any(|(_, c)| c.blur > 0),
        "{model}: a blurred mask"
    );
    assert!(
        cases.iter().any(|(_, c)| c.strength == 1.0),
        "{model}: strength 1"
    );
    assert!(
        cases.iter().any(|(_, c)| c.strength < 1.0),
        "{model}: strength < 1"
    );
    let sd = load(model);
    let never = AtomicBool::new(false);
    for (name, c) in &cases {
        let out = sd
            .generate(&request(&reference, name, c, false), &mut |_| {}, &never)
            .unwrap();
        assert_close(name, &out.float_images, &reference.get(name), 1e-3);
    }
}

#[test]
fn nine_channel_inpainting_matches_diffusers() {
    images_match("tiny-sd1-inpaint");
}

#[test]
fn latent_blending_with_a_regular_unet_matches_diffusers() {
    images_match("tiny-sd1");
}

#[test]
fn mask_blur_is_pils_gaussian_blur() {
    let reference = Reference::open("img2img.safetensors");
    let input = mask(&reference, "blur.input");
    for radius in [1, 2, 3, 4, 8] {
        let expected = mask(&reference, &format!("blur.r{radius}"));
        let blurred = input.gaussian_blur(radius);
        let differing = blurred
            .pixels
            .iter()
            .zip(&expected.pixels)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 0, "radius {radius}: {differing} pixels differ");
        assert_ne!(blurred, input, "radius {radius} blurs");
    }
}

#[test]
fn overlay_is_diffusers_apply_overlay() {
    let reference = Reference::open("img2img.safetensors");
    let out = mask(&reference, "overlay.mask")
        .overlay(
            &image(&reference, "overlay.init"),
            &image(&reference, "overlay.render"),
        )
        .unwrap();
    assert_eq!(out.rgb, image(&reference, "overlay.out").rgb);
}

#[test]
fn keep_unmasked_keeps_every_pixel_outside_the_mask_exactly() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("img2img.safetensors");
    let never = AtomicBool::new(false);
    // A sharp mask and a blurred one (whose blend zone is left out of the counts).
    for (model, blurred) in [("tiny-sd1-inpaint", false), ("tiny-sd1", true)] {
        let (name, case) = cases("inpaint")
            .into_iter()
            .find(|(_, c)| c.model == model && (c.blur > 0) == blurred)
            .unwrap();
        let sd = load(model);
        let req = request(&reference, &name, &case, true);
        let init = req.init.clone().unwrap();
        let blurred: Mask = init.mask.as_ref().unwrap().blurred();
        let plain = sd
            .generate(
                &request(&reference, &name, &case, false),
                &mut |_| {},
                &never,
            )
            .unwrap();
        let kept = sd.generate(&req, &mut |_| {}, &never).unwrap();
        let (plain, kept): (&Image, &Image) = (&plain.images[0], &kept.images[0]);
        fn px(img: &Image, i: usize) -> &[u8] {
            &img.rgb[3 * i..3 * i + 3]
        }
        let (mut outside, mut changed_outside, mut inside, mut same_inside) = (0, 0, 0, 0);
        for (i, &m) in blurred.pixels.iter().enumerate() {
            match m {
                0 => {
                    outside += 1;
                    assert_eq!(
                        px(kept, i),
                        px(&init.image, i),
                        "{model}: pixel {i} outside the mask"
                    );
                    changed_outside += usize::from(px(plain, i) != px(&init.image, i));
                }
                255 => {
                    inside += 1;
                    assert_eq!(
                        px(kept, i),
                        px(plain, i),
                        "{model}: pixel {i} inside the mask"
                    );
                    same_inside += usize::from(px(plain, i) == px(&init.image, i));
                }
                _ => {}
            }
        }
        assert!(
            outside > 50 && inside > 20,
            "{model}: {outside} out, {inside} in"
        );
        // Without the overlay the render does change the unmasked pixels (so the test means it).
        assert!(
            changed_outside > outside / 2,
            "{model}: {changed_outside}/{outside}"
        );
        assert!(same_inside < inside / 2, "{model}: {same_inside}/{inside}");
    }
}

#[test]
fn an_inpainting_model_needs_a_mask_and_sdxl_inpainting_is_refused() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("img2img.safetensors");
    let never = AtomicBool::new(false);
    let (name, case) = cases("inpaint")
        .into_iter()
        .find(|(_, c)| c.model == "tiny-sd1-inpaint")
        .unwrap();
    let sd = load("tiny-sd1-inpaint");
    let mut req = request(&reference, &name, &case, false);
    req.init.as_mut().unwrap().mask = None;
    let err = sd
        .generate(&req, &mut |_| {}, &never)
        .unwrap_err()
        .to_string();
    assert!(err.contains("mask"), "{err}");
    let sdxl = load("tiny-sdxl");
    let err = sdxl
        .generate(
            &request(&reference, &name, &case, false),
            &mut |_| {},
            &never,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("SDXL"), "{err}");
}
