//! AUTOMATIC1111's infotext, read by its rules: prompt lines, then lines from one starting with
//! `Negative prompt:`, then a last line of `Key: value` pairs where a value holding a comma,
//! colon or newline is written as a JSON string. The last line only counts as settings when it
//! holds at least three pairs; otherwise it is part of the prompt (a prompt alone is valid).
use super::{ImageParameters, Source};
use regex::Regex;
use serde_json::Value;
use std::sync::OnceLock;

const NEGATIVE: &str = "Negative prompt:";

/// One `Key: value` pair of the settings line: the key starts with a word character and holds
/// word characters, spaces, dashes and slashes; the value is a JSON string or runs to the
/// next comma.
fn pair_pattern() -> &'static Regex {
    static PAIR: OnceLock<Regex> = OnceLock::new();
    PAIR.get_or_init(|| {
        Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#)
            .expect("a valid pattern")
    })
}

/// The `Key: value` pairs of a settings line, values unquoted, in order.
pub fn pairs(line: &str) -> Vec<(String, String)> {
    pair_pattern()
        .captures_iter(line)
        .map(|c| (c[1].to_string(), unquote(&c[2])))
        .collect()
}

/// A JSON-quoted value becomes its text; anything else (or broken JSON) stays as written.
pub fn unquote(value: &str) -> String {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        serde_json::from_str::<String>(value).unwrap_or_else(|_| value.to_string())
    } else {
        value.to_string()
    }
}

/// Splits an infotext into (prompt, negative prompt, settings line).
pub fn split(text: &str) -> (String, String, String) {
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let last = lines.pop().unwrap_or_default();
    let settings = if pairs(last).len() >= 3 {
        last.to_string()
    } else {
        lines.push(last);
        String::new()
    };
    let (mut prompt, mut negative) = (Vec::new(), Vec::new());
    let mut in_negative = false;
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix(NEGATIVE) {
            in_negative = true;
            line = rest.trim();
        }
        if in_negative {
            negative.push(line);
        } else {
            prompt.push(line);
        }
    }
    (prompt.join("\n"), negative.join("\n"), settings)
}

/// `512x768` as (width, height).
pub fn size(value: &str) -> Option<(u32, u32)> {
    let (w, h) = value.trim().split_once('x')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(w) || !digits(h) {
        return None;
    }
    Some((w.parse().ok()?, h.parse().ok()?))
}

pub fn parse(text: &str, origin: &str) -> ImageParameters {
    let (prompt, negative, settings) = split(text);
    let mut p = ImageParameters::empty(Source::A1111, origin);
    p.prompt = Some(prompt);
    p.negative_prompt = Some(negative);
    for (key, value) in pairs(&settings) {
        apply(&mut p, &key, &value);
    }
    p
}

/// Sets the recipe field a known key names; anything else, or a value that does not parse,
/// goes to `extra` as written.
pub(crate) fn apply(p: &mut ImageParameters, key: &str, value: &str) {
    let v = value.trim();
    let known = match key {
        "Steps" => v.parse().map(|n| p.steps = Some(n)).is_ok(),
        "CFG scale" => v
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(|x| p.cfg = Some(x))
            .is_some(),
        "Seed" => v.parse().map(|n| p.seed = Some(n)).is_ok(),
        "Size" => size(v)
            .map(|(w, h)| {
                p.width = Some(w);
                p.height = Some(h);
            })
            .is_some(),
        "Model" if !v.is_empty() => {
            p.model = Some(v.to_string());
            true
        }
        // Both programs write it only when it skips; 0 and below mean "the model's default".
        "Clip skip" => v
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| p.clip_skip = Some(n))
            .is_some(),
        "Sampler" => {
            p.set_sampler(key, v);
            true
        }
        _ => false,
    };
    if !known {
        insert_extra(p, key, value);
    }
}

/// A key seen twice keeps both values, as an array.
pub(crate) fn insert_extra(p: &mut ImageParameters, key: &str, value: &str) {
    let new = Value::String(value.to_string());
    match p.extra.get_mut(key) {
        None => {
            p.extra.insert(key.to_string(), new);
        }
        Some(Value::Array(values)) => values.push(new),
        Some(old) => {
            let first = old.take();
            *old = Value::Array(vec![first, new]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    #[test]
    fn pairs_follow_the_quoting_rules() {
        let line = r#"Steps: 20, Sampler: Euler a, Lora hashes: "add_detail: 7c6b, x: 3b8a", Note: "say \"hi\"", Empty: , Hires upscale: 2"#;
        assert_eq!(
            pairs(line),
            vec![
                ("Steps".into(), "20".into()),
                ("Sampler".into(), "Euler a".into()),
                ("Lora hashes".into(), "add_detail: 7c6b, x: 3b8a".into()),
                ("Note".into(), "say \"hi\"".into()),
                ("Empty".into(), "".into()),
                ("Hires upscale".into(), "2".into()),
            ]
        );
    }

    #[test]
    fn a_short_last_line_is_prompt() {
        let (p, n, s) = split("a fox\nSteps: 20, Sampler: Euler a");
        assert_eq!(
            (p.as_str(), n.as_str(), s.as_str()),
            ("a fox\nSteps: 20, Sampler: Euler a", "", "")
        );
        let p = parse("just a prompt", "x");
        assert_eq!(p.prompt.as_deref(), Some("just a prompt"));
        assert_eq!(p.steps, None);
    }

    #[test]
    fn fields_map_and_the_rest_is_extra() {
        let p = parse(
            "a fox\nNegative prompt: blurry\nSteps: 30, Sampler: DDIM, CFG scale: 7, Seed: 42, \
             Size: 640x512, Model: sd15, Clip skip: 2, Steps: x",
            "x",
        );
        assert_eq!(p.steps, Some(30));
        assert_eq!(p.sampler, Some(SamplerKind::Ddim));
        assert_eq!(p.cfg, Some(7.0));
        assert_eq!(
            (p.seed, p.width, p.height),
            (Some(42), Some(640), Some(512))
        );
        assert_eq!(p.model.as_deref(), Some("sd15"));
        assert_eq!(p.clip_skip, Some(2));
        // A value that does not parse is kept, not dropped.
        assert_eq!(p.extra["Steps"], "x");
        assert_eq!(size("512x"), None);
        assert_eq!(size("12x34"), Some((12, 34)));
    }
}
