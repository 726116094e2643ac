//! The UNet against diffusers' UNet2DConditionModel on the references scripts/fixtures/unet_ref.py made.
mod common;

use common::{assert_close, load_unet as load, max_abs_diff, reference_path, tiny_sd1, Reference};
use easel::engine::models::unet::{UNet2DConditionModel, UNetConditioning};
use easel::engine::models::unet_config::UNetConfig;
use easel::engine::weights::Weights;
use easel::engine::EngineError;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const FP32_TOL: f64 = 1e-4;

fn sd2ish_dir() -> PathBuf {
    reference_path("unet-sd2ish")
}

struct Case {
    sample: Tensor,
    text: Tensor,
    timestep: f64,
    cond: Option<Tensor>,
    out: Tensor,
}

fn cases(reference: &Reference) -> Vec<Case> {
    let names = reference.names();
    let cases: Vec<Case> = (0..)
        .map(|i| format!("case{i}."))
        .take_while(|prefix| names.iter().any(|n| n.starts_with(prefix)))
        .map(|p| Case {
            sample: reference.get(&format!("{p}sample")),
            text: reference.get(&format!("{p}encoder_hidden_states")),
            timestep: reference.get(&format!("{p}timestep")).double_value(&[0]),
            cond: names
                .contains(&format!("{p}timestep_cond"))
                .then(|| reference.get(&format!("{p}timestep_cond"))),
            out: reference.get(&format!("{p}out")),
        })
        .collect();
    assert!(!cases.is_empty(), "the reference holds no cases");
    cases
}

fn run(unet: &UNet2DConditionModel, case: &Case, device: Device, kind: Kind) -> Tensor {
    let to = |t: &Tensor| t.to_device(device).to_kind(kind);
    let conditioning = UNetConditioning {
        timestep_cond: case.cond.as_ref().map(to),
        ..Default::default()
    };
    let (sample, text) = (to(&case.sample), to(&case.text));
    unet.check_inputs(&sample, &text, &conditioning)
        .expect("inputs fit the model");
    let out = unet.forward_with(&sample, case.timestep, &text, &conditioning);
    assert_eq!(out.kind(), kind);
    out
}

fn matches_reference(model_dir: &Path, reference: &str) {
    let _guard = tch::no_grad_guard();
    let unet = load(model_dir, Device::Cpu, Kind::Float);
    for (i, case) in cases(&Reference::open(reference)).iter().enumerate() {
        let out = run(&unet, case, Device::Cpu, Kind::Float);
        eprintln!(
            "{reference} case {i}: max abs diff {:e}",
            max_abs_diff(&out, &case.out)
        );
        assert_close(
            &format!("{reference} case {i} (t = {})", case.timestep),
            &out,
            &case.out,
            FP32_TOL,
        );
    }
}

#[test]
fn tiny_sd1_unet_matches_diffusers_in_fp32() {
    matches_reference(&tiny_sd1().join("unet"), "unet.safetensors");
}

/// Linear projections, heads per block, upcast attention, flip_sin_to_cos false, freq_shift 1,
/// two transformer layers on one level, time_cond_proj_dim, and a size not divisible by 4.
#[test]
fn sd2_style_unet_matches_diffusers_in_fp32() {
    matches_reference(&sd2ish_dir(), "unet-sd2ish.safetensors");
}

/// Half-precision runs are compared with diffusers' fp32 output relative to its scale: bf16
/// keeps 8 bits of mantissa (relative step 2^-8 = 0.4%), and about 20 layers compound it,
/// so 5% of the output's largest magnitude is a loose bound that still catches a wrong layer.
const HALF_REL_TOL: f64 = 0.05;

fn close_in_half_precision(device: Device, kind: Kind) {
    let _guard = tch::no_grad_guard();
    for (dir, reference) in [
        (tiny_sd1().join("unet"), "unet.safetensors"),
        (sd2ish_dir(), "unet-sd2ish.safetensors"),
    ] {
        let unet = load(&dir, device, kind);
        for (i, case) in cases(&Reference::open(reference)).iter().enumerate() {
            let out = run(&unet, case, device, kind);
            let scale = case.out.abs().max().double_value(&[]);
            let diff = max_abs_diff(&out, &case.out);
            eprintln!(
                "{reference} case {i} in {kind:?}: max abs diff {diff:e}, output scale {scale:e}"
            );
            assert!(
                diff <= HALF_REL_TOL * scale,
                "{reference} case {i} in {kind:?}: max abs diff {diff:e} > {HALF_REL_TOL} x {scale:e}"
            );
            assert!(diff > 0.0, "{reference} case {i}: {kind:?} ran in fp32");
        }
    }
}

