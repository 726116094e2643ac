//! LoRAs against diffusers' `load_lora_weights` + `fuse_lora(lora_scale=w)`: the random LoRAs
//! scripts/fixtures/checkpoint_ref.py made (PEFT via save_lora_weights, the same tensors in
//! kohya naming, and a second kohya LoRA with 3x3 convolutions), end-to-end images within 1e-3.
mod common;

use common::{assert_close, edit_safetensors, reference_path, scratch, tiny_sd1, Reference};
use easel::engine::lora::LoraSpec;
use easel::engine::pipeline::{LoadOptions, StableDiffusion, TextToImage};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

fn lora(file: &str, weight: f64) -> LoraSpec {
    LoraSpec {
        path: reference_path("checkpoint/lora").join(file),
        weight,
    }
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    seed: u64,
    steps: usize,
    cfg: f64,
    sampler: String,
    height: i64,
    width: i64,
    #[serde(default)]
    loras: Vec<(String, f64)>,
}

fn cases() -> BTreeMap<String, Case> {
    let text = std::fs::read_to_string(reference_path("checkpoint/checkpoint.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn request(c: &Case) -> TextToImage {
    TextToImage {
        prompt: c.prompt.clone(),
        negative_prompt: String::new(),
        steps: c.steps,
        guidance_scale: c.cfg,
        seed: c.seed,
        width: c.width,
        height: c.height,
        batch_size: 1,
        sampler: c.sampler.parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 0,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    }
}

fn render(model: &StableDiffusion, c: &Case) -> Tensor {
    model
        .generate(&request(c), &mut |_| {}, &AtomicBool::new(false))
        .unwrap()
        .float_images
}

fn load(loras: Vec<LoraSpec>) -> Result<StableDiffusion, String> {
    let options = LoadOptions {
        loras,
        ..Default::default()
    };
    StableDiffusion::load_with(&tiny_sd1(), Device::Cpu, Kind::Float, &options)
        .map_err(|e| e.to_string())
}

#[test]
fn fused_loras_render_the_diffusers_images() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("checkpoint/checkpoint.safetensors");
    let cases = cases();
    let base = reference.get("folder");
    for name in ["lora_peft", "lora_kohya", "lora_two"] {
        let c = &cases[name];
        assert!(!c.loras.is_empty(), "{name} lists its LoRAs");
        let specs = c.loras.iter().map(|(f, w)| lora(f, *w)).collect();
        let model = load(specs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let image = render(&model, c);
        assert_close(name, &image, &reference.get(name), 1e-3);
        // the LoRA visibly changes the image, so the comparison above means something
        let moved = (&image - &base).abs().max().double_value(&[]);
        assert!(
            moved > 0.05,
            "{name}: the LoRA changed the image by only {moved}"
        );
    }
}

#[test]
fn unloading_restores_the_base_model_bit_for_bit() {
    let _guard = tch::no_grad_guard();
    let cases = cases();
    let c = &cases["lora_two"];
    let base = render(&load(vec![]).unwrap(), c);
    let two = vec![
        lora("peft.safetensors", 0.8),
        lora("locon.safetensors", -0.6),
    ];
    let mut model = load(two.clone()).unwrap();
    let with_loras = render(&model, c);
    assert!(!with_loras.equal(&base));
    model.set_loras(&[]).unwrap();
    assert!(model.loras().is_empty());
    assert!(
        render(&model, c).equal(&base),
        "unloading restores the base weights exactly"
    );
    model.set_loras(&two).unwrap();
    assert!(
        render(&model, c).equal(&with_loras),
        "loading again gives the same image"
    );
}

#[test]
fn a_lora_on_a_single_file_checkpoint_matches_the_folder() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("checkpoint/checkpoint.safetensors");
    let cache = std::env::var_os("EASEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
                .join("easel")
        })
        .join("fixtures/checkpoint-v1/sd1.safetensors");
    if !cache.is_file() {
        // tests/checkpoint.rs makes the cached checkpoint; make it here too when run alone
        let status = std::process::Command::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures"),
        )
        .args(["--only", "checkpoint_files"])
        .status()
        .expect("scripts/make-fixtures runs");
        assert!(status.success());
    }
    let options = LoadOptions {
        loras: vec![lora("kohya.safetensors", 0.8)],
        config: Some(tiny_sd1()),
        ..Default::default()
    };
    let model = StableDiffusion::load_with(&cache, Device::Cpu, Kind::Float, &options).unwrap();
    let image = render(&model, &cases()["lora_kohya"]);
    assert_close(
        "single file + LoRA",
        &image,
        &reference.get("lora_kohya"),
        1e-3,
    );
}

