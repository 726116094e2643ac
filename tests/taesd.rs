//! TAESD (diffusers' `AutoencoderTiny`) against diffusers on a tiny random-weight model
//! (model and references from scripts/fixtures/perf_ref.py).
mod common;

use common::{assert_close, reference_path, Reference};
use easel::engine::models::autoencoder_tiny::AutoencoderTiny;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn load() -> AutoencoderTiny {
    AutoencoderTiny::load(&reference_path("taesd"), Device::Cpu, Kind::Float)
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
