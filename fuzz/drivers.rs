//! What each fuzz target feeds its input to. Shared, through `#[path]`, by the cargo-fuzz
//! targets (fuzz/fuzz_targets/) and by tests/fuzz_regressions.rs, so a crash kept as a
//! regression input runs through exactly the code the fuzzer ran.
//!
//! Every driver returns the error messages it saw: a hostile input must end in an error, and
//! the regression test checks that the error says something useful.
#![allow(dead_code)]

use easel::engine::checkpoint::Checkpoint;
use easel::engine::lora::{prompt_tags, strip_tags, LoraSet, LoraSpec};
use easel::engine::prompt::{
    chunks::chunk_prompt, escape_attention, parse_prompt_attention, ChunkSpec, TextualInversions,
    COMMA_BACKTRACK,
};
use easel::engine::tokenizer::ClipTokenizer;
use easel::engine::weights::Weights;
use easel::metadata::{self, ImageParameters};
use easel::presets::{self, Preset};
use easel::remote::protocol::{self, Line, Reply, Request, WirePicture};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use tch::{Device, Kind};

/// A target's driver: the input in, the error messages it gave out.
pub type Driver = fn(&[u8]) -> Vec<String>;

/// Every target names its driver here, for tests/fuzz_regressions.rs.
pub const TARGETS: &[(&str, Driver)] = &[
    ("prompt_weighting", prompt_weighting),
    ("preset", preset),
    ("plan", plan),
    ("png_metadata", png_metadata),
    ("safetensors", safetensors),
    ("worker_protocol", worker_protocol),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A file in a per-process temp folder, rewritten with `data` each time: the loaders take paths.
fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::tempdir().expect("a temp folder for the fuzz inputs");
    }
    let path = DIR.with(|d| d.path().join(name));
    std::fs::write(&path, data).expect("writing the fuzz input to the temp folder");
    path
}

thread_local! {
    static TOKENIZER: Option<ClipTokenizer> = ClipTokenizer::embedded("<|endoftext|>").ok();
}

/// The prompt syntax (attention weights, BREAK, <lora:...> tags) and the 75-token chunks.
pub fn prompt_weighting(data: &[u8]) -> Vec<String> {
    let Some(prompt) = text(data) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let _ = prompt_tags(prompt);
    let stripped = strip_tags(prompt);
    let _ = parse_prompt_attention(&escape_attention(prompt));
    match parse_prompt_attention(&stripped) {
        Err(e) => errors.push(e.to_string()),
        Ok(fragments) => TOKENIZER.with(|tokenizer| {
            let Some(tokenizer) = tokenizer else { return };
            let spec = ChunkSpec {
                bos: tokenizer.bos_id(),
                eos: tokenizer.eos_id(),
                pad: tokenizer.pad_id(),
                comma: tokenizer.tokenize(",").first().copied(),
                length: tokenizer.max_length().saturating_sub(2),
                backtrack: COMMA_BACKTRACK,
            };
            let tokenize = |t: &str| tokenizer.tokenize(t);
            if let Err(e) = chunk_prompt(&fragments, &tokenize, &spec, &TextualInversions::none()) {
                errors.push(e.to_string());
            }
        }),
    }
    errors
}

