//! Prompt encoding against scripts/fixtures/prompt_ref.py: AUTOMATIC1111's weighting, chunking,
//! BREAK and clip skip (its re-implementation on transformers), diffusers' textual inversion,
//! and diffusers' plain embedding, exactly.
mod common;

use common::{assert_close, reference_path, scratch, tiny_sd1, Reference};
use easel::engine::models::clip::ClipTextModel;
use easel::engine::models::clip_config::ClipTextConfig;
use easel::engine::prompt::{PromptEncoder, TextualInversions};
use easel::engine::tokenizer::ClipTokenizer;
use easel::engine::weights::{component_files, Weights};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-5;

#[derive(Deserialize)]
struct ChunkRef {
    ids: Vec<i64>,
    /// Written as Python prints floats, parsed here exactly.
    multipliers: Vec<String>,
    /// [offset, file name, vectors]
    fixes: Vec<(usize, String, usize)>,
}

#[derive(Deserialize)]
struct Single {
    prompt: String,
    clip_skip: u32,
    chunks: Vec<ChunkRef>,
}

#[derive(Deserialize)]
struct Pair {
    prompt: String,
    negative: String,
    clip_skip: u32,
    chunks: usize,
    negative_chunks: usize,
}

#[derive(Deserialize)]
struct TiCase {
    prompt: String,
}

#[derive(Deserialize)]
struct Meta {
    single: BTreeMap<String, Single>,
    pairs: BTreeMap<String, Pair>,
    ti_diffusers: BTreeMap<String, TiCase>,
}

fn meta() -> Meta {
    let text = std::fs::read_to_string(reference_path("prompt.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Model {
    tokenizer: ClipTokenizer,
    encoder: ClipTextModel,
}

fn model() -> Model {
    let dir = tiny_sd1().join("text_encoder");
    let config = ClipTextConfig::from_file(&dir.join("config.json")).unwrap();
    let files = component_files(&dir, "model", None).unwrap();
    let weights = Weights::open(&files, Device::Cpu, Kind::Float).unwrap();
    let encoder = ClipTextModel::new(&weights.root(), &config).unwrap();
    weights.finish().unwrap();
    let tokenizer = ClipTokenizer::from_folder(&tiny_sd1().join("tokenizer")).unwrap();
    Model { tokenizer, encoder }
}

fn embeddings_dir() -> PathBuf {
    reference_path("prompt-embeddings")
}

fn load_embeddings(m: &Model, paths: &[PathBuf]) -> TextualInversions {
    TextualInversions::load(paths, &m.tokenizer, m.encoder.hidden_size()).unwrap()
}

#[test]
fn plain_prompt_is_exactly_the_plain_embedding() {
    let _guard = tch::no_grad_guard();
    let m = model();
    let embeddings = load_embeddings(&m, &[embeddings_dir()]);
    let encoder = PromptEncoder::new(&m.tokenizer, &m.encoder, 1, &embeddings).unwrap();
    let r = Reference::open("prompt.safetensors");
    for prompt in [
        "a red fox in the snow",
        "A lighthouse at dusk, oil painting, highly detailed",
        "",
    ] {
        let ids = Tensor::from_slice(&m.tokenizer.encode_padded(prompt)).unsqueeze(0);
        let plain = m.encoder.forward(&ids).unwrap().last_hidden_state;
        let ours = encoder.encode(prompt).unwrap();
        assert_eq!(ours.size(), vec![1, 77, 32], "{prompt:?}");
        assert!(
            ours.equal(&plain),
            "{prompt:?}: not exactly the plain embedding"
        );
    }
    // And that plain embedding is diffusers' (prompt_ref.py checks its A1111 re-implementation
    // gives diffusers' bits for this prompt).
    let ours = encoder.encode("a red fox in the snow").unwrap();
    assert_close("plain", &ours, &r.get("plain"), TOL);
}

#[test]
fn chunks_match_the_a1111_reimplementation() {
    let m = model();
    let embeddings = load_embeddings(&m, &[embeddings_dir()]);
    for (name, case) in &meta().single {
        let encoder =
            PromptEncoder::new(&m.tokenizer, &m.encoder, case.clip_skip, &embeddings).unwrap();
        let chunks = encoder.chunks(&case.prompt).unwrap();
        assert_eq!(chunks.len(), case.chunks.len(), "{name}: chunk count");
        for (i, (ours, want)) in chunks.iter().zip(&case.chunks).enumerate() {
            assert_eq!(ours.ids, want.ids, "{name} chunk {i}: ids");
            let want_weights: Vec<f64> = want
                .multipliers
                .iter()
                .map(|w| w.parse().unwrap())
                .collect();
            assert_eq!(ours.multipliers, want_weights, "{name} chunk {i}: weights");
            let fixes: Vec<(usize, String, usize)> = ours
                .fixes
                .iter()
                .map(|f| {
                    let path = embeddings.path(f.file).unwrap();
                    let file = path.file_name().unwrap().to_string_lossy().into_owned();
                    (f.offset, file, f.vectors)
                })
                .collect();
            assert_eq!(fixes, want.fixes, "{name} chunk {i}: embeddings");
        }
    }
}

#[test]
fn embeddings_match_the_a1111_reimplementation() {
    let _guard = tch::no_grad_guard();
    let m = model();
    let embeddings = load_embeddings(&m, &[embeddings_dir()]);
    let r = Reference::open("prompt.safetensors");
    let cases = meta().single;
    assert!(cases.len() >= 12, "every prompt feature has a case");
    for (name, case) in &cases {
        let encoder =
            PromptEncoder::new(&m.tokenizer, &m.encoder, case.clip_skip, &embeddings).unwrap();
        let ours = encoder.encode(&case.prompt).unwrap();
        assert_close(name, &ours, &r.get(name), TOL);
    }
}

#[test]
fn prompt_and_negative_are_padded_to_the_same_length() {
    let _guard = tch::no_grad_guard();
    let m = model();
    let embeddings = TextualInversions::none();
    let r = Reference::open("prompt.safetensors");
    for (name, case) in &meta().pairs {
        assert_ne!(case.chunks, case.negative_chunks, "{name} pads one side");
        let encoder =
            PromptEncoder::new(&m.tokenizer, &m.encoder, case.clip_skip, &embeddings).unwrap();
        let (positive, negative) = encoder.encode_pair(&case.prompt, &case.negative).unwrap();
        let longest = case.chunks.max(case.negative_chunks) as i64;
        assert_eq!(positive.size(), vec![1, 77 * longest, 32], "{name}");
        assert_eq!(negative.size(), positive.size(), "{name}");
        assert_close(
            &format!("{name}.positive"),
            &positive,
            &r.get(&format!("{name}.positive")),
            TOL,
        );
        assert_close(
            &format!("{name}.negative"),
            &negative,
            &r.get(&format!("{name}.negative")),
            TOL,
        );
    }
}

#[test]
fn textual_inversion_matches_diffusers_load_textual_inversion() {
    let _guard = tch::no_grad_guard();
    let m = model();
    let embeddings = load_embeddings(&m, &[embeddings_dir()]);
    assert_eq!(
        embeddings.names(),
        vec![
            "<cat-toy>",
            "<wide-thing>",
            "learned_embeds",
            "my-style",
            "wide-thing"
        ]
    );
    let encoder = PromptEncoder::new(&m.tokenizer, &m.encoder, 1, &embeddings).unwrap();
    let r = Reference::open("prompt.safetensors");
    for (name, case) in &meta().ti_diffusers {
        let ours = encoder.encode(&case.prompt).unwrap();
        assert_close(name, &ours, &r.get(name), TOL);
    }
}

/// Writes a safetensors file of the given f32 tensors.
fn write(path: &std::path::Path, tensors: &[(&str, &[i64])]) {
    let named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, shape)| {
            (
                k.to_string(),
                Tensor::ones(*shape, (Kind::Float, Device::Cpu)),
            )
        })
        .collect();
    Tensor::write_safetensors(&named, path).unwrap();
}

