//! Building a [`ClipTokenizer`] from a tokenizer folder or from the embedded CLIP vocabulary.
use super::bpe::{byte_symbols, byte_symbols_in_vocab_order, Bpe, END_OF_WORD};
use super::special::{AddedToken, Declarations, TokenSpec, SPECIAL_KEYS};
use super::text::{normalize, PreTokenizer};
use super::{ClipTokenizer, DEFAULT_MAX_LENGTH};
use crate::engine::error::{EngineError, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// open_clip's merge list, shipped with the binary (MIT licence in assets/).
const EMBEDDED_BPE: &[u8] = include_bytes!("../../../assets/bpe_simple_vocab_16e6.txt.gz");
const EMBEDDED_NAME: &str = "the embedded assets/bpe_simple_vocab_16e6.txt.gz";
/// CLIP uses merge lines 1..=48894 of that file (line 0 is a header).
const EMBEDDED_MERGES: usize = 49152 - 256 - 2;
const STARTOFTEXT: &str = "<|startoftext|>";
const ENDOFTEXT: &str = "<|endoftext|>";

fn error(path: &Path, message: impl Into<String>) -> EngineError {
    EngineError::Tokenizer {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The special tokens a folder declares, by role, and every declaration in transformers' order.
struct Specials {
    bos: String,
    eos: String,
    unk: String,
    pad: String,
    declared: Vec<TokenSpec>,
}

pub fn from_folder(dir: &Path) -> Result<ClipTokenizer> {
    let vocab_path = dir.join("vocab.json");
    let vocab_text = read_text(&vocab_path)?;
    let vocab: HashMap<String, i64> = serde_json::from_str(&vocab_text).map_err(|e| {
        error(
            &vocab_path,
            format!("is not a CLIP vocabulary (a JSON object of token -> id): {e}"),
        )
    })?;
    let merges_path = dir.join("merges.txt");
    let merges = parse_merges(&merges_path, &read_text(&merges_path)?)?;
    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_object(&config_path)?.unwrap_or_default();
    let map_path = dir.join("special_tokens_map.json");
    let added_path = dir.join("added_tokens.json");
    let specials = folder_specials(&config, &map_path, &added_path)?;
    let max_length = config
        .get("model_max_length")
        .and_then(Value::as_u64)
        .filter(|n| (2..=1 << 20).contains(n))
        .map_or(DEFAULT_MAX_LENGTH, |n| n as usize);
    build(vocab, &merges, specials, max_length, &merges_path)
}

/// Which special tokens a folder declares, resolved as transformers 5 does: with an
/// `added_tokens_decoder` in the config, named tokens take their flags from it and
/// special_tokens_map.json is not read; without one, special_tokens_map.json overrides the
/// config and added_tokens.json adds tokens. Missing names get CLIPTokenizer's defaults.
fn folder_specials(
    config: &Map<String, Value>,
    map_path: &Path,
    added_path: &Path,
) -> Result<Specials> {
    let mut named: HashMap<&str, Value> = SPECIAL_KEYS
        .iter()
        .filter_map(|&k| config.get(k).map(|v| (k, v.clone())))
        .collect();
    let mut declarations = Declarations::default();
    let mut decoder: HashMap<String, TokenSpec> = HashMap::new();
    if let Some(entries) = config
        .get("added_tokens_decoder")
        .and_then(Value::as_object)
    {
        let mut by_id: Vec<(u64, TokenSpec)> = entries
            .iter()
            .filter_map(|(id, v)| Some((id.parse().ok()?, TokenSpec::from_json(v)?)))
            .collect();
        by_id.sort_by_key(|(id, _)| *id);
        for (_, spec) in by_id {
            decoder.insert(spec.content.clone(), spec.clone());
            declarations.declare(spec);
        }
    } else {
        if let Some(map) = read_json_object(map_path)? {
            for &key in &SPECIAL_KEYS {
                if let Some(v) = map.get(key) {
                    named.insert(key, v.clone());
                }
            }
        }
        if let Some(added) = read_json_object(added_path)? {
            let special: Vec<String> = named
                .values()
                .filter_map(TokenSpec::from_json)
                .map(|s| s.content)
                .collect();
            let mut by_id: Vec<(i64, &String)> = added
                .iter()
                .filter_map(|(t, id)| Some((id.as_i64()?, t)))
                .collect();
            by_id.sort();
            for (_, content) in by_id {
                declarations.declare(TokenSpec {
                    content: content.clone(),
                    normalized: !special.contains(content),
                });
            }
        }
    }
    let mut contents: HashMap<&str, String> = HashMap::new();
    for &key in &SPECIAL_KEYS {
        let spec = match named.get(key).and_then(TokenSpec::from_json) {
            Some(spec) => spec,
            None => match key {
                "bos_token" => TokenSpec::plain(STARTOFTEXT),
                "eos_token" | "unk_token" | "pad_token" => TokenSpec::plain(ENDOFTEXT),
                _ => continue,
            },
        };
        let spec = decoder.get(&spec.content).cloned().unwrap_or(spec);
        contents.insert(key, spec.content.clone());
        declarations.declare(spec);
    }
    let mut role = |key: &str| contents.remove(key).unwrap_or_default();
    Ok(Specials {
        bos: role("bos_token"),
        eos: role("eos_token"),
        unk: role("unk_token"),
        pad: role("pad_token"),
        declared: declarations.into_specs(),
    })
}

pub fn embedded(pad_token: &str) -> Result<ClipTokenizer> {
    let path = PathBuf::from(EMBEDDED_NAME);
    let mut text = String::new();
    flate2::read::GzDecoder::new(EMBEDDED_BPE)
        .read_to_string(&mut text)
        .map_err(|e| error(&path, format!("cannot be unpacked: {e}")))?;
    let mut merges = Vec::with_capacity(EMBEDDED_MERGES);
    for (index, line) in text.split('\n').enumerate().skip(1).take(EMBEDDED_MERGES) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((index + 1, a.to_string(), b.to_string())),
            _ => return Err(error(&path, format!("line {} is not a merge", index + 1))),
        }
    }
    if merges.len() != EMBEDDED_MERGES {
        return Err(error(
            &path,
            format!("holds {} merges, not {EMBEDDED_MERGES}", merges.len()),
        ));
    }
    let symbols = byte_symbols_in_vocab_order();
    let tokens = symbols
        .iter()
        .map(|c| c.to_string())
        .chain(symbols.iter().map(|c| format!("{c}{END_OF_WORD}")))
        .chain(merges.iter().map(|(_, a, b)| format!("{a}{b}")))
        .chain([STARTOFTEXT.to_string(), ENDOFTEXT.to_string()]);
    let vocab: HashMap<String, i64> = tokens.enumerate().map(|(i, t)| (t, i as i64)).collect();
    // As SD repositories' tokenizer_config.json declares them.
    let mut declarations = Declarations::default();
    let normalized = |content: &str| TokenSpec {
        content: content.to_string(),
        normalized: true,
    };
    declarations.declare(normalized(STARTOFTEXT));
    declarations.declare(normalized(ENDOFTEXT));
    declarations.declare(TokenSpec::plain(pad_token));
    let specials = Specials {
        bos: STARTOFTEXT.to_string(),
        eos: ENDOFTEXT.to_string(),
        unk: ENDOFTEXT.to_string(),
        pad: pad_token.to_string(),
        declared: declarations.into_specs(),
    };
    build(vocab, &merges, specials, DEFAULT_MAX_LENGTH, &path)
}

fn build(
    vocab: HashMap<String, i64>,
    merges: &[(usize, String, String)],
    specials: Specials,
    max_length: usize,
    merges_path: &Path,
) -> Result<ClipTokenizer> {
    let bpe = Bpe::new(vocab, merges, Some(&specials.unk)).map_err(|bad| {
        error(
            merges_path,
            format!(
                "the merge on line {} needs {:?}, which the vocabulary lacks: vocab.json and merges.txt do not belong together",
                bad.line, bad.missing
            ),
        )
    })?;
    // Tokens outside the vocabulary get the next free ids, in declaration order.
    let mut next_id = bpe.vocab_size() as i64;
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut raw_specials = Vec::new();
    let mut normalized_specials = Vec::new();
    for spec in &specials.declared {
        let id = bpe.token_id(&spec.content).unwrap_or_else(|| {
            next_id += 1;
            next_id - 1
        });
        ids.insert(spec.content.clone(), id);
        let (pattern, list) = if spec.normalized {
            (normalize(&spec.content), &mut normalized_specials)
        } else {
            (spec.content.clone(), &mut raw_specials)
        };
        list.push(AddedToken { pattern, id });
    }
    let id_of = |content: &str| ids.get(content).copied();
    let (Some(bos), Some(eos)) = (id_of(&specials.bos), id_of(&specials.eos)) else {
        return Err(error(
            merges_path,
            "the tokenizer has no beginning or end token",
        ));
    };
    Ok(ClipTokenizer {
        bpe,
        pre_tokenizer: PreTokenizer::new(byte_symbols()),
        raw_specials,
        normalized_specials,
        bos,
        eos,
        pad: id_of(&specials.pad).unwrap_or(eos),
        max_length,
    })
}

/// merges.txt as `tokenizers` reads it: `#version` lines skipped, each other line two tokens
/// separated by one space. Blank lines are skipped too (a stray trailing newline is harmless).
fn parse_merges(path: &Path, text: &str) -> Result<Vec<(usize, String, String)>> {
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((index + 1, a.to_string(), b.to_string()))
            }
            _ => {
                return Err(error(
                    path,
                    format!(
                        "line {} is not a merge (two tokens separated by a space): {line:?}",
                        index + 1
                    ),
                ))
            }
        }
    }
    if merges.is_empty() {
        return Err(error(path, "holds no merges"));
    }
    Ok(merges)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| error(path, format!("cannot be read ({e})")))?;
    String::from_utf8(bytes).map_err(|_| error(path, "is not UTF-8 text"))
}

/// A JSON object from an optional file: `None` when the file does not exist.
fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path)?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(error(path, "is not a JSON object")),
        Err(e) => Err(error(path, format!("is not valid JSON: {e}"))),
    }
}