/// A preset file (TOML) and a styles.csv.
pub fn preset(data: &[u8]) -> Vec<String> {
    let Some(text) = text(data) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    match Preset::parse(text, "fuzz.toml") {
        Ok(p) => {
            let _ = p.unknown_fields();
            // What easel writes back must read back.
            if let Err(e) = Preset::parse(&p.to_toml("fuzz"), "fuzz.toml") {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    match presets::styles::read_styles(text, "styles.csv") {
        Ok(rows) => {
            for row in &rows {
                if let presets::styles::StyleRow::Style { preset, name, .. } = row {
                    if let Err(e) = Preset::parse(&preset.to_toml(name), "styles.csv") {
                        errors.push(e.to_string());
                    }
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    errors
}

/// A batch plan file (TOML).
pub fn plan(data: &[u8]) -> Vec<String> {
    let Some(text) = text(data) else {
        return Vec::new();
    };
    match easel::cli::batch::plan_file::parse(text, "fuzz-plan.toml") {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

/// The bytes as an A1111 / stable-diffusion.cpp `parameters` text, and as a PNG file whose
/// tEXt/zTXt/iTXt chunks are read.
pub fn png_metadata(data: &[u8]) -> Vec<String> {
    let mut errors = Vec::new();
    let as_text = String::from_utf8_lossy(data);
    let params = ImageParameters::from_parameters(&metadata::utf8_in_latin1(&as_text), "fuzz");
    if let Err(e) = params.to_patch(false) {
        errors.push(e.to_string());
    }
    let path = scratch_file("fuzz.png", data);
    match metadata::read_png(&path) {
        Ok((params, _warnings)) => {
            if let Err(e) = params.to_patch(false) {
                errors.push(e.to_string());
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if let Err(e) = easel::output::png::read_recipe(&path) {
        errors.push(e.to_string());
    }
    errors
}

/// The bytes as a .safetensors file: its header, every tensor read, and the file taken as a
/// single-file checkpoint and as a LoRA.
pub fn safetensors(data: &[u8]) -> Vec<String> {
    let path = scratch_file("fuzz.safetensors", data);
    let mut errors = Vec::new();
    match Weights::open(std::slice::from_ref(&path), Device::Cpu, Kind::Float) {
        Ok(weights) => read_all(&weights, &mut errors),
        Err(e) => errors.push(e.to_string()),
    }
    match Checkpoint::open(&path, None) {
        Ok(checkpoint) => {
            for component in checkpoint.version().components() {
                match checkpoint.weights(component, Device::Cpu, Kind::Float) {
                    Ok(weights) => read_all(&weights, &mut errors),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    lora(&path, &mut errors);
    errors
}

fn read_all(weights: &Weights, errors: &mut Vec<String>) {
    let mut names: Vec<&str> = weights.names().collect();
    names.sort_unstable();
    for name in names {
        if let Err(e) = weights.read_raw(name) {
            errors.push(e.to_string());
        }
        // As a model takes it: converted, then its mapped pages released.
        if let Some(shape) = weights.shape_of(name) {
            let _ = weights.root().get(&shape, name);
        }
    }
}

fn lora(path: &Path, errors: &mut Vec<String>) {
    let spec = LoraSpec {
        path: path.to_path_buf(),
        weight: 0.8,
    };
    if let Err(e) = LoraSet::load(&[spec]) {
        errors.push(e.to_string());
    }
}

/// The remote worker's JSON lines: read with a size limit, parsed as requests (a job checked by
/// the host's policy, its uploads decoded) and replies (previews decoded); and the bytes
/// themselves as a preview's PNG.
pub fn worker_protocol(data: &[u8]) -> Vec<String> {
    // Small, so that inputs of a few KiB reach the too-long-line path.
    const LIMIT: usize = 256;
    let mut errors = Vec::new();
    let mut input = BufReader::with_capacity(64, data);
    while let Ok(Some(line)) = protocol::read_line(&mut input, LIMIT) {
        let line = match line {
            Line::Text(t) => t,
            Line::Bad(message) => {
                errors.push(message);
                continue;
            }
        };
        match protocol::parse_request(&line) {
            // What the host checks before it runs a job or writes its uploads anywhere.
            Ok(Request::Submit { job, uploads }) => {
                if let Err(e) = easel::remote::policy::check_job(&job, &uploads) {
                    errors.push(e);
                }
                for upload in [&uploads.init_image, &uploads.mask].into_iter().flatten() {
                    if let Err(e) = protocol::base64_decode(&upload.bytes) {
                        errors.push(e);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        match protocol::parse_reply(&line) {
            Ok(Reply::Progress {
                preview: Some(wire),
                ..
            }) => {
                if let Err(e) = protocol::decode_preview(&wire) {
                    errors.push(e);
                }
            }
            Ok(Reply::Image { png, .. }) => {
                if let Err(e) = protocol::base64_decode(&png).and_then(|b| protocol::decode_png(&b))
                {
                    errors.push(e);
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    let wire = WirePicture {
        width: 0,
        height: 0,
        png: protocol::base64_encode(data),
    };
    if let Err(e) = protocol::decode_preview(&wire) {
        errors.push(e);
    }
    errors
}