#[test]
fn bf16_on_cpu_is_close_to_fp32() {
    close_in_half_precision(Device::Cpu, Kind::BFloat16);
}

/// fp16 runs on the CPU too (slowly), so the half-precision path is checked on every machine;
/// on a machine with CUDA, the same check runs on the GPU.
#[test]
fn fp16_is_close_to_fp32() {
    close_in_half_precision(Device::Cpu, Kind::Half);
    if tch::Cuda::is_available() {
        close_in_half_precision(Device::Cuda(0), Kind::Half);
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("easel-unet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn removed_and_renamed_tensors_are_listed() {
    let src = tiny_sd1().join("unet");
    let original = Weights::open(
        &[src.join("diffusion_pytorch_model.safetensors")],
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let removed = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let renamed = "up_blocks.0.upsamplers.0.conv.bias";
    let mut tensors: Vec<(String, Tensor)> = original
        .names()
        .filter(|n| *n != removed)
        .map(|n| {
            let t = original.read_raw(n).unwrap();
            let name = if n == renamed {
                "up_blocks.0.upsamplers.0.conv.b"
            } else {
                n
            };
            (name.to_string(), t)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let dir = scratch_dir("broken");
    let file = dir.join("diffusion_pytorch_model.safetensors");
    Tensor::write_safetensors(&tensors, &file).unwrap();

    let config = UNetConfig::from_file(&src.join("config.json")).unwrap();
    let weights = Weights::open(&[file], Device::Cpu, Kind::Float).unwrap();
    UNet2DConditionModel::new(&weights.root(), &config).expect("building does not fail early");
    let err = weights.finish().expect_err("the broken file is reported");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(err, EngineError::WeightMismatch { .. }), "{err}");
    let text = err.to_string();
    for expected in [
        format!("missing tensor {removed}"),
        format!("missing tensor {renamed}"),
        "unexpected tensor up_blocks.0.upsamplers.0.conv.b".to_string(),
    ] {
        assert!(text.contains(&expected), "{expected:?} not in:\n{text}");
    }
}

#[test]
fn unsupported_config_values_are_clear_errors() {
    let src = tiny_sd1().join("unet").join("config.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
    for (key, value) in [
        ("dual_cross_attention", serde_json::json!(true)),
        ("addition_embed_type", serde_json::json!("text_time")),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
    ] {
        let mut bad = json.clone();
        bad[key] = value;
        let dir = scratch_dir(key);
        let path = dir.join("config.json");
        std::fs::write(&path, bad.to_string()).unwrap();
        let err = UNetConfig::from_file(&path).expect_err("refused");
        let _ = std::fs::remove_dir_all(&dir);
        let text = err.to_string();
        assert!(matches!(err, EngineError::Invalid(_)), "{text}");
        assert!(
            text.contains(key) && text.contains("not supported"),
            "{text}"
        );
        assert!(text.contains("config.json"), "{text}");

        // The model refuses a config that skipped from_file's check as well.
        let config: UNetConfig = serde_json::from_value(bad).unwrap();
        let weights = Weights::open(
            &[tiny_sd1().join("unet/diffusion_pytorch_model.safetensors")],
            Device::Cpu,
            Kind::Float,
        )
        .unwrap();
        let err = UNet2DConditionModel::new(&weights.root(), &config).expect_err("refused");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn mismatched_text_embeddings_are_an_error_not_a_panic() {
    let _guard = tch::no_grad_guard();
    let unet = load(&tiny_sd1().join("unet"), Device::Cpu, Kind::Float);
    let sample = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let text = Tensor::zeros([1, 77, 768], (Kind::Float, Device::Cpu));
    let err = unet
        .check_inputs(&sample, &text, &UNetConditioning::default())
        .expect_err("768-wide text does not fit a 32-wide UNet");
    assert!(err.to_string().contains("text embeddings"), "{err}");
}
