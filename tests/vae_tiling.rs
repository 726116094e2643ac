//! Tiled VAE decode and encode against diffusers' `AutoencoderKL.enable_tiling()` on the tiny
//! SD 1.x VAE, with tiles small enough that the latents span several in both directions
//! (references from scripts/fixtures/perf_ref.py).
mod common;

use common::{assert_close, max_abs_diff, tiny_sd1, Reference};
use easel::engine::models::vae::{AutoencoderKl, VaeConfig, VaeTiling};
use easel::engine::weights::{component_files, Weights};
use tch::Kind;

const TOL: f64 = 1e-4;
/// perf_ref.py's tile side in latent pixels.
const LATENT_TILE: i64 = 16;

fn load() -> AutoencoderKl {
    let config = VaeConfig::from_file(&tiny_sd1().join("vae/config.json")).expect("config reads");
    let files = component_files(&tiny_sd1().join("vae"), "diffusion_pytorch_model", None)
        .expect("weights found");
    let weights = Weights::open(&files, common::test_device(), Kind::Float).expect("weights open");
    let vae = AutoencoderKl::new(&weights.root(), &config).expect("vae builds");
    weights.finish().expect("every tensor used, none missing");
    vae
}

#[test]
fn tiled_decode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let vae = load();
    let r = Reference::open("vae_tiling.safetensors");
    let tiling = VaeTiling::with_latent_tile(LATENT_TILE, vae.latent_scale_factor());
    let decoded = vae
        .decode_tiled(&r.get("latents"), &tiling)
        .expect("decodes");
    assert_close("tiled decode", &decoded, &r.get("decoded"), TOL);
    // Tiling really happened: the whole decode differs from the tiled one.
    assert!(max_abs_diff(&r.get("decoded"), &r.get("decoded_whole")) > 1e-2);
    let whole = vae.decode(&r.get("latents")).expect("decodes");
    assert_close("whole decode", &whole, &r.get("decoded_whole"), TOL);
}

#[test]
fn tiled_encode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let vae = load();
    let r = Reference::open("vae_tiling.safetensors");
    let tiling = VaeTiling::with_latent_tile(LATENT_TILE, vae.latent_scale_factor());
    let posterior = vae.encode_tiled(&r.get("image"), &tiling).expect("encodes");
    assert_close("tiled mean", &posterior.mean, &r.get("encoded_mean"), TOL);
    assert_close(
        "tiled logvar",
        &posterior.logvar,
        &r.get("encoded_logvar"),
        TOL,
    );
}

#[test]
fn latents_within_one_tile_decode_whole_and_bad_tiles_are_refused() {
    let _guard = tch::no_grad_guard();
    let vae = load();
    let r = Reference::open("vae_tiling.safetensors");
    let big = vae.default_tiling();
    assert_eq!(big.sample_tile, 64, "the tiny VAE's sample_size");
    let latents = r.get("latents");
    let small = latents.narrow(2, 0, 20).narrow(3, 0, 20);
    let tiled = VaeTiling::with_latent_tile(32, vae.latent_scale_factor());
    let a = vae.decode_tiled(&small, &tiled).expect("decodes");
    let b = vae.decode(&small).expect("decodes");
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let broken = VaeTiling {
        overlap: 1.0,
        ..VaeTiling::with_latent_tile(4, 2)
    };
    let err = vae.decode_tiled(&latents, &broken).expect_err("refused");
    assert!(err.to_string().contains("overlap"), "{err}");
}
