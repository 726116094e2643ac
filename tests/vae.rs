//! The VAE against diffusers' `AutoencoderKL` (references from scripts/fixtures/clip_vae_ref.py).
mod common;

use common::{assert_close, max_abs_diff, tiny_sd1, Reference};
use easel::engine::models::vae::{AutoencoderKl, VaeConfig};
use easel::engine::weights::{component_files, Weights};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn config() -> VaeConfig {
    VaeConfig::from_file(&tiny_sd1().join("vae/config.json")).expect("config reads")
}

fn load(kind: Kind) -> AutoencoderKl {
    let files = component_files(&tiny_sd1().join("vae"), "diffusion_pytorch_model", None)
        .expect("weights found");
    let weights = Weights::open(&files, Device::Cpu, kind).expect("weights open");
    let vae = AutoencoderKl::new(&weights.root(), &config()).expect("vae builds");
    weights.finish().expect("every tensor used, none missing");
    vae
}

#[test]
fn decode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let vae = load(Kind::Float);
    let r = Reference::open("vae.safetensors");
    let decoded = vae.decode(&r.get("latents")).expect("decodes");
    assert_eq!(decoded.size(), [1, 3, 32, 32]);
    assert_close("decoded", &decoded, &r.get("decoded"), TOL);
    let wide = vae.decode(&r.get("latents_wide")).expect("decodes");
    assert_close("decoded_wide", &wide, &r.get("decoded_wide"), TOL);
}

#[test]
fn encode_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let vae = load(Kind::Float);
    let r = Reference::open("vae.safetensors");
    let dist = vae.encode(&r.get("image")).expect("encodes");
    assert_close("mean", &dist.mean, &r.get("mean"), TOL);
    assert_close("logvar", &dist.logvar, &r.get("logvar"), TOL);
    assert_close("mode", &dist.mode(), &r.get("mean"), TOL);
    let sample = dist.sample(&r.get("noise")).expect("samples");
    assert_close("sample", &sample, &r.get("sample"), TOL);
    let wrong = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    assert!(dist.sample(&wrong).is_err());
}

#[test]
fn unscale_matches_the_pipeline() {
    let r = Reference::open("vae.safetensors");
    let cfg = config();
    let unscaled = cfg.unscale_latents(&r.get("latents"));
    assert_close(
        "latents_unscaled",
        &unscaled,
        &r.get("latents_unscaled"),
        1e-6,
    );
    assert_close(
        "scale(unscale)",
        &cfg.scale_latents(&unscaled),
        &r.get("latents"),
        1e-5,
    );
}

#[test]
fn shift_and_channel_statistics_invert() {
    let r = Reference::open("vae.safetensors");
    let latents = r.get("latents");
    let shifted = VaeConfig {
        scaling_factor: 1.5305,
        shift_factor: Some(0.0609),
        ..config()
    };
    let back = shifted.scale_latents(&shifted.unscale_latents(&latents));
    assert!(max_abs_diff(&back, &latents) < 1e-5);
    // The shift moves the latents: the helpers do not ignore it.
    let plain = VaeConfig {
        scaling_factor: 1.5305,
        ..config()
    };
    assert!(
        max_abs_diff(
            &shifted.unscale_latents(&latents),
            &plain.unscale_latents(&latents)
        ) > 0.05
    );
    let stats = VaeConfig {
        latents_mean: Some(vec![0.1, -0.2, 0.3, 0.0]),
        latents_std: Some(vec![1.5, 0.5, 2.0, 1.0]),
        ..config()
    };
    stats
        .validate()
        .expect("four channel statistics for four channels");
    let back = stats.scale_latents(&stats.unscale_latents(&latents));
    assert!(max_abs_diff(&back, &latents) < 1e-5);
}

#[test]
fn latent_scale_factor_follows_the_levels() {
    assert_eq!(config().latent_scale_factor(), 2);
    assert_eq!(load(Kind::Float).latent_scale_factor(), 2);
    let sd = VaeConfig {
        block_out_channels: vec![128, 256, 512, 512],
        down_block_types: vec!["DownEncoderBlock2D".into(); 4],
        up_block_types: vec!["UpDecoderBlock2D".into(); 4],
        ..config()
    };
    sd.validate().expect("SD's VAE layout");
    assert_eq!(sd.latent_scale_factor(), 8);
}

