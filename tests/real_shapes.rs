//! A random-weight pipeline with the real SD 1.5 shapes loads with no missing, unexpected or
//! misshapen tensor. scripts/test makes it (once) in the per-user cache; it is not committed.
mod common;

use easel::engine::pipeline::StableDiffusion;
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
