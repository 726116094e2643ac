//! SDXL prompts against scripts/fixtures/sdxl_prompt_ref.py on the tiny SDXL model: a plain
//! prompt is diffusers' `encode_prompt` exactly; weights, BREAK, long prompts, clip skip and
//! textual inversion are AUTOMATIC1111's arithmetic per encoder (embeddings within 1e-5); the
//! images are diffusers' StableDiffusionXLPipeline given those embeddings (within 1e-3).
mod common;

use common::{assert_close, cached_fixture, reference_path, Reference};
use easel::engine::loader::ModelFolder;
use easel::engine::models::clip::ClipTextModel;
use easel::engine::models::clip_config::ClipTextConfig;
use easel::engine::pipeline::{StableDiffusion, TextToImage};
use easel::engine::pipeline_sdxl::{SdxlPrompt, SdxlText};
use easel::engine::tokenizer::ClipTokenizer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use tch::{Device, Kind, Tensor};

#[derive(serde::Deserialize)]
struct Single {
    prompt: String,
    clip_skip: u32,
    chunks: i64,
}

#[derive(serde::Deserialize)]
struct Pair {
    prompt: String,
    negative: String,
    clip_skip: u32,
    chunks: i64,
}

#[derive(serde::Deserialize)]
struct Image {
    prompt: String,
    negative: String,
    seed: u64,
    #[serde(default)]
    clip_skip: u32,
}