/// Half-precision weights compute in their own kind (nothing upcast, as in diffusers) and stay
/// near the fp32 reference.
#[test]
fn decode_and_encode_run_in_half_precision() {
    let _guard = tch::no_grad_guard();
    let r = Reference::open("vae.safetensors");
    for (kind, tol) in [(Kind::Half, 0.02), (Kind::BFloat16, 0.1)] {
        let vae = load(kind);
        let decoded = vae.decode(&r.get("latents")).expect("decodes");
        assert_eq!(decoded.kind(), kind);
        let diff = max_abs_diff(&decoded, &r.get("decoded"));
        assert!(diff < tol, "{kind:?} decode drifts {diff}");
        let dist = vae.encode(&r.get("image")).expect("encodes");
        assert_eq!(dist.mean.kind(), kind);
        let diff = max_abs_diff(&dist.mean, &r.get("mean"));
        assert!(diff < tol, "{kind:?} encode drifts {diff}");
    }
}

#[test]
fn unsupported_configs_are_clear_errors() {
    let attn = VaeConfig {
        down_block_types: vec!["DownEncoderBlock2D".into(), "AttnDownEncoderBlock2D".into()],
        ..config()
    };
    let err = attn.validate().expect_err("attention down blocks");
    assert!(err.to_string().contains("AttnDownEncoderBlock2D"), "{err}");
    let gelu = VaeConfig {
        act_fn: "gelu".into(),
        ..config()
    };
    let err = gelu.validate().expect_err("gelu");
    assert!(err.to_string().contains("act_fn \"gelu\""), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let _guard = tch::no_grad_guard();
    let vae = load(Kind::Float);
    let three = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
    let err = vae.decode(&three).expect_err("3-channel latents");
    assert!(
        err.to_string().contains("[batch, 4, height, width]"),
        "{err}"
    );
    let flat = Tensor::zeros([3, 32, 32], (Kind::Float, Device::Cpu));
    assert!(vae.encode(&flat).is_err());
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("easel-vae-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn missing_tensors_are_reported_by_name() {
    let dir = scratch("missing");
    let source = tiny_sd1().join("vae/diffusion_pytorch_model.safetensors");
    let full = Weights::open(&[source], Device::Cpu, Kind::Float).unwrap();
    let dropped = [
        "decoder.mid_block.attentions.0.to_q.weight",
        "encoder.down_blocks.0.downsamplers.0.conv.bias",
    ];
    let kept: Vec<(String, Tensor)> = full
        .names()
        .filter(|n| !dropped.contains(n))
        .map(|n| (n.to_string(), full.read_raw(n).unwrap()))
        .collect();
    assert_eq!(kept.len() + 2, full.names().count());
    let path = dir.join("diffusion_pytorch_model.safetensors");
    Tensor::write_safetensors(&kept, &path).unwrap();
    let weights = Weights::open(&[path], Device::Cpu, Kind::Float).unwrap();
    AutoencoderKl::new(&weights.root(), &config()).expect("builds; finish reports");
    let err = weights
        .finish()
        .expect_err("tensors are missing")
        .to_string();
    for name in dropped {
        assert!(err.contains(&format!("missing tensor {name}")), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Checkpoints from before diffusers 0.14 name the mid-block attention query/key/value/proj_attn.
#[test]
fn legacy_attention_names_load() {
    let _guard = tch::no_grad_guard();
    let dir = scratch("legacy");
    let source = tiny_sd1().join("vae/diffusion_pytorch_model.safetensors");
    let full = Weights::open(&[source], Device::Cpu, Kind::Float).unwrap();
    let renamed: Vec<(String, Tensor)> = full
        .names()
        .map(|n| {
            let old = n
                .replace("attentions.0.to_q", "attentions.0.query")
                .replace("attentions.0.to_k", "attentions.0.key")
                .replace("attentions.0.to_v", "attentions.0.value")
                .replace("attentions.0.to_out.0", "attentions.0.proj_attn");
            (old, full.read_raw(n).unwrap())
        })
        .collect();
    assert!(renamed.iter().any(|(n, _)| n.ends_with("proj_attn.weight")));
    let path = dir.join("diffusion_pytorch_model.safetensors");
    Tensor::write_safetensors(&renamed, &path).unwrap();
    let weights = Weights::open(&[path], Device::Cpu, Kind::Float).unwrap();
    let vae = AutoencoderKl::new(&weights.root(), &config()).expect("builds");
    weights.finish().expect("old names all used");
    let r = Reference::open("vae.safetensors");
    let decoded = vae.decode(&r.get("latents")).expect("decodes");
    assert_close("decoded", &decoded, &r.get("decoded"), TOL);
    std::fs::remove_dir_all(dir).ok();
}