#[test]
fn loras_that_do_not_fit_are_refused_by_name() {
    let tmp = scratch();
    // a module the model does not have
    let renamed = tmp.path().join("renamed.safetensors");
    std::fs::copy(
        reference_path("checkpoint/lora/kohya.safetensors"),
        &renamed,
    )
    .unwrap();
    edit_safetensors(&renamed, |tensors| {
        for (name, _) in tensors.iter_mut() {
            *name = name.replace(
                "lora_unet_down_blocks_0_attentions_0",
                "lora_unet_down_blocks_9_attentions_0",
            );
        }
    });
    let err = load(vec![LoraSpec {
        path: renamed,
        weight: 1.0,
    }])
    .err()
    .expect("a LoRA for another model is refused");
    assert!(
        err.contains("down_blocks_9_attentions_0") && err.contains("another model"),
        "{err}"
    );
    // an SDXL LoRA's second text encoder
    let xl = tmp.path().join("xl.safetensors");
    Tensor::write_safetensors(
        &[
            (
                "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                Tensor::zeros([2, 32], (Kind::Float, Device::Cpu)),
            ),
            (
                "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
                Tensor::zeros([37, 2], (Kind::Float, Device::Cpu)),
            ),
        ],
        &xl,
    )
    .unwrap();
    let err = load(vec![LoraSpec {
        path: xl,
        weight: 1.0,
    }])
    .err()
    .unwrap();
    assert!(err.contains("text_encoder_2"), "{err}");
    // not a LoRA at all
    let err = load(vec![LoraSpec {
        path: tiny_sd1().join("vae/diffusion_pytorch_model.safetensors"),
        weight: 1.0,
    }])
    .err()
    .unwrap();
    assert!(err.contains("LoRA"), "{err}");
    let err = load(vec![LoraSpec {
        path: tmp.path().join("missing.safetensors"),
        weight: 1.0,
    }])
    .err()
    .unwrap();
    assert!(err.contains("does not exist"), "{err}");
}

/// kohya's SDXL trainer names UNet modules in the original layout (`input_blocks_4_1_...`,
/// `..._in_layers_2`): the same LoRAs renamed so load to the same weights.
#[test]
fn kohya_names_in_the_original_unet_layout_resolve() {
    let _guard = tch::no_grad_guard();
    let cache = std::env::var_os("EASEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
                .join("easel")
        })
        .join("fixtures/checkpoint-v1/sd1.safetensors");
    if !cache.is_file() {
        let status = std::process::Command::new(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures"),
        )
        .args(["--only", "checkpoint_files"])
        .status()
        .expect("scripts/make-fixtures runs");
        assert!(status.success());
    }
    // diffusers name -> original name, both as kohya spells modules, from the checkpoint mapping
    let ckpt = easel::engine::checkpoint::Checkpoint::open(&cache, Some(&tiny_sd1())).unwrap();
    let to_ldm: BTreeMap<String, String> = ckpt
        .renames("unet")
        .unwrap()
        .into_iter()
        .filter_map(|r| {
            let name = r.name.strip_suffix(".weight")?.replace('.', "_");
            let source = r
                .source
                .strip_prefix("model.diffusion_model.")?
                .strip_suffix(".weight")?
                .replace('.', "_");
            Some((name, source))
        })
        .collect();
    let tmp = scratch();
    let mut renamed = Vec::new();
    for file in ["kohya.safetensors", "locon.safetensors"] {
        let path = tmp.path().join(file);
        std::fs::copy(reference_path("checkpoint/lora").join(file), &path).unwrap();
        let mut changed = 0;
        edit_safetensors(&path, |tensors| {
            for (name, _) in tensors.iter_mut() {
                let Some(rest) = name.strip_prefix("lora_unet_") else {
                    continue;
                };
                let (module, suffix) = rest.split_once('.').unwrap();
                let ldm = &to_ldm[module];
                if ldm != module {
                    changed += 1;
                }
                *name = format!("lora_unet_{ldm}.{suffix}");
            }
        });
        assert!(changed > 10, "{file}: the names really changed");
        renamed.push(path);
    }
    let c = &cases()["lora_two"];
    let original = render(
        &load(vec![
            lora("kohya.safetensors", 0.8),
            lora("locon.safetensors", -0.6),
        ])
        .unwrap(),
        c,
    );
    let specs = vec![
        LoraSpec {
            path: renamed[0].clone(),
            weight: 0.8,
        },
        LoraSpec {
            path: renamed[1].clone(),
            weight: -0.6,
        },
    ];
    assert!(render(&load(specs).unwrap(), c).equal(&original));
}
