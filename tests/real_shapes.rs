//! A random-weight pipeline with the real SD 1.5 shapes loads with no missing, unexpected or
//! misshapen tensor, and its UNet equals diffusers' at 256x256, where the deep convolutions
//! take easel's GEMM path. scripts/test makes the model (once) in the per-user cache; the
//! reference is made on first use inside its folder. Neither is committed.
mod common;

use easel::engine::pipeline::StableDiffusion;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

#[test]
fn sd15_shaped_weights_load_by_name() {
    let model = StableDiffusion::load(
        &common::cached_fixture("sd15-shapes"),
        Device::Cpu,
        Kind::BFloat16,
    )
    .unwrap_or_else(|e| panic!("SD 1.5 shapes must load cleanly: {e}"));
    assert_eq!(model.latent_scale_factor(), 8);
    assert_eq!(
        (model.defaults().width, model.defaults().height),
        (512, 512)
    );
}

/// diffusers' output for the real-shaped UNet (scripts/fixtures/real_shapes.py), made on
/// first use inside the model's folder.
fn unet_reference(model: &Path) -> PathBuf {
    let path = model.join("easel-unet-256-reference.safetensors");
    if !path.is_file() {
        common::make_fixtures("real_shapes_ref", "--real-shapes-dir", model);
    }
    path
}

#[test]
fn sd15_shaped_unet_matches_diffusers_where_convs_run_as_gemm() {
    let _guard = tch::no_grad_guard();
    let model = common::cached_fixture("sd15-shapes");
    let reference = common::Reference::at(unet_reference(&model));
    let get = |name: &str| reference.get(name);
    let unet = common::load_unet(&model.join("unet"), Device::Cpu, Kind::Float);
    let out = unet.forward_with(
        &get("case0.sample"),
        get("case0.timestep").double_value(&[0]),
        &get("case0.encoder_hidden_states"),
        &Default::default(),
    );
    let expected = get("case0.out");
    // The bound is relative to the output's range (about 1.4 with these random weights).
    let scale = expected.abs().max().double_value(&[]);
    let diff = common::max_abs_diff(&out, &expected);
    eprintln!("max abs diff {diff:e} against values up to {scale}");
    assert!(scale > 0.0, "the reference is all zeros");
    assert!(
        diff <= scale * 1e-4,
        "max abs diff {diff:e} against values up to {scale}"
    );
}
