//! The CLIP text encoder against transformers' `CLIPTextModel` (references from
//! scripts/fixtures/clip_vae_ref.py).
mod common;

use common::{assert_close, max_abs_diff, reference_path, tiny_sd1, Reference};
use easel::engine::models::clip::ClipTextModel;
use easel::engine::models::clip_config::ClipTextConfig;
use easel::engine::weights::{component_files, Weights};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

fn load(dir: &Path) -> (ClipTextModel, ClipTextConfig) {
    load_as(dir, Kind::Float)
}

fn load_as(dir: &Path, kind: Kind) -> (ClipTextModel, ClipTextConfig) {
    let config = ClipTextConfig::from_file(&dir.join("config.json")).expect("config reads");
    let files = component_files(dir, "model", None).expect("weights found");
    let weights = Weights::open(&files, Device::Cpu, kind).expect("weights open");
    let model = ClipTextModel::new(&weights.root(), &config).expect("model builds");
    weights.finish().expect("every tensor used, none missing");
    (model, config)
}

/// Every hidden state, the normed output, the pooled output and clip skip 1 match transformers.
fn check_against_reference(dir: &Path, reference: &str, layers: usize) {
    let _guard = tch::no_grad_guard();
    let (model, _) = load(dir);
    let r = Reference::open(reference);
    let ids = r.get("input_ids");
    let out = model.forward(&ids).expect("forward runs");
    assert_eq!(out.hidden_states.len(), layers + 1);
    for (i, h) in out.hidden_states.iter().enumerate() {
        let name = format!("hidden_states.{i}");
        assert_close(&name, h, &r.get(&name), TOL);
    }
    assert_close(
        "last_hidden_state",
        &out.last_hidden_state,
        &r.get("last_hidden_state"),
        TOL,
    );
    assert_close(
        "pooler_output",
        &model.pooled_output(&out.last_hidden_state, &ids),
        &r.get("pooler_output"),
        TOL,
    );
    let skipped = model.forward_clip_skip(&ids, 1).expect("clip skip 1 runs");
    assert_close("clip_skip_1", &skipped, &r.get("clip_skip_1"), TOL);
    let unskipped = model.forward_clip_skip(&ids, 0).expect("clip skip 0 runs");
    assert_close("clip_skip_0", &unskipped, &r.get("last_hidden_state"), TOL);
}

#[test]
fn tiny_sd1_quick_gelu_matches_transformers() {
    check_against_reference(&tiny_sd1().join("text_encoder"), "clip.safetensors", 5);
}

/// SD 2.x style: exact GELU, two heads, and the `text_model.`-prefixed layout with a
/// position_ids buffer that older checkpoints carry.
#[test]
fn gelu_prefixed_checkpoint_matches_transformers() {
    let (_, config) = load(&reference_path("clip-gelu"));
    assert_eq!(config.hidden_act, "gelu");
    check_against_reference(&reference_path("clip-gelu"), "clip-gelu.safetensors", 3);
}

/// Half-precision weights compute in their own kind and stay near the fp32 reference.
#[test]
fn runs_in_half_precision() {
    let _guard = tch::no_grad_guard();
    let r = Reference::open("clip.safetensors");
    for (kind, tol) in [(Kind::Half, 0.02), (Kind::BFloat16, 0.1)] {
        let (model, _) = load_as(&tiny_sd1().join("text_encoder"), kind);
        let out = model.forward(&r.get("input_ids")).expect("forward runs");
        assert_eq!(out.last_hidden_state.kind(), kind);
        let diff = max_abs_diff(&out.last_hidden_state, &r.get("last_hidden_state"));
        assert!(diff < tol, "{kind:?} drifts {diff}");
    }
}

#[test]
fn forward_until_stops_at_the_requested_layer() {
    let _guard = tch::no_grad_guard();
    let (model, _) = load(&tiny_sd1().join("text_encoder"));
    let r = Reference::open("clip.safetensors");
    let ids = r.get("input_ids");
    for layers in [0, 2, 5] {
        let h = model.forward_until(&ids, layers).expect("runs");
        let name = format!("hidden_states.{layers}");
        assert_close(&name, &h, &r.get(&name), TOL);
    }
    let err = model.forward_until(&ids, 6).expect_err("only 5 layers");
    assert!(err.to_string().contains("5 layers"), "{err}");
    let err = model
        .forward_clip_skip(&ids, 5)
        .expect_err("skips every layer");
    assert!(err.to_string().contains("at most 4"), "{err}");
}

#[test]
fn bad_token_ids_are_errors_not_panics() {
    let _guard = tch::no_grad_guard();
    let (model, _) = load(&tiny_sd1().join("text_encoder"));
    let long = Tensor::zeros([1, 78], (Kind::Int64, Device::Cpu));
    let err = model.forward(&long).expect_err("78 tokens are too many");
    assert!(err.to_string().contains("77 positions"), "{err}");
    let out_of_vocab = Tensor::full([1, 77], 49408, (Kind::Int64, Device::Cpu));
    let err = model
        .forward(&out_of_vocab)
        .expect_err("id past the vocabulary");
    assert!(err.to_string().contains("49408"), "{err}");
    let flat = Tensor::zeros([77], (Kind::Int64, Device::Cpu));
    assert!(model.forward(&flat).is_err());
}

/// A scratch folder for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("easel-clip-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn unsupported_activation_is_a_clear_error() {
    let dir = scratch("relu");
    let text = std::fs::read_to_string(tiny_sd1().join("text_encoder/config.json")).unwrap();
    let text = text.replace("\"quick_gelu\"", "\"relu\"");
    assert!(text.contains("\"relu\""));
    let path = dir.join("config.json");
    std::fs::write(&path, text).unwrap();
    let err = ClipTextConfig::from_file(&path).expect_err("relu is refused");
    let message = err.to_string();
    assert!(message.contains("\"relu\""), "{message}");
    assert!(message.contains("quick_gelu, gelu"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");

    let config = ClipTextConfig {
        hidden_act: "relu".into(),
        ..ClipTextConfig::default()
    };
    let weights = Weights::open(
        &[tiny_sd1().join("text_encoder/model.safetensors")],
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    assert!(ClipTextModel::new(&weights.root(), &config).is_err());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn missing_tensors_are_reported_by_name() {
    let dir = scratch("missing");
    let source = tiny_sd1().join("text_encoder/model.safetensors");
    let full = Weights::open(&[source], Device::Cpu, Kind::Float).unwrap();
    let dropped = "encoder.layers.3.mlp.fc1.bias";
    let kept: Vec<(String, Tensor)> = full
        .names()
        .filter(|n| *n != dropped)
        .map(|n| (n.to_string(), full.read_raw(n).unwrap()))
        .collect();
    assert_eq!(kept.len() + 1, full.names().count());
    let path = dir.join("model.safetensors");
    Tensor::write_safetensors(&kept, &path).unwrap();

    let config = ClipTextConfig::from_file(&tiny_sd1().join("text_encoder/config.json")).unwrap();
    let weights = Weights::open(&[path], Device::Cpu, Kind::Float).unwrap();
    ClipTextModel::new(&weights.root(), &config).expect("builds; finish reports");
    let err = weights.finish().expect_err("a tensor is missing");
    assert!(
        err.to_string()
            .contains(&format!("missing tensor {dropped}")),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
