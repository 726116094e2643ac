//! Single-file checkpoints in the original layout, and `--vae`, against diffusers.
//!
//! The checkpoints (about 30 MB in all) are made at test time into the per-user cache by
//! `scripts/make-fixtures --only checkpoint_files`, which also proves with diffusers'
//! `from_single_file` and converters that they hold exactly the diffusers models' weights.
mod common;

use common::{assert_close, reference_path, scratch, tiny_sd1, Reference};
use easel::engine::checkpoint::{detect, Checkpoint, Version};
use easel::engine::loader::ModelFolder;
use easel::engine::pipeline::{LoadOptions, StableDiffusion, TextToImage};
use easel::engine::weights::Weights;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};

/// The uncommitted checkpoint fixtures, made once per cache (the version in the folder's name
/// follows scripts/fixtures/checkpoint_ref.py's CACHE_VERSION).
pub fn checkpoint_cache() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cache = std::env::var_os("EASEL_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| {
                        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                    })
                    .join("easel")
            });
        let dir = cache.join("fixtures").join("checkpoint-v1");
        if !dir.join("done").is_file() {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
            let status = std::process::Command::new(script)
                .args(["--only", "checkpoint_files", "--cache-dir"])
                .arg(&dir)
                .status()
                .expect("scripts/make-fixtures runs (scripts/test sets up its Python environment)");
            assert!(status.success(), "making the checkpoint fixtures failed");
        }
        dir
    })
    .clone()
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
}

