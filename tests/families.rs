//! SD 2.x (v-prediction), SDXL, SDXL-Turbo-like and inpainting models against diffusers: the
//! tiny random models of scripts/fixtures/families.py (made on first use into the per-user cache)
//! give the images diffusers computed from them (float images within 1e-3), and every model's
//! family is read from its configs.
mod common;

use common::{
    assert_close, cached_fixture, copy_dir, reference_path, scratch, tiny_sd1, Reference,
};
use easel::engine::family::{Family, ModelInfo};
use easel::engine::loader::ModelFolder;
use easel::engine::models::clip::ClipTextModel;
use easel::engine::models::clip_config::ClipTextConfig;
use easel::engine::models::unet::UNet2DConditionModel;
use easel::engine::models::unet_config::UNetConfig;
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use easel::engine::pipeline_sdxl::SdxlText;
use easel::engine::schedulers::config::PredictionType;
use easel::engine::tokenizer::ClipTokenizer;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

#[derive(serde::Deserialize)]
struct Case {
    model: String,
    sampler: String,
    seed: u64,
    height: i64,
    width: i64,
    cfg: f64,
    prompt: String,
    negative: String,
    batch: i64,
    steps: usize,
    /// "fp32", or "fp16" for diffusers run in half precision.
    dtype: String,
}

fn request(c: &Case) -> TextToImage {
    TextToImage {
        prompt: c.prompt.clone(),
        negative_prompt: c.negative.clone(),
        steps: c.steps,
        guidance_scale: c.cfg,
        seed: c.seed,
        width: c.width,
        height: c.height,
        batch_size: c.batch,
        sampler: c.sampler.parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    }
}

