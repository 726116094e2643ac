//! Loading diffusers folders: variants, missing pieces, mismatches, fallbacks.
mod common;

use common::{copy_dir, edit_safetensors, scratch, tiny_sd1};
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

fn request() -> TextToImage {
    TextToImage {
        prompt: "a red fox".into(),
        negative_prompt: String::new(),
        steps: 2,
        guidance_scale: 4.0,
        seed: 5,
        width: 64,
        height: 64,
        batch_size: 1,
        sampler: "euler".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    }
}

fn render(dir: &Path, kind: Kind) -> Tensor {
    let model = StableDiffusion::load(dir, Device::Cpu, kind).unwrap_or_else(|e| panic!("{e}"));
    model
        .generate(&request(), &mut |_| {}, &AtomicBool::new(false))
        .unwrap()
        .float_images
}

fn load_error(dir: &Path) -> String {
    match StableDiffusion::load(dir, Device::Cpu, Kind::Float) {
        Ok(_) => panic!("{} should not load", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn fp16_variant_files_load_and_render_the_same_image() {
    let tmp = scratch();
    let dir = tmp.path().join("variant");
    copy_dir(&tiny_sd1(), &dir);
    for (component, stem) in [
        ("unet", "diffusion_pytorch_model"),
        ("vae", "diffusion_pytorch_model"),
        ("text_encoder", "model"),
    ] {
        let from = dir.join(component).join(format!("{stem}.safetensors"));
        std::fs::rename(
            &from,
            dir.join(component).join(format!("{stem}.fp16.safetensors")),
        )
        .unwrap();
    }
    let expected = render(&tiny_sd1(), Kind::Float);
    assert!(expected.equal(&render(&dir, Kind::Float)));
}

#[test]
fn a_folder_without_tokenizer_uses_the_embedded_vocabulary() {
    let tmp = scratch();
    let dir = tmp.path().join("no-tokenizer");
    copy_dir(&tiny_sd1(), &dir);
    std::fs::remove_dir_all(dir.join("tokenizer")).unwrap();
    assert!(render(&tiny_sd1(), Kind::Float).equal(&render(&dir, Kind::Float)));
}

#[test]
fn missing_pieces_are_named() {
    let tmp = scratch();
    assert!(load_error(&tmp.path().join("nowhere")).contains("does not exist"));

    let dir = tmp.path().join("no-vae");
    copy_dir(&tiny_sd1(), &dir);
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("vae") && err.contains("incomplete"), "{err}");

    std::fs::remove_file(dir.join("model_index.json")).unwrap();
    assert!(load_error(&dir).contains("model_index.json"));
}

#[test]
fn pickle_weights_are_refused_with_the_reason() {
    let tmp = scratch();
    let dir = tmp.path().join("pickle");
    copy_dir(&tiny_sd1(), &dir);
    let unet = dir.join("unet");
    std::fs::remove_file(unet.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(unet.join("diffusion_pytorch_model.bin"), b"not loaded").unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("pickle") && err.contains("safetensors"),
        "{err}"
    );
}

#[test]
fn every_mismatch_of_every_component_is_reported_at_once() {
    let tmp = scratch();
    let dir = tmp.path().join("broken");
    copy_dir(&tiny_sd1(), &dir);
    edit_safetensors(&dir.join("unet/diffusion_pytorch_model.safetensors"), |t| {
        t.retain(|(name, _)| name != "conv_in.bias");
        t.push((
            "extra.weight".into(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        ));
    });
    edit_safetensors(&dir.join("vae/diffusion_pytorch_model.safetensors"), |t| {
        for (name, tensor) in t.iter_mut() {
            if name == "decoder.conv_out.weight" {
                *tensor = Tensor::zeros([3, 32, 1, 1], (Kind::Half, Device::Cpu));
            }
        }
    });
    let err = load_error(&dir);
    for needle in [
        "missing tensor conv_in.bias",
        "unexpected tensor extra.weight",
        "decoder.conv_out.weight has shape",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
}

#[test]
fn a_half_precision_vae_that_overflows_decodes_again_in_fp32() {
    let tmp = scratch();
    let dir = tmp.path().join("overflow");
    copy_dir(&tiny_sd1(), &dir);
    // Activations past fp16's 65504 turn into inf and then NaN in the half-precision decoder.
    edit_safetensors(&dir.join("vae/diffusion_pytorch_model.safetensors"), |t| {
        for (name, tensor) in t.iter_mut() {
            if name == "decoder.conv_in.weight" || name == "decoder.conv_in.bias" {
                *tensor = tensor.to_kind(Kind::Float) * 1e6;
            }
        }
    });
    let half = render(&dir, Kind::Half);
    assert!(
        bool::try_from(half.isfinite().all()).unwrap(),
        "the fallback decode is finite"
    );
    let full = render(&dir, Kind::Float);
    let diff = (&half - &full).abs().mean(Kind::Double).double_value(&[]);
    assert!(
        diff < 0.05,
        "fp16 render with fp32 decode is close to the fp32 render: {diff}"
    );
}

/// A loaded tensor's mapped pages are dropped once it is copied out (to keep a load's peak RSS
/// at the weights alone): reading the same tensors again, converted or as stored, gives the same
/// values from the file.
#[test]
fn tensors_read_again_after_their_pages_are_released() {
    let dir = scratch();
    let path = dir.path().join("weights.safetensors");
    // Several pages each, at offsets that are not page-aligned.
    let big = Tensor::randn([3, 700, 500], (Kind::Half, Device::Cpu));
    let small = Tensor::randn([7], (Kind::Half, Device::Cpu));
    let wide = Tensor::randn([1000, 1001], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("a", &small), ("b", &big), ("c", &wide)], &path).unwrap();
    for kind in [Kind::Float, Kind::Half] {
        let weights =
            easel::engine::weights::Weights::open(std::slice::from_ref(&path), Device::Cpu, kind)
                .unwrap();
        let root = weights.root();
        for _ in 0..2 {
            for (name, original, shape) in [
                ("a", &small, vec![7]),
                ("b", &big, vec![3, 700, 500]),
                ("c", &wide, vec![1000, 1001]),
            ] {
                let read = root.get(&shape, name);
                assert_eq!(read.kind(), kind);
                assert!(
                    read.to_kind(Kind::Float)
                        .equal(&original.to_kind(kind).to_kind(Kind::Float)),
                    "{name} as {kind:?}"
                );
            }
        }
        weights.finish().unwrap();
    }
}