#[derive(serde::Deserialize)]
struct Meta {
    single: BTreeMap<String, Single>,
    pairs: BTreeMap<String, Pair>,
    images: BTreeMap<String, Image>,
    steps: usize,
    cfg: f64,
    size: i64,
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(reference_path("sdxl_prompt.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn embeddings() -> Vec<PathBuf> {
    vec![reference_path("sdxl_prompt-embeddings")]
}

struct Text {
    tokenizer: ClipTokenizer,
    encoder: ClipTextModel,
    sdxl: SdxlText,
}

fn text() -> Text {
    let folder = ModelFolder::open(&cached_fixture("tiny-sdxl")).unwrap();
    let tokenizer = ClipTokenizer::from_folder(&folder.component("tokenizer")).unwrap();
    let config = ClipTextConfig::from_file(&folder.config("text_encoder", "config.json")).unwrap();
    let weights = folder
        .weights("text_encoder", "model", Device::Cpu, Kind::Float)
        .unwrap();
    let encoder = ClipTextModel::new(&weights.root(), &config).unwrap();
    weights.finish().unwrap();
    let mut mismatches = Vec::new();
    let sdxl = SdxlText::load(&folder, Device::Cpu, Kind::Float, &mut mismatches).unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    Text {
        tokenizer,
        encoder,
        sdxl,
    }
}

/// (context, pooled) for one prompt, or for a pair (negative first) when `negative` is given.
fn encode(t: &Text, prompt: &str, negative: Option<&str>, clip_skip: u32) -> (Tensor, Tensor) {
    let embeddings = embeddings();
    let request = SdxlPrompt {
        prompt,
        negative: negative.unwrap_or(""),
        clip_skip,
        embeddings: &embeddings,
    };
    let c = t
        .sdxl
        .condition_with(
            &t.tokenizer,
            &t.encoder,
            &request,
            negative.is_some(),
            1,
            32,
            32,
        )
        .unwrap();
    (c.context, c.added.text_embeds.unwrap())
}

#[test]
fn plain_prompt_is_diffusers_encode_prompt() {
    let _guard = tch::no_grad_guard();
    let t = text();
    let reference = Reference::open("sdxl_prompt.safetensors");
    let meta = meta();
    for name in ["plain", "plain-skip2"] {
        let case = &meta.single[name];
        let (context, pooled) = encode(&t, &case.prompt, None, case.clip_skip);
        // The reference is diffusers' own encode_prompt (the script asserts it equals A1111's
        // arithmetic with no weights).
        let embeds = reference.get(&format!("{name}.embeds"));
        assert_close(name, &context, &embeds, 1e-5);
        assert_close(
            name,
            &pooled,
            &reference.get(&format!("{name}.pooled")),
            1e-5,
        );
    }
    let (plain, _) = encode(&t, &meta.single["plain"].prompt, None, 0);
    let (skip2, _) = encode(&t, &meta.single["plain-skip2"].prompt, None, 2);
    assert!(
        common::max_abs_diff(&plain, &skip2) > 1e-2,
        "clip skip changes the embedding"
    );
}

#[test]
fn weights_break_long_prompts_clip_skip_and_embeddings_match_a1111() {
    let _guard = tch::no_grad_guard();
    let t = text();
    let reference = Reference::open("sdxl_prompt.safetensors");
    let meta = meta();
    assert!(meta.single.len() >= 7);
    for (name, case) in &meta.single {
        let (context, pooled) = encode(&t, &case.prompt, None, case.clip_skip);
        assert_eq!(context.size(), [1, 77 * case.chunks, 80], "{name}");
        assert_close(
            name,
            &context,
            &reference.get(&format!("{name}.embeds")),
            1e-5,
        );
        assert_close(
            name,
            &pooled,
            &reference.get(&format!("{name}.pooled")),
            1e-5,
        );
    }
    for (name, case) in &meta.pairs {
        let (context, pooled) = encode(&t, &case.prompt, Some(&case.negative), case.clip_skip);
        assert_eq!(context.size(), [2, 77 * case.chunks, 80], "{name}");
        for (i, half) in ["negative", "positive"].iter().enumerate() {
            let what = format!("{name}.{half}");
            let i = i as i64;
            assert_close(
                &what,
                &context.narrow(0, i, 1),
                &reference.get(&format!("{what}.embeds")),
                1e-5,
            );
            assert_close(
                &what,
                &pooled.narrow(0, i, 1),
                &reference.get(&format!("{what}.pooled")),
                1e-5,
            );
        }
    }
}

#[test]
fn images_match_diffusers_given_the_embeddings() {
    let _guard = tch::no_grad_guard();
    let meta = meta();
    let reference = Reference::open("sdxl_prompt.safetensors");
    let sd = StableDiffusion::load(&cached_fixture("tiny-sdxl"), Device::Cpu, Kind::Float).unwrap();
    let never = AtomicBool::new(false);
    for name in ["plain", "weighted-long", "clip-skip-2", "textual-inversion"] {
        let c = &meta.images[name];
        let request = TextToImage {
            prompt: c.prompt.clone(),
            negative_prompt: c.negative.clone(),
            steps: meta.steps,
            guidance_scale: meta.cfg,
            seed: c.seed,
            width: meta.size,
            height: meta.size,
            clip_skip: c.clip_skip,
            embeddings: embeddings(),
            ..Default::default()
        };
        let out = sd.generate(&request, &mut |_| {}, &never).unwrap();
        assert_close(
            name,
            &out.float_images,
            &reference.get(&format!("image.{name}")),
            1e-3,
        );
    }
}

#[test]
fn an_sd1_embedding_is_refused_by_name_for_sdxl() {
    let _guard = tch::no_grad_guard();
    let t = text();
    // prompt_ref.py's A1111 embedding (one `emb_params` tensor) is for a single text encoder.
    let files = vec![reference_path("prompt-embeddings").join("my-style.safetensors")];
    let request = SdxlPrompt {
        prompt: "a photo of my-style",
        negative: "",
        clip_skip: 0,
        embeddings: &files,
    };
    let err = t
        .sdxl
        .condition_with(&t.tokenizer, &t.encoder, &request, false, 1, 32, 32)
        .err()
        .expect("an SD 1.x embedding cannot condition SDXL");
    let message = err.to_string();
    assert!(
        message.contains("my-style.safetensors") && message.contains("clip_l"),
        "{message}"
    );
    // Not naming it is fine: the file is only an error when a prompt uses it.
    let request = SdxlPrompt {
        prompt: "a photo",
        ..request
    };
    assert!(t
        .sdxl
        .condition_with(&t.tokenizer, &t.encoder, &request, false, 1, 32, 32)
        .is_ok());
}

#[test]
fn clip_skip_beyond_the_encoders_is_an_error() {
    let _guard = tch::no_grad_guard();
    let t = text();
    let request = SdxlPrompt {
        prompt: "a fox",
        negative: "",
        clip_skip: 4,
        embeddings: &[],
    };
    let err = t
        .sdxl
        .condition_with(&t.tokenizer, &t.encoder, &request, false, 1, 32, 32)
        .err()
        .expect("the tiny encoders have 3 layers");
    assert!(err.to_string().contains("1 (none) to 3"), "{err}");
}