fn cases_for(model: &str) -> Vec<(String, Case)> {
    let text = std::fs::read_to_string(reference_path("families.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    cases
        .into_iter()
        .filter(|(_, c)| c.model == model && c.dtype == "fp32")
        .collect()
}

/// Renders every reference case of `model` and compares with diffusers' images.
fn images_match(model: &str, min_cases: usize) {
    let _guard = tch::no_grad_guard();
    let cases = cases_for(model);
    assert!(cases.len() >= min_cases, "{model}: {} cases", cases.len());
    let samplers: std::collections::BTreeSet<&str> =
        cases.iter().map(|(_, c)| c.sampler.as_str()).collect();
    let reference = Reference::open("families.safetensors");
    let sd =
        StableDiffusion::load(&cached_fixture(model), common::test_device(), Kind::Float).unwrap();
    let never = AtomicBool::new(false);
    for (name, c) in &cases {
        let out = sd.generate(&request(c), &mut |_| {}, &never).unwrap();
        assert_eq!(out.images.len() as i64, c.batch, "{name}");
        assert_eq!(
            (out.images[0].width as i64, out.images[0].height as i64),
            (c.width, c.height),
            "{name}"
        );
        assert_close(name, &out.float_images, &reference.get(name), 1e-3);
    }
    if min_cases > 1 {
        assert_eq!(samplers.len(), 3, "{model}: every sampler is checked");
    }
}

#[test]
fn sd2_v_prediction_images_match_diffusers() {
    images_match("tiny-sd2", 7);
}

#[test]
fn sdxl_images_match_diffusers() {
    images_match("tiny-sdxl", 8);
}

/// SDXL rendered in fp16 matches diffusers' fp16 render on the CPU within 1e-2 (measured: about
/// 5e-3, the spread of two fp16 computations). Both decode with the VAE upcast to fp32
/// (force_upcast); on this tiny VAE an fp16 decode stays within the tolerance too, so this test
/// covers the fp16 path, not the upcast by itself.
#[test]
fn sdxl_fp16_matches_diffusers_fp16() {
    let _guard = tch::no_grad_guard();
    let text = std::fs::read_to_string(reference_path("families.json")).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_str(&text).unwrap();
    let (name, c) = cases
        .iter()
        .find(|(_, c)| c.dtype == "fp16")
        .expect("an fp16 case");
    let sd = StableDiffusion::load(&cached_fixture(&c.model), Device::Cpu, Kind::Half).unwrap();
    let out = sd
        .generate(&request(c), &mut |_| {}, &AtomicBool::new(false))
        .unwrap();
    let expected = Reference::open("families.safetensors").get(name);
    assert_close(name, &out.float_images, &expected, 1e-2);
}

#[test]
fn sdxl_turbo_one_step_without_guidance_matches_diffusers() {
    let cases = cases_for("tiny-sdxl-turbo");
    assert!(cases
        .iter()
        .all(|(_, c)| c.steps == 1 && c.cfg == 0.0 && c.sampler == "euler_a"));
    // The references use the model's defaults: one step, no guidance, native size.
    let sd = StableDiffusion::load(&cached_fixture("tiny-sdxl-turbo"), Device::Cpu, Kind::Float)
        .unwrap();
    let d = sd.defaults();
    let (_, c) = &cases[0];
    assert_eq!(
        (d.steps, d.cfg, d.width, d.height),
        (1, 0.0, c.width, c.height)
    );
    images_match("tiny-sdxl-turbo", 1);
}

#[test]
fn sdxl_prompt_embeddings_match_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = cached_fixture("tiny-sdxl");
    let folder = ModelFolder::open(&dir).unwrap();
    let tokenizer = ClipTokenizer::from_folder(&folder.component("tokenizer")).unwrap();
    let config = ClipTextConfig::from_file(&folder.config("text_encoder", "config.json")).unwrap();
    let weights = folder
        .weights("text_encoder", "model", Device::Cpu, Kind::Float)
        .unwrap();
    let text_encoder = ClipTextModel::new(&weights.root(), &config).unwrap();
    weights.finish().unwrap();
    let mut mismatches = Vec::new();
    let sdxl = SdxlText::load(&folder, Device::Cpu, Kind::Float, &mut mismatches).unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");

    let reference = Reference::open("families.safetensors");
    let c = sdxl
        .condition(&tokenizer, &text_encoder, "a red fox", "", false, 1, 48, 32)
        .unwrap();
    assert_close(
        "prompt_embeds",
        &c.context,
        &reference.get("sdxl-encode.prompt_embeds"),
        1e-4,
    );
    let pooled = c.added.text_embeds.as_ref().unwrap();
    assert_close("pooled", pooled, &reference.get("sdxl-encode.pooled"), 1e-4);
    let ids = c.added.time_ids.as_ref().unwrap();
    assert_eq!(
        Vec::<f32>::try_from(ids.view([-1])).unwrap(),
        [48., 32., 0., 0., 48., 32.]
    );

    // Guided with no negative prompt: the unconditional half is zeros
    // (force_zeros_for_empty_prompt), and each half holds the batch.
    let g = sdxl
        .condition(&tokenizer, &text_encoder, "a red fox", "", true, 2, 48, 32)
        .unwrap();
    assert_eq!(g.context.size()[0], 4);
    assert_eq!(g.context.narrow(0, 0, 2).abs().max().double_value(&[]), 0.0);
    assert_close(
        "guided prompt_embeds",
        &g.context.narrow(0, 3, 1),
        &reference.get("sdxl-encode.prompt_embeds"),
        1e-4,
    );
    assert_eq!(g.added.time_ids.as_ref().unwrap().size(), [4, 6]);
}

#[test]
fn nine_channel_inpainting_unet_matches_diffusers() {
    let _guard = tch::no_grad_guard();
    let dir = cached_fixture("tiny-sd1-inpaint");
    let folder = ModelFolder::open(&dir).unwrap();
    let config = UNetConfig::from_file(&folder.config("unet", "config.json")).unwrap();
    assert_eq!(config.in_channels, 9);
    let weights = folder
        .weights("unet", "diffusion_pytorch_model", Device::Cpu, Kind::Float)
        .unwrap();
    let unet = UNet2DConditionModel::new(&weights.root(), &config).unwrap();
    weights.finish().unwrap();
    let r = Reference::open("families.safetensors");
    let out = unet.forward(
        &r.get("inpaint-unet.sample"),
        421.0,
        &r.get("inpaint-unet.encoder_hidden_states"),
    );
    assert_close("inpainting UNet", &out, &r.get("inpaint-unet.out"), 1e-4);
}

#[test]
fn families_are_read_from_configs() {
    let sd1 = ModelInfo::detect(&tiny_sd1()).unwrap();
    assert_eq!(sd1.family, Family::Sd1);
    assert!(!sd1.turbo && !sd1.inpainting);
    assert_eq!(sd1.prediction_type, PredictionType::Epsilon);

    let sd2 = ModelInfo::detect(&cached_fixture("tiny-sd2")).unwrap();
    assert_eq!(sd2.family, Family::Sd2);
    assert_eq!(sd2.prediction_type, PredictionType::VPrediction);
    assert!(!sd2.turbo && !sd2.inpainting);
    assert_eq!(sd2.label(), "SD 2.x (v-prediction)");

    let xl = ModelInfo::detect(&cached_fixture("tiny-sdxl")).unwrap();
    assert_eq!(xl.family, Family::Sdxl);
    assert!(!xl.turbo && !xl.inpainting);

    let turbo = ModelInfo::detect(&cached_fixture("tiny-sdxl-turbo")).unwrap();
    assert_eq!((turbo.family, turbo.turbo), (Family::Sdxl, true));
    assert_eq!(turbo.label(), "SDXL turbo");

    let inpaint = ModelInfo::detect(&cached_fixture("tiny-sd1-inpaint")).unwrap();
    assert_eq!((inpaint.family, inpaint.inpainting), (Family::Sd1, true));
    assert_eq!(inpaint.pipeline_class, "StableDiffusionInpaintPipeline");

    let sd2_inpaint = ModelInfo::detect(&cached_fixture("tiny-sd2-inpaint")).unwrap();
    assert_eq!(
        (sd2_inpaint.family, sd2_inpaint.inpainting),
        (Family::Sd2, true)
    );
    assert_eq!(sd2_inpaint.prediction_type, PredictionType::VPrediction);
}

#[test]
fn defaults_follow_the_family_and_sample_size() {
    // tiny-sd1 must keep its 64x64 (sample_size 32, latent factor 2) and easel's 20 steps, 7.5.
    let load =
        |dir: std::path::PathBuf| StableDiffusion::load(&dir, Device::Cpu, Kind::Float).unwrap();
    let d = load(tiny_sd1()).defaults();
    assert_eq!((d.width, d.height, d.steps, d.cfg), (64, 64, 20, 7.5));
    // tiny-sd2: sample_size 48 x factor 2 (real SD 2.1: 96 x 8 = 768).
    let d = load(cached_fixture("tiny-sd2")).defaults();
    assert_eq!((d.width, d.height, d.steps, d.cfg), (96, 96, 20, 7.5));
    // SDXL takes diffusers' guidance default of 5.
    let d = load(cached_fixture("tiny-sdxl")).defaults();
    assert_eq!((d.width, d.height, d.steps, d.cfg), (64, 64, 20, 5.0));
}

#[test]
fn unsupported_pipelines_and_inpainting_from_text_are_refused_clearly() {
    let tmp = scratch();
    let model = tmp.path().join("model");
    copy_dir(&tiny_sd1(), &model);
    let index = model.join("model_index.json");
    let original = std::fs::read_to_string(&index).unwrap();
    for (class, expected) in [
        ("KandinskyV22Pipeline", "cannot render"),
        ("StableDiffusionXLImg2ImgPipeline", "refiner"),
        ("", "_class_name"),
    ] {
        let json = original.replace("StableDiffusionPipeline", class);
        std::fs::write(&index, json).unwrap();
        let err = ModelInfo::detect(&model).unwrap_err().to_string();
        assert!(err.contains(expected), "{class}: {err}");
        let err = StableDiffusion::load(&model, Device::Cpu, Kind::Float)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(class), "{class}: {err}");
    }
    // An SDXL index over a folder without the second text encoder.
    std::fs::write(
        &index,
        original.replace("StableDiffusionPipeline", "StableDiffusionXLPipeline"),
    )
    .unwrap();
    let err = ModelInfo::detect(&model).unwrap_err().to_string();
    assert!(err.contains("text_encoder_2"), "{err}");

    let inpaint = StableDiffusion::load(
        &cached_fixture("tiny-sd1-inpaint"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    let request = TextToImage {
        prompt: "a fox".into(),
        negative_prompt: String::new(),
        steps: 1,
        guidance_scale: 1.0,
        seed: 1,
        width: 32,
        height: 32,
        batch_size: 1,
        sampler: "euler".parse().unwrap(),
        schedule: Default::default(),
        timestep_spacing: None,
        preview_every: 0,
        clip_skip: 1,
        guidance_rescale: 0.0,
        embeddings: Vec::new(),
        init: None,
    };
    let err = inpaint
        .generate(&request, &mut |_| {}, &AtomicBool::new(false))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("inpainting") && err.contains("mask"), "{err}");
}

#[test]
fn sdxl_unet_without_added_conditions_is_an_error_not_a_panic() {
    let _guard = tch::no_grad_guard();
    let dir = cached_fixture("tiny-sdxl");
    let folder = ModelFolder::open(&dir).unwrap();
    let config = UNetConfig::from_file(&folder.config("unet", "config.json")).unwrap();
    let weights = folder
        .weights("unet", "diffusion_pytorch_model", Device::Cpu, Kind::Float)
        .unwrap();
    let unet = UNet2DConditionModel::new(&weights.root(), &config).unwrap();
    weights.finish().unwrap();
    let sample = Tensor::zeros([1, 4, 8, 8], (Kind::Float, Device::Cpu));
    let text = Tensor::zeros([1, 77, 80], (Kind::Float, Device::Cpu));
    let err = unet
        .check_inputs(&sample, &text, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("text_encoder_2"), "{err}");
    let wrong = easel::engine::models::unet::UNetConditioning {
        text_embeds: Some(Tensor::zeros([1, 23], (Kind::Float, Device::Cpu))),
        time_ids: Some(Tensor::zeros([1, 6], (Kind::Float, Device::Cpu))),
        ..Default::default()
    };
    let err = unet
        .check_inputs(&sample, &text, &wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains("72"), "{err}");
}

/// `easel generate` with no --steps, --cfg or size takes the turbo model's defaults (one step,
/// no guidance, native size) and writes diffusers' image.
#[test]
fn cli_uses_the_turbo_defaults() {
    let (name, case) = cases_for("tiny-sdxl-turbo").remove(0);
    let tmp = scratch();
    let out = tmp.path().join("fox.png");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(["generate", &case.prompt, "--model"])
        .arg(cached_fixture("tiny-sdxl-turbo"))
        .args([
            "--seed",
            &case.seed.to_string(),
            "--device",
            "cpu",
            "--dtype",
            "fp32",
        ])
        .arg("--out")
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("easel runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let recipe = easel::output::png::read_recipe(&out).unwrap().unwrap();
    assert_eq!(
        (
            recipe.steps,
            recipe.cfg,
            recipe.width as i64,
            recipe.height as i64
        ),
        (1, 0.0, case.width, case.height)
    );
    assert_eq!(recipe.sampler.name(), case.sampler);

    let file = std::fs::File::open(&out).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut rgb).unwrap();
    let pixels = Tensor::from_slice(&rgb).to_kind(Kind::Float);
    let expected = (Reference::open("families.safetensors").get(&name) * 255.0)
        .round()
        .view([-1]);
    // 8-bit rounding of values within 1e-3 of diffusers' differs by at most one level.
    assert_close("turbo PNG", &pixels, &expected, 1.0);
}

#[test]
fn loads_report_each_component_in_order() {
    let stages = |dir: std::path::PathBuf| {
        let mut seen = Vec::new();
        StableDiffusion::load_with_progress(
            &dir,
            Device::Cpu,
            Kind::Float,
            &Default::default(),
            &mut |p| seen.push((p.component, p.fraction)),
        )
        .unwrap();
        seen
    };
    let xl = stages(cached_fixture("tiny-sdxl"));
    let names: Vec<&str> = xl.iter().map(|(c, _)| *c).collect();
    assert_eq!(
        names,
        ["tokenizer", "text encoder", "text encoder 2", "unet", "vae"]
    );
    assert_eq!(xl[0].1, 0.0);
    assert!(xl.windows(2).all(|w| w[0].1 < w[1].1), "{xl:?}");
    assert!(xl.last().unwrap().1 < 1.0);
    let sd2: Vec<&str> = stages(cached_fixture("tiny-sd2"))
        .iter()
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(sd2, ["tokenizer", "text encoder", "unet", "vae"]);
}
