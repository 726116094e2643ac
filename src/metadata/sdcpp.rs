//! stable-diffusion.cpp's `parameters` text. It looks like AUTOMATIC1111's but quotes nothing:
//! the prompt (LoRA tags included), an optional `Negative prompt: ` line, then one line
//! `Steps: 20, CFG scale: 7.000000, ..., Sampler: euler_a karras, ..., Version:
//! stable-diffusion.cpp` where a value may hold `[a, b, ]` lists, and newer builds end it with
//! `, SDCPP: {json}`. So the line is split on `, ` outside brackets and braces, and a piece that
//! is not `Key: value` continues the value before it.
use super::a1111::{apply, insert_extra};
use super::{ImageParameters, Source};
use serde_json::Value;

const MARKER: &str = "Version: stable-diffusion.cpp";
const NEGATIVE: &str = "Negative prompt: ";
const JSON_KEY: &str = ", SDCPP: ";

/// Whether a `parameters` text was written by stable-diffusion.cpp.
pub fn is_sdcpp(text: &str) -> bool {
    text.trim_end()
        .rsplit('\n')
        .next()
        .is_some_and(|last| last.contains(MARKER))
}

/// Splits on `, ` where no bracket, brace or (inside them) JSON string is open.
fn split_top_level(line: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start = 0;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'"' if depth > 0 => in_string = true,
                b',' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                    pieces.push(&line[start..i]);
                    start = i + 2;
                    i += 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    pieces.push(&line[start..]);
    pieces
}

/// `Key: value` when the piece starts with a key as sd.cpp writes them.
fn key_value(piece: &str) -> Option<(&str, &str)> {
    let (key, value) = piece.split_once(": ")?;
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    let rest_ok = chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '-' | '/'));
    (first_ok && rest_ok).then_some((key, value))
}

pub fn parse(text: &str, origin: &str) -> ImageParameters {
    let text = text.trim_end_matches(['\n', '\r']);
    let (body, settings) = text.rsplit_once('\n').unwrap_or(("", text));
    let (prompt, negative) = match body.split_once(&format!("\n{NEGATIVE}")) {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => match body.strip_prefix(NEGATIVE) {
            Some(n) => (String::new(), n.to_string()),
            None => (body.to_string(), String::new()),
        },
    };
    let mut p = ImageParameters::empty(Source::Sdcpp, origin);
    p.prompt = Some(prompt);
    p.negative_prompt = Some(negative);

    let (line, json) = match settings.split_once(JSON_KEY) {
        Some((line, json)) => (line, Some(json)),
        None => (settings, None),
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for piece in split_top_level(line) {
        match (key_value(piece), fields.last_mut()) {
            (Some((k, v)), _) => fields.push((k.to_string(), v.to_string())),
            (None, Some((_, value))) => {
                value.push_str(", ");
                value.push_str(piece);
            }
            (None, None) => {}
        }
    }
    for (key, value) in fields {
        if key == "Sampler" {
            // `euler_a karras`: the sampling method, then the scheduler when one was chosen.
            let (method, schedule) = value.split_once(' ').unwrap_or((&value, ""));
            p.set_sampler(&key, method);
            if !schedule.is_empty() {
                insert_extra(&mut p, "Scheduler", schedule);
            }
        } else {
            apply(&mut p, &key, &value);
        }
    }
    if let Some(json) = json {
        let value = serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.into()));
        p.extra.insert("SDCPP".into(), value);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    #[test]
    fn splits_outside_lists_and_json() {
        assert_eq!(
            split_top_level("A: 1, Skip layers: [7, 8, 9, ], J: {\"a\": \"x, ]\"}, B: 2"),
            vec![
                "A: 1",
                "Skip layers: [7, 8, 9, ]",
                "J: {\"a\": \"x, ]\"}",
                "B: 2"
            ]
        );
    }

    #[test]
    fn reads_a_settings_line_with_json_tail() {
        let text = "a cat\nwith a hat\nNegative prompt: dogs\nSteps: 8, CFG scale: 4.500000, \
                    Guidance: 3.500000, Eta: 0.000000, Seed: 99, Size: 256x384, Model: m.gguf, \
                    RNG: cuda, Sampler: euler karras, TE: clip_l.safetensors, TE: t5.gguf, \
                    Version: stable-diffusion.cpp, SDCPP: {\"seed\": 99, \"prompt\": {\"positive\": \"a, b\"}}";
        assert!(is_sdcpp(text));
        let p = parse(text, "x");
        assert_eq!(p.prompt.as_deref(), Some("a cat\nwith a hat"));
        assert_eq!(p.negative_prompt.as_deref(), Some("dogs"));
        assert_eq!((p.steps, p.cfg, p.seed), (Some(8), Some(4.5), Some(99)));
        assert_eq!((p.width, p.height), (Some(256), Some(384)));
        assert_eq!(p.sampler, Some(SamplerKind::Euler));
        assert_eq!(p.extra["Scheduler"], "karras");
        assert_eq!(
            p.extra["TE"],
            serde_json::json!(["clip_l.safetensors", "t5.gguf"])
        );
        assert_eq!(p.extra["SDCPP"]["prompt"]["positive"], "a, b");
        assert!(!is_sdcpp("a fox\nSteps: 20, Sampler: Euler a, Seed: 1"));
    }
}
