//! Inpainting against diffusers' StableDiffusionInpaintPipeline and
//! StableDiffusionXLInpaintPipeline (SD 1.x, SD 2.x v-prediction, SDXL): with 9-channel UNets and
//! with regular UNets by latent blending, two samplers each, one with mask blur (float images within 1e-3); the mask blur and overlay equal PIL's byte for byte; --keep-unmasked keeps
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
fn sdxl_nine_channel_inpainting_matches_diffusers() {
    images_match("tiny-sdxl-inpaint");
}

#[test]
fn sdxl_latent_blending_matches_diffusers() {
    images_match("tiny-sdxl");
}

#[test]
fn sd2_nine_channel_inpainting_matches_diffusers() {
    images_match("tiny-sd2-inpaint");
}

#[test]
fn sd2_latent_blending_matches_diffusers() {
    images_match("tiny-sd2");
}

#[test]
fn an_inpainting_model_needs_a_mask() {
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
}

fn easel(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .env("EASEL_HOME", home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("easel runs")
}

fn png_rgb(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let rgb = image::open(path).unwrap().to_rgb8();
    (rgb.width(), rgb.height(), rgb.into_raw())
}

#[test]
fn cli_inpaints_from_files_and_records_the_recipe() {
    let reference = Reference::open("img2img.safetensors");
    let (name, case) = cases("inpaint")
        .into_iter()
        .find(|(n, _)| n == "cli-inpaint")
        .unwrap();
    let root = common::scratch();
    let home = root.path().join("home");
    let (init_path, mask_path, out, again) = (
        root.path().join("photo.png"),
        root.path().join("mask.png"),
        root.path().join("out.png"),
        root.path().join("again.png"),
    );
    let init = image(&reference, &format!("{name}.image"));
    image::save_buffer(
        &init_path,
        &init.rgb,
        init.width,
        init.height,
        image::ColorType::Rgb8,
    )
    .unwrap();
    // The mask as an RGB file: read back as PIL's convert("L") (black and white stay exact).
    let mask = mask(&reference, &format!("{name}.mask"));
    let mask_rgb: Vec<u8> = mask.pixels.iter().flat_map(|&v| [v, v, v]).collect();
    image::save_buffer(
        &mask_path,
        &mask_rgb,
        mask.width,
        mask.height,
        image::ColorType::Rgb8,
    )
    .unwrap();
    let model = img2img_cases::model_dir(&case.model);
    let (steps, strength, seed) = (
        case.steps.to_string(),
        case.strength.to_string(),
        case.seed.to_string(),
    );
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (model_s, init_s, mask_s, out_s) = (s(&model), s(&init_path), s(&mask_path), s(&out));
    // No --width/--height: the init image's size.
    let args = [
        "generate",
        img2img_cases::PROMPT,
        "--model",
        &model_s,
        "--init-image",
        &init_s,
        "--mask",
        &mask_s,
        "--mask-blur",
        "0",
        "--strength",
        &strength,
        "--sampler",
        &case.sampler,
        "--steps",
        &steps,
        "--cfg",
        "7.5",
        "--seed",
        &seed,
        "--device",
        "cpu",
        "--out",
        &out_s,
    ];
    let run = easel(&home, &args);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (w, h, rgb) = png_rgb(&out);
    assert_eq!((i64::from(w), i64::from(h)), (case.width, case.height));
    // diffusers' 8-bit image is round(255 * float); floats within 1e-3 round within 1.
    let expected = (reference.get(&name) * 255.0)
        .round()
        .to_kind(tch::Kind::Uint8);
    let got = tch::Tensor::from_slice(&rgb).view([1, i64::from(h), i64::from(w), 3]);
    let diff = common::max_abs_diff(&got, &expected);
    assert!(diff <= 1.0, "PNG pixels differ from diffusers' by {diff}");

    let chunks = easel::output::png::read_text_chunks(&out).unwrap();
    let parameters = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert!(
        parameters.contains("Denoising strength: 0.75"),
        "{parameters}"
    );
    assert!(parameters.contains("Mask blur: 0"), "{parameters}");
    let recipe = easel::output::png::read_recipe(&out).unwrap().unwrap();
    let init_recipe = recipe.init.clone().unwrap();
    assert_eq!(init_recipe.image, init_s);
    assert_eq!(init_recipe.mask.as_deref(), Some(mask_s.as_str()));
    assert_eq!((init_recipe.strength, init_recipe.mask_blur), (0.75, 0));

    let info = easel(&home, &["info", &out_s, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["strength"], 0.75);
    assert_eq!(json["mask"], mask_s.as_str());
    assert_eq!(json["init_image"], init_s.as_str());

    // --from reads the init image and mask back: the same pixels.
    let run = easel(&home, &["generate", "--from", &out_s, "--out", &s(&again)]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(png_rgb(&again), (w, h, rgb));
}

#[test]
fn cli_refuses_unreadable_images_and_img2img_flags_without_an_image() {
    let root = common::scratch();
    let home = root.path().join("home");
    let model = common::tiny_sd1();
    let model = model.to_str().unwrap();
    let missing = root.path().join("nope.png");
    let missing = missing.to_str().unwrap();
    let init = root.path().join("init.png");
    image::save_buffer(&init, &[128u8; 8 * 8 * 3], 8, 8, image::ColorType::Rgb8).unwrap();
    let init = init.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--init-image", missing], "cannot read the init image"),
        (
            &["--init-image", init, "--mask", missing],
            "cannot read the mask",
        ),
        (&["--init-image", init, "--keep-unmasked"], "needs --mask"),
        (&["--mask", missing], "needs --init-image"),
        (&["--strength", "0.5"], "needs --init-image"),
        (
            &["--init-image", missing, "--strength", "1.5"],
            "strength must be",
        ),
    ];
    for (extra, word) in cases {
        let mut args = vec!["generate", "a fox", "--model", model, "--steps", "1"];
        args.extend_from_slice(extra);
        let run = easel(&home, &args);
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success() && err.contains(word),
            "{extra:?}: {err}"
        );
    }
}