#[test]
fn missing_names_are_text_and_bad_files_are_named_when_used() {
    let _guard = tch::no_grad_guard();
    let m = model();
    let dir = scratch();
    let d = dir.path();
    std::fs::write(d.join("garbage.safetensors"), b"not a safetensors file").unwrap();
    write(
        &d.join("two-things.safetensors"),
        &[("a", &[32]), ("b", &[32])],
    );
    write(
        &d.join("too-wide.safetensors"),
        &[("emb_params", &[2, 768])],
    );
    std::fs::write(
        d.join("old-style.pt"),
        b"\x80\x02pickle bytes, never opened",
    )
    .unwrap();
    std::fs::write(d.join("notes.txt"), b"not an embedding").unwrap();
    let embeddings = load_embeddings(&m, &[d.to_path_buf()]);
    let encoder = PromptEncoder::new(&m.tokenizer, &m.encoder, 1, &embeddings).unwrap();

    // No file has this name, and the bad files are not named: plain text, no error.
    let none = TextualInversions::none();
    let plain = PromptEncoder::new(&m.tokenizer, &m.encoder, 1, &none).unwrap();
    let prompt = "a photo of unknown-style";
    assert!(encoder
        .encode(prompt)
        .unwrap()
        .equal(&plain.encode(prompt).unwrap()));

    for (prompt, file, why) in [
        ("a garbage photo", "garbage.safetensors", "cannot be read"),
        ("(two-things:1.2)", "two-things.safetensors", "2 tensors"),
        ("too-wide", "too-wide.safetensors", "768"),
        ("an old-style photo", "old-style.pt", "pickle"),
    ] {
        let err = encoder.encode(prompt).unwrap_err().to_string();
        assert!(err.contains(file) && err.contains(why), "{prompt}: {err}");
    }
    let err = TextualInversions::load(&[d.join("nope")], &m.tokenizer, 32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn clip_skip_beyond_the_layers_is_refused() {
    let m = model();
    let none = TextualInversions::none();
    assert!(PromptEncoder::new(&m.tokenizer, &m.encoder, 5, &none).is_ok());
    let err = PromptEncoder::new(&m.tokenizer, &m.encoder, 6, &none)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("5 layers"), "{err}");
}
