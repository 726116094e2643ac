//! The CLIP tokenizer against transformers' CLIPTokenizer: tests/fixtures/reference/tokenizer.json
//! (scripts/fixtures/tokenizer_ref.py) holds its ids for 250+ varied prompts.
mod common;

use easel::engine::tokenizer::ClipTokenizer;
use easel::engine::EngineError;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Case {
    text: String,
    ids: Vec<i64>,
    padded_sd1: Vec<i64>,
    padded_bang: Vec<i64>,
}

struct Reference {
    sd1: Value,
    bang: Value,
    decoder: Value,
    cases: Vec<Case>,
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_i64().expect("integer id"))
        .collect()
}

fn reference() -> Reference {
    let path = common::reference_path("tokenizer.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/make-fixtures", path.display()));
    let json: Value = serde_json::from_str(&text).expect("reference is JSON");
    let cases: Vec<Case> = json["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| Case {
            text: p["text"].as_str().expect("text").to_string(),
            ids: ids(&p["ids"]),
            padded_sd1: ids(&p["padded_sd1"]),
            padded_bang: ids(&p["padded_bang"]),
        })
        .collect();
    assert!(
        cases.len() >= 200,
        "the reference corpus shrank to {}",
        cases.len()
    );
    Reference {
        sd1: json["sd1"].clone(),
        bang: json["bang"].clone(),
        decoder: json["decoder"].clone(),
        cases,
    }
}

fn tiny_tokenizer_dir() -> PathBuf {
    common::tiny_sd1().join("tokenizer")
}