fn case(name: &str) -> TextToImage {
    let text = std::fs::read_to_string(reference_path("checkpoint/checkpoint.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    let c = &cases[name];
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

fn render(model: &StableDiffusion, name: &str) -> Tensor {
    model
        .generate(&case(name), &mut |_| {}, &AtomicBool::new(false))
        .unwrap()
        .float_images
}

fn load(path: &Path, options: &LoadOptions) -> StableDiffusion {
    StableDiffusion::load_with(path, Device::Cpu, Kind::Float, options)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every tensor of each component, as the checkpoint serves it, equals the diffusers folder's
/// (the CLIP `text_model.` level and position_ids buffers aside), and none is missing or extra.
fn assert_same_weights(ckpt: &Checkpoint, folder: &Path, components: &[&str]) {
    for component in components {
        let mapped = ckpt
            .weights(component, Device::Cpu, Kind::Float)
            .unwrap_or_else(|e| panic!("{component}: {e}"));
        let dir = folder.join(component);
        let file = ["diffusion_pytorch_model.safetensors", "model.safetensors"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .unwrap();
        let expected = Weights::open(&[file], Device::Cpu, Kind::Float).unwrap();
        let norm = |n: &str| n.strip_prefix("text_model.").unwrap_or(n).to_string();
        let mut want: Vec<String> = expected
            .names()
            .filter(|n| !n.ends_with("position_ids"))
            .map(norm)
            .collect();
        let mut got: Vec<String> = mapped.names().map(norm).collect();
        want.sort();
        got.sort();
        assert_eq!(
            got, want,
            "{component}: the mapped names are diffusers' names"
        );
        let by_norm: BTreeMap<String, String> =
            expected.names().map(|n| (norm(n), n.to_string())).collect();
        for name in mapped.names() {
            let a = mapped.read_raw(name).unwrap();
            let b = expected.read_raw(&by_norm[&norm(name)]).unwrap();
            assert_eq!(a.size(), b.size(), "{component} {name}: shape");
            assert!(a.equal(&b), "{component} {name}: values differ");
        }
    }
}

fn sd1_file() -> PathBuf {
    checkpoint_cache().join("sd1.safetensors")
}

#[test]
fn sd1_checkpoint_serves_exactly_the_folder_weights() {
    let ckpt = Checkpoint::open(&sd1_file(), Some(&tiny_sd1())).unwrap();
    assert_eq!(ckpt.version(), Version::Sd1);
    assert!(!ckpt.detected().inpainting);
    assert_same_weights(&ckpt, &tiny_sd1(), &["unet", "vae", "text_encoder"]);
}

#[test]
fn sd1_checkpoint_renders_the_diffusers_from_single_file_image() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("checkpoint/checkpoint.safetensors");
    let options = LoadOptions {
        config: Some(tiny_sd1()),
        ..Default::default()
    };
    let model = load(&sd1_file(), &options);
    assert_eq!(model.name(), "sd1");
    let image = render(&model, "single_file");
    assert_close("single file", &image, &reference.get("single_file"), 1e-3);
    // and it is the folder's image, bit for bit
    let folder = render(&load(&tiny_sd1(), &LoadOptions::default()), "folder");
    assert!(image.equal(&folder));
}

#[test]
fn sd2_layout_maps_to_diffusers_names_and_weights() {
    let dir = checkpoint_cache();
    let ckpt = Checkpoint::open(&dir.join("sd2.safetensors"), Some(&dir.join("sd2"))).unwrap();
    assert_eq!(ckpt.version(), Version::Sd2);
    assert!(
        ckpt.detected().v_prediction,
        "SD 2.x means 2.1's v-prediction, as in diffusers"
    );
    assert_same_weights(&ckpt, &dir.join("sd2"), &["unet", "vae", "text_encoder"]);
    let tokenizer = ckpt.tokenizer("tokenizer").unwrap();
    assert_eq!(tokenizer.pad_id(), 0, "SD 2.x pads with '!'");
}

#[test]
fn sdxl_layout_maps_to_diffusers_names_and_weights() {
    let dir = checkpoint_cache();
    let ckpt = Checkpoint::open(&dir.join("sdxl.safetensors"), Some(&dir.join("sdxl"))).unwrap();
    assert_eq!(ckpt.version(), Version::Sdxl);
    assert_same_weights(
        &ckpt,
        &dir.join("sdxl"),
        &["unet", "vae", "text_encoder", "text_encoder_2"],
    );
    assert_eq!(ckpt.tokenizer("tokenizer").unwrap().pad_id(), 49407);
    assert_eq!(ckpt.tokenizer("tokenizer_2").unwrap().pad_id(), 0);
    // Rendering single-file SDXL against diffusers: tests/sdxl_checkpoint.rs.
}

#[test]
fn without_a_config_folder_the_standard_configs_fill_in() {
    let dir = checkpoint_cache();
    for (file, version, cross, scheduler) in [
        ("sd1.safetensors", Version::Sd1, 768, "PNDMScheduler"),
        ("sd2.safetensors", Version::Sd2, 1024, "DDIMScheduler"),
        (
            "sdxl.safetensors",
            Version::Sdxl,
            2048,
            "EulerDiscreteScheduler",
        ),
    ] {
        let ckpt = Checkpoint::open(&dir.join(file), None).unwrap();
        assert_eq!(ckpt.version(), version);
        let unet = ckpt.config("unet", "config.json").unwrap();
        assert_eq!(unet["cross_attention_dim"], cross, "{file}");
        assert_eq!(unet["in_channels"], 4);
        let sched = ckpt.config("scheduler", "scheduler_config.json").unwrap();
        assert_eq!(sched["_class_name"], scheduler);
        let expected_prediction = if version == Version::Sd2 {
            "v_prediction"
        } else {
            "epsilon"
        };
        assert_eq!(
            sched["prediction_type"].as_str().unwrap_or("epsilon"),
            expected_prediction
        );
        // the configs parse as easel's own config types (SDXL's UNet: once its pipeline lands)
        let folder_like = easel::engine::loader::ModelSource::SingleFile(ckpt);
        if version != Version::Sdxl {
            folder_like
                .config(
                    "unet",
                    "config.json",
                    |c: &easel::engine::models::unet_config::UNetConfig| c.layout().map(|_| ()),
                )
                .unwrap();
        }
        folder_like
            .config(
                "vae",
                "config.json",
                easel::engine::models::vae_config::VaeConfig::validate,
            )
            .unwrap();
        folder_like
            .config(
                "text_encoder",
                "config.json",
                easel::engine::models::clip_config::ClipTextConfig::validate,
            )
            .unwrap();
        let (text, _) = folder_like
            .config_text("scheduler", "scheduler_config.json")
            .unwrap();
        easel::engine::schedulers::SchedulerConfig::from_json(&text).unwrap();
    }
    // the tiny SD 1.x file does not fit SD 1.5's real shapes: every problem is reported
    let err = StableDiffusion::load_with(
        &dir.join("sd1.safetensors"),
        Device::Cpu,
        Kind::Float,
        &LoadOptions::default(),
    )
    .err()
    .expect("tiny weights do not fit the standard config")
    .to_string();
    assert!(err.contains("has shape"), "{err}");
}

fn shapes(entries: &[(&str, &[i64])]) -> BTreeMap<String, Vec<i64>> {
    entries
        .iter()
        .map(|(k, s)| (k.to_string(), s.to_vec()))
        .collect()
}

#[test]
fn versions_are_detected_from_the_keys() {
    let conv = |c: i64| {
        (
            "model.diffusion_model.input_blocks.0.0.weight",
            vec![320, c, 3, 3],
        )
    };
    let with = |extra: &[(&str, &[i64])], channels: i64| {
        let (k, s) = conv(channels);
        let mut m = shapes(extra);
        m.insert(k.into(), s);
        detect(&m)
    };
    let sd1 = with(
        &[(
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
            &[768],
        )],
        4,
    )
    .unwrap();
    assert_eq!((sd1.version, sd1.inpainting), (Version::Sd1, false));
    let inpaint = with(
        &[(
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
            &[768],
        )],
        9,
    )
    .unwrap();
    assert_eq!((inpaint.version, inpaint.inpainting), (Version::Sd1, true));
    let sd2 = with(
        &[(
            "cond_stage_model.model.token_embedding.weight",
            &[49408, 1024],
        )],
        4,
    )
    .unwrap();
    assert_eq!((sd2.version, sd2.v_prediction), (Version::Sd2, true));
    let sd2_by_unet = with(
        &[
            (
                "cond_stage_model.transformer.text_model.final_layer_norm.weight",
                &[1024],
            ),
            (
                "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
                &[320, 1024],
            ),
        ],
        4,
    )
    .unwrap();
    assert_eq!(sd2_by_unet.version, Version::Sd2);
    let xl = with(
        &[
            (
                "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
                &[768],
            ),
            (
                "conditioner.embedders.1.model.positional_embedding",
                &[77, 1280],
            ),
        ],
        4,
    )
    .unwrap();
    assert_eq!(xl.version, Version::Sdxl);
    let refiner = with(
        &[(
            "conditioner.embedders.0.model.text_projection",
            &[1280, 1280],
        )],
        4,
    );
    assert!(refiner.unwrap_err().to_string().contains("refiner"));
    let lora = detect(&shapes(&[("lora_unet_x.lora_down.weight", &[4, 32])]));
    assert!(lora.unwrap_err().to_string().contains("--lora"));
}

#[test]
fn pickle_files_are_refused_with_how_to_convert() {
    let tmp = scratch();
    for ext in ["ckpt", "pt", "bin"] {
        let path = tmp.path().join(format!("model.{ext}"));
        std::fs::write(&path, b"\x80\x04not really a pickle").unwrap();
        let err = StableDiffusion::load(&path, Device::Cpu, Kind::Float)
            .err()
            .expect("pickles never load")
            .to_string();
        assert!(err.contains("can run any code"), "{err}");
        assert!(
            err.contains("safetensors") && err.contains("weights_only=True"),
            "{err}"
        );
        let lora = LoadOptions {
            loras: vec![easel::engine::lora::LoraSpec {
                path: path.clone(),
                weight: 1.0,
            }],
            ..Default::default()
        };
        let err = StableDiffusion::load_with(&tiny_sd1(), Device::Cpu, Kind::Float, &lora)
            .err()
            .expect("pickled LoRAs never load")
            .to_string();
        assert!(err.contains("pickle"), "{err}");
    }
}

#[test]
fn a_swapped_vae_renders_the_diffusers_image() {
    let _guard = tch::no_grad_guard();
    let reference = Reference::open("checkpoint/checkpoint.safetensors");
    let dir = checkpoint_cache();
    let mut images = Vec::new();
    for vae in [
        dir.join("vae2"),
        dir.join("vae2-ldm.safetensors"),
        dir.join("vae2/diffusion_pytorch_model.safetensors"),
    ] {
        let options = LoadOptions {
            vae: Some(vae.clone()),
            ..Default::default()
        };
        let image = render(&load(&tiny_sd1(), &options), "vae_swap");
        assert_close(
            &vae.display().to_string(),
            &image,
            &reference.get("vae_swap"),
            1e-3,
        );
        images.push(image);
    }
    // and with a single-file checkpoint
    let options = LoadOptions {
        vae: Some(dir.join("vae2-ldm.safetensors")),
        config: Some(tiny_sd1()),
        ..Default::default()
    };
    let image = render(&load(&sd1_file(), &options), "vae_swap");
    assert!(image.equal(&images[0]));
    // a VAE of another shape is reported, not half-loaded
    let options = LoadOptions {
        vae: Some(ModelFolder::open(&tiny_sd1()).unwrap().component("unet")),
        ..Default::default()
    };
    assert!(StableDiffusion::load_with(&tiny_sd1(), Device::Cpu, Kind::Float, &options).is_err());
}

#[test]
fn sd2_base_is_told_by_its_global_step_as_diffusers_does() {
    let tmp = scratch();
    let write = |name: &str, step: Option<i64>| {
        let path = tmp.path().join(name);
        let mut tensors = vec![
            (
                "model.diffusion_model.input_blocks.0.0.weight".to_string(),
                Tensor::zeros([320, 4, 3, 3], (Kind::Float, Device::Cpu)),
            ),
            (
                "cond_stage_model.model.token_embedding.weight".to_string(),
                Tensor::zeros([2, 4], (Kind::Float, Device::Cpu)),
            ),
        ];
        if let Some(s) = step {
            tensors.push(("global_step".to_string(), Tensor::from_slice(&[s])));
        }
        Tensor::write_safetensors(&tensors, &path).unwrap();
        Checkpoint::open(&path, None).unwrap()
    };
    for (file, step, v, size, sched) in [
        ("v.safetensors", None, true, 96, "v_prediction"),
        (
            "v-step.safetensors",
            Some(110_000),
            true,
            96,
            "v_prediction",
        ),
        ("base.safetensors", Some(875_000), false, 64, "epsilon"),
    ] {
        let ckpt = write(file, step);
        assert_eq!(ckpt.version(), Version::Sd2);
        assert_eq!(ckpt.detected().v_prediction, v, "{file}");
        assert_eq!(
            ckpt.config("unet", "config.json").unwrap()["sample_size"],
            size
        );
        let s = ckpt.config("scheduler", "scheduler_config.json").unwrap();
        assert_eq!(s["prediction_type"], sched, "{file}");
    }
}

#[test]
fn a_full_checkpoint_serves_as_a_vae_file() {
    let folder_vae = tiny_sd1().join("vae");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(folder_vae.join("config.json")).unwrap())
            .unwrap();
    let from_ckpt =
        easel::engine::checkpoint::vae_file_weights(&sd1_file(), &config, Device::Cpu, Kind::Float)
            .unwrap();
    let expected = Weights::open(
        &[folder_vae.join("diffusion_pytorch_model.safetensors")],
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let mut names: Vec<&str> = from_ckpt.names().collect();
    let mut want: Vec<&str> = expected.names().collect();
    names.sort();
    want.sort();
    assert_eq!(
        names, want,
        "only first_stage_model.* is taken, under diffusers' names"
    );
    for n in names {
        assert!(
            from_ckpt
                .read_raw(n)
                .unwrap()
                .equal(&expected.read_raw(n).unwrap()),
            "{n}"
        );
    }
}
