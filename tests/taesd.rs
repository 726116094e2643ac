//! TAESD (diffusers' `AutoencoderTiny`) against diffusers on a tiny random-weight model
//! (model and references from scripts/fixtures/perf_ref.py).
mod common;

use common::{assert_close, reference_path, Reference};
use easel::engine::models::autoencoder_tiny::AutoencoderTiny;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn load() -> AutoencoderTiny {
    AutoencoderTiny::load(&reference_path("taesd"), common::test_device(), Kind::Float)
        .expect("the tiny TAESD loads with every weight used")
}

#[test]
fn decode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let taesd = load();
    let r = Reference::open("taesd.safetensors");
    let decoded = taesd.decode(&r.get("latents")).expect("decodes");
    assert_eq!(decoded.size(), [2, 3, 48, 40]);
    assert_close("taesd decode", &decoded, &r.get("decoded"), TOL);
}

#[test]
fn encode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let taesd = load();
    let r = Reference::open("taesd.safetensors");
    let encoded = taesd.encode(&r.get("image")).expect("encodes");
    assert_close("taesd encode", &encoded, &r.get("encoded"), TOL);
}

#[test]
fn wrong_shapes_and_missing_folders_are_errors() {
    let _guard = tch::no_grad_guard();
    let taesd = load();
    let bad = Tensor::zeros([1, 3, 8, 8], (Kind::Float, Device::Cpu));
    let err = taesd.decode(&bad).expect_err("3 channels are not latents");
    assert!(
        err.to_string().contains("[batch, 4, height, width]"),
        "{err}"
    );
    let missing = common::scratch();
    assert!(AutoencoderTiny::load(missing.path(), Device::Cpu, Kind::Float).is_err());
}

#[test]
fn a_fast_decoder_of_another_scale_is_refused() {
    let _guard = tch::no_grad_guard();
    let mut sd = easel::engine::pipeline::StableDiffusion::load(
        &common::tiny_sd1(),
        Device::Cpu,
        Kind::Float,
    )
    .expect("loads");
    // The tiny TAESD upsamples 4x; the tiny SD 1.x VAE 2x.
    let taesd = load();
    assert_eq!(taesd.latent_scale_factor(), 4);
    let err = sd.set_fast_decoder(Some(taesd)).expect_err("refused");
    assert!(err.to_string().contains("1/4 scale"), "{err}");
    assert!(err.to_string().contains("1/2"), "{err}");
}

/// The studio's TAESD step previews: full size instead of latent size, and the last one is
/// the image TAESD decodes from the final latents (so with TAESD as the fast decoder too,
/// the last preview is the saved image, pixel for pixel).
#[test]
fn taesd_previews_are_full_size_and_end_on_the_final_image() {
    let _guard = tch::no_grad_guard();
    let mut sd = easel::engine::pipeline::StableDiffusion::load(
        &common::tiny_sd1(),
        Device::Cpu,
        Kind::Float,
    )
    .expect("loads");
    let x2 = || {
        AutoencoderTiny::load(&reference_path("taesd-x2"), Device::Cpu, Kind::Float)
            .expect("the 2x tiny TAESD loads")
    };
    let request = easel::engine::pipeline::TextToImage {
        prompt: "a red fox".into(),
        negative_prompt: String::new(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 5,
        width: 48,
        height: 32,
        batch_size: 2,
        sampler: "euler".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 1,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    };
    let never = std::sync::atomic::AtomicBool::new(false);
    let run = |sd: &easel::engine::pipeline::StableDiffusion| {
        let mut previews = Vec::new();
        let out = sd
            .generate(
                &request,
                &mut |p| previews.extend(p.preview.clone()),
                &never,
            )
            .expect("renders");
        (previews, out)
    };
    let (cheap, plain) = run(&sd);
    assert_eq!(cheap.len(), 3);
    assert_eq!((cheap[0].width, cheap[0].height), (24, 16), "latent size");

    // A TAESD of another scale is refused, naming what it is for.
    let err = sd
        .set_preview_decoder(Some(load()))
        .expect_err("4x is refused");
    assert!(err.to_string().contains("preview decoder"), "{err}");

    sd.set_preview_decoder(Some(x2())).unwrap();
    let (previews, out) = run(&sd);
    assert_eq!(previews.len(), 3);
    assert!(previews
        .iter()
        .all(|p| (p.width, p.height) == (48, 32) && p.rgb.len() == 48 * 32 * 3));
    assert_ne!(
        previews[0].rgb, previews[2].rgb,
        "the preview follows the steps"
    );
    // Previews change nothing in the render itself.
    assert_eq!(out.images[0].rgb, plain.images[0].rgb);

    sd.set_fast_decoder(Some(x2())).unwrap();
    let (previews, fast) = run(&sd);
    assert_eq!(previews[2].rgb, fast.images[0].rgb);
    assert_ne!(fast.images[0].rgb, plain.images[0].rgb);
}