/// Compares every prompt and reports all mismatches at once.
fn check(
    tok: &ClipTokenizer,
    info: &Value,
    cases: &[Case],
    raw: Option<fn(&Case) -> &[i64]>,
    padded: fn(&Case) -> &[i64],
) {
    assert_eq!(tok.bos_id(), info["bos"].as_i64().unwrap(), "bos id");
    assert_eq!(tok.eos_id(), info["eos"].as_i64().unwrap(), "eos id");
    assert_eq!(tok.pad_id(), info["pad"].as_i64().unwrap(), "pad id");
    assert_eq!(
        tok.max_length() as u64,
        info["max_length"].as_u64().unwrap(),
        "max length"
    );
    let mut failures = Vec::new();
    for case in cases {
        if let Some(raw) = raw {
            let got = tok.tokenize(&case.text);
            if got != raw(case) {
                failures.push(format!(
                    "tokenize({:?}):\n  got  {got:?}\n  want {:?}",
                    case.text,
                    raw(case)
                ));
            }
        }
        let got = tok.encode_padded(&case.text);
        if got != padded(case) {
            failures.push(format!(
                "encode_padded({:?}):\n  got  {got:?}\n  want {:?}",
                case.text,
                padded(case)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn folder_tokenizer_matches_transformers() {
    let r = reference();
    let tok = ClipTokenizer::from_folder(&tiny_tokenizer_dir()).expect("tiny-sd1 tokenizer loads");
    check(&tok, &r.sd1, &r.cases, Some(|c| &c.ids), |c| &c.padded_sd1);
}

#[test]
fn embedded_tokenizer_matches_transformers() {
    let r = reference();
    let tok = ClipTokenizer::embedded("<|endoftext|>").expect("embedded vocabulary loads");
    check(&tok, &r.sd1, &r.cases, Some(|c| &c.ids), |c| &c.padded_sd1);
}

/// A scratch directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("easel-tokenizer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    fn copy_vocab(&self) {
        for f in ["vocab.json", "merges.txt"] {
            std::fs::copy(tiny_tokenizer_dir().join(f), self.0.join(f)).expect("copy vocabulary");
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny-sd1 tokenizer_config.json with another pad token (SD 2.x repositories pad with "!").
fn write_config_with_pad(dir: &Path, pad: &str) {
    let text = std::fs::read_to_string(tiny_tokenizer_dir().join("tokenizer_config.json")).unwrap();
    let mut config: Value = serde_json::from_str(&text).unwrap();
    config["pad_token"] = Value::String(pad.to_string());
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
}

#[test]
fn bang_padded_folder_matches_transformers() {
    let r = reference();
    let scratch = Scratch::new("bang");
    scratch.copy_vocab();
    write_config_with_pad(&scratch.0, "!");
    let tok = ClipTokenizer::from_folder(&scratch.0).expect("bang-padded tokenizer loads");
    check(&tok, &r.bang, &r.cases, None, |c| &c.padded_bang);
}

#[test]
fn embedded_bang_padded_matches_transformers() {
    let r = reference();
    let tok = ClipTokenizer::embedded("!").expect("embedded vocabulary loads");
    check(&tok, &r.bang, &r.cases, None, |c| &c.padded_bang);
}

/// A folder saved by newer transformers: an added_tokens_decoder marks the special tokens as
/// normalized, and its presence makes special_tokens_map.json (padding with "!") ignored.
#[test]
fn decoder_style_folder_matches_transformers() {
    let r = reference();
    let scratch = Scratch::new("decoder");
    scratch.copy_vocab();
    for (file, key) in [
        ("tokenizer_config.json", "config"),
        ("special_tokens_map.json", "special_tokens_map"),
    ] {
        std::fs::write(scratch.0.join(file), r.decoder[key].to_string()).unwrap();
    }
    let tok = ClipTokenizer::from_folder(&scratch.0).expect("decoder-style tokenizer loads");
    let cases: Vec<Case> = r.decoder["cases"]
        .as_array()
        .expect("decoder cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().expect("text").to_string(),
            ids: vec![],
            padded_sd1: ids(&c["padded"]),
            padded_bang: vec![],
        })
        .collect();
    assert!(
        cases.len() >= 20,
        "too few decoder-style cases: {}",
        cases.len()
    );
    check(&tok, &r.decoder, &cases, None, |c| &c.padded_sd1);
}

#[test]
fn long_prompt_tokenizes_in_milliseconds() {
    let r = reference();
    let case = r
        .cases
        .iter()
        .max_by_key(|c| c.text.split_whitespace().count())
        .expect("a long prompt");
    assert!(
        case.text.split_whitespace().count() >= 1000,
        "the corpus lost its 1000-word prompt"
    );
    let tok = ClipTokenizer::from_folder(&tiny_tokenizer_dir()).unwrap();
    let start = Instant::now();
    let got = tok.tokenize(&case.text);
    let took = start.elapsed();
    assert_eq!(got, case.ids);
    // Generous for a loaded debug build; a per-word cost of milliseconds would blow it.
    assert!(
        took < Duration::from_millis(800),
        "1000 words took {took:?}"
    );
}

#[test]
fn tokenizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClipTokenizer>();
}

fn load_error(dir: &Path) -> String {
    match ClipTokenizer::from_folder(dir) {
        Ok(_) => panic!("{} loaded, but should not", dir.display()),
        Err(e @ EngineError::Tokenizer { .. }) => e.to_string(),
        Err(e) => panic!("expected a tokenizer error, got {e:?}"),
    }
}

#[test]
fn missing_or_garbled_files_give_clear_errors() {
    let scratch = Scratch::new("errors");
    let dir = &scratch.0;

    let msg = load_error(dir);
    assert!(
        msg.contains("vocab.json") && msg.contains("cannot be read"),
        "{msg}"
    );

    scratch.copy_vocab();
    std::fs::write(dir.join("vocab.json"), "{\"a\": 0, \"b\": ").unwrap();
    let msg = load_error(dir);
    assert!(
        msg.contains("vocab.json") && msg.contains("not a CLIP vocabulary"),
        "{msg}"
    );

    std::fs::write(dir.join("vocab.json"), [0xff, 0xfe, 0x00]).unwrap();
    let msg = load_error(dir);
    assert!(msg.contains("vocab.json") && msg.contains("UTF-8"), "{msg}");

    scratch.copy_vocab();
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    let msg = load_error(dir);
    assert!(
        msg.contains("merges.txt") && msg.contains("cannot be read"),
        "{msg}"
    );

    std::fs::write(
        dir.join("merges.txt"),
        "#version: 0.2\ni n\nthree tokens here\n",
    )
    .unwrap();
    let msg = load_error(dir);
    assert!(
        msg.contains("merges.txt") && msg.contains("line 3"),
        "{msg}"
    );

    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\nq\u{2603} x\n").unwrap();
    let msg = load_error(dir);
    assert!(
        msg.contains("merges.txt")
            && msg.contains("line 3")
            && msg.contains("do not belong together"),
        "{msg}"
    );

    scratch.copy_vocab();
    std::fs::write(dir.join("tokenizer_config.json"), "not json").unwrap();
    let msg = load_error(dir);
    assert!(
        msg.contains("tokenizer_config.json") && msg.contains("not valid JSON"),
        "{msg}"
    );
    assert!(
        msg.contains("download the model again"),
        "the message should say what to do: {msg}"
    );
}
