//! The preset file: TOML a person can write by hand. Every recipe field is optional; keys this
//! easel does not know are kept as found, so a preset written by a newer easel (or holding a
//! field this one does not use yet) survives being renamed or re-saved here.
use super::error::{PresetError, Result};
use crate::recipe::{self, RecipePatch};
use serde::Deserialize;
use std::ops::Range;
use toml::Spanned;

/// The preset format this build writes; files with a newer one are refused, never rewritten.
pub const PRESET_SCHEMA_VERSION: u32 = 1;

/// The keys this easel reads, in the order it writes them.
pub const KNOWN_KEYS: &[&str] = &[
    "schema_version",
    "description",
    "tags",
    "model",
    "prompt",
    "negative_prompt",
    "sampler",
    "steps",
    "cfg",
    "seed",
    "width",
    "height",
    "batch_size",
    "clip_skip",
    "guidance_rescale",
];

/// A named, possibly partial recipe. The name is the file's, so it is not stored here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Preset {
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The recipe fields it sets. `prompt` and `negative_prompt` are styles: `{prompt}` marks
    /// where the user's text goes (see `merge`).
    pub patch: RecipePatch,
    /// Keys this easel does not know, with their values, written back unchanged on save.
    pub extra: toml::Table,
}

/// What `Known` reads: spans let value errors point at their line and column.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Known {
    schema_version: Option<Spanned<i64>>,
    description: Option<String>,
    tags: Option<Vec<String>>,
    model: Option<Spanned<String>>,
    prompt: Option<String>,
    negative_prompt: Option<String>,
    sampler: Option<Spanned<String>>,
    steps: Option<Spanned<usize>>,
    cfg: Option<Spanned<f64>>,
    seed: Option<u64>,
    width: Option<Spanned<u32>>,
    height: Option<Spanned<u32>>,
    batch_size: Option<Spanned<u32>>,
    clip_skip: Option<u32>,
    guidance_rescale: Option<Spanned<f64>>,
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn at(file: &str, text: &str, span: Option<Range<usize>>, message: String) -> PresetError {
    let (line, column) = line_col(text, span.map_or(0, |s| s.start));
    PresetError::Parse {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> PresetError {
    let message = format!(
        "{} (fix the file there)",
        plain_types(e.message().trim_end())
    );
    at(file, text, e.span(), message)
}

/// serde names Rust types in its messages; a person editing TOML thinks in numbers and text.
fn plain_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, plain) in [
        ("expected usize", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a string", "expected text in quotes"),
    ] {
        out = out.replace(rust, plain);
    }
    out
}

impl Preset {
    /// Parses and validates a preset file; `file` names it in errors (a path, or `built-in NAME`).
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        let known: Known = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;
        let bad = |span: Range<usize>, message: String| at(file, text, Some(span), message);

        if let Some(v) = &known.schema_version {
            if *v.get_ref() > i64::from(PRESET_SCHEMA_VERSION) {
                return Err(bad(
                    v.span(),
                    format!(
                        "schema_version {} is newer than this easel understands ({PRESET_SCHEMA_VERSION}): update easel to use this preset",
                        v.get_ref()
                    ),
                ));
            }
            if *v.get_ref() < 1 {
                return Err(bad(
                    v.span(),
                    format!("schema_version must be {PRESET_SCHEMA_VERSION}"),
                ));
            }
        }
        let check = |span: Range<usize>, r: std::result::Result<(), recipe::RecipeError>| {
            r.map_err(|e| bad(span, e.to_string()))
        };
        if let Some(v) = &known.steps {
            check(v.span(), recipe::check_steps(*v.get_ref()))?;
        }
        if let Some(v) = &known.cfg {
            check(v.span(), recipe::check_cfg(*v.get_ref()))?;
        }
        if let Some(v) = &known.batch_size {
            check(v.span(), recipe::check_batch(*v.get_ref()))?;
        }
        if let Some(v) = &known.guidance_rescale {
            check(v.span(), recipe::check_guidance_rescale(*v.get_ref()))?;
        }
        if let Some(v) = &known.width {
            check(v.span(), recipe::check_side("width", *v.get_ref()))?;
        }
        if let Some(v) = &known.height {
            check(v.span(), recipe::check_side("height", *v.get_ref()))?;
        }
        if let Some(v) = &known.model {
            if v.get_ref().trim().is_empty() {
                return Err(bad(
                    v.span(),
                    "model is empty: name a model, or leave the line out".into(),
                ));
            }
        }
        // AUTOMATIC1111's names may imply a schedule ("DPM++ 2M Karras").
        let (sampler, schedule) = match &known.sampler {
            Some(v) => {
                let (kind, schedule) = crate::engine::schedulers::parse_a1111(v.get_ref())
                    .map_err(|e| bad(v.span(), e.to_string()))?;
                (Some(kind), schedule)
            }
            None => (None, None),
        };

        let extra = table
            .into_iter()
            .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
            .collect();
        Ok(Preset {
            description: known.description,
            tags: known.tags.unwrap_or_default(),
            patch: RecipePatch {
                model: known.model.map(Spanned::into_inner),
                prompt: known.prompt,
                negative_prompt: known.negative_prompt,
                sampler,
                schedule,
                timestep_spacing: None,
                steps: known.steps.map(Spanned::into_inner),
                cfg: known.cfg.map(Spanned::into_inner),
                seed: known.seed,
                width: known.width.map(Spanned::into_inner),
                height: known.height.map(Spanned::into_inner),
                batch_size: known.batch_size.map(Spanned::into_inner),
                clip_skip: known.clip_skip,
                guidance_rescale: known.guidance_rescale.map(Spanned::into_inner),
                ..RecipePatch::default()
            },
            extra,
        })
    }

    /// The keys kept without being understood, each with a hint when it looks like a typo.
    pub fn unknown_fields(&self) -> Vec<String> {
        self.extra
            .keys()
            .map(|k| match did_you_mean(k) {
                Some(known) => format!("{k} (did you mean {known}?)"),
                None => k.clone(),
            })
            .collect()
    }

    /// Whether it sets anything a render uses.
    pub fn sets_anything(&self) -> bool {
        self.patch != RecipePatch::default()
    }

    /// The file's text: known fields in a fixed order, then the kept unknown ones.
    pub fn to_toml(&self, name: &str) -> String {
        let mut t = toml::Table::new();
        t.insert(
            "schema_version".into(),
            i64::from(PRESET_SCHEMA_VERSION).into(),
        );
        if let Some(d) = &self.description {
            t.insert("description".into(), d.clone().into());
        }
        if !self.tags.is_empty() {
            t.insert("tags".into(), self.tags.clone().into());
        }
        let p = &self.patch;
        let mut put = |key: &str, v: Option<toml::Value>| {
            if let Some(v) = v {
                t.insert(key.into(), v);
            }
        };
        let int = |v: u64| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        put("model", p.model.clone().map(Into::into));
        put("prompt", p.prompt.clone().map(Into::into));
        put("negative_prompt", p.negative_prompt.clone().map(Into::into));
        put("sampler", p.sampler.map(|s| s.name().into()));
        put("steps", p.steps.map(|v| int(v as u64)));
        put("cfg", p.cfg.map(Into::into));
        put("seed", p.seed.map(int));
        put("width", p.width.map(|v| int(v.into())));
        put("height", p.height.map(|v| int(v.into())));
        put("batch_size", p.batch_size.map(|v| int(v.into())));
        put("clip_skip", p.clip_skip.map(|v| int(v.into())));
        put("guidance_rescale", p.guidance_rescale.map(Into::into));
        for (k, v) in &self.extra {
            if !t.contains_key(k) {
                t.insert(k.clone(), v.clone());
            }
        }
        // A table of strings and numbers always serializes.
        let body = toml::to_string(&t).unwrap_or_default();
        format!(
            "# easel preset {name:?}: edit freely. In prompts, {{prompt}} marks where your prompt goes;\n\
             # without it, your prompt comes first and this one is added after \", \".\n{body}"
        )
    }
}

/// The known key an unknown one is probably a typo of (one or two edits away).
fn did_you_mean(key: &str) -> Option<&'static str> {
    let lower = key.to_lowercase();
    let aliases = [
        ("negative", "negative_prompt"),
        ("negative-prompt", "negative_prompt"),
        ("neg_prompt", "negative_prompt"),
        ("batch", "batch_size"),
        ("guidance", "cfg"),
        ("cfg_scale", "cfg"),
        ("guidance_scale", "cfg"),
        ("scheduler", "sampler"),
        ("tag", "tags"),
    ];
    if let Some((_, known)) = aliases.iter().find(|(a, _)| *a == lower) {
        return Some(known);
    }
    KNOWN_KEYS
        .iter()
        .copied()
        .find(|k| lower != *k && strsim::levenshtein(&lower, k) <= 2 && k.len() > 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    const FULL: &str = r#"
schema_version = 1
description = "warm film look"
tags = ["photo", "film"]
model = "models/sd15"
prompt = "{prompt}, Kodak Portra 400, \"grainy\""
negative_prompt = "cartoon"
sampler = "Euler a"
steps = 28
cfg = 6
seed = 42
width = 512
height = 768
batch_size = 2
clip_skip = 2
stpes = 3

[[loras]]
name = "film"
weight = 0.7
"#;

    #[test]
    fn reads_every_field_and_keeps_unknown_ones() {
        let p = Preset::parse(FULL, "full.toml").unwrap();
        assert_eq!(p.description.as_deref(), Some("warm film look"));
        assert_eq!(p.tags, ["photo", "film"]);
        let r = &p.patch;
        assert_eq!(r.model.as_deref(), Some("models/sd15"));
        assert_eq!(
            r.prompt.as_deref(),
            Some("{prompt}, Kodak Portra 400, \"grainy\"")
        );
        assert_eq!(r.sampler, Some(SamplerKind::EulerAncestral));
        assert_eq!((r.steps, r.cfg, r.seed), (Some(28), Some(6.0), Some(42)));
        assert_eq!(
            (r.width, r.height, r.batch_size),
            (Some(512), Some(768), Some(2))
        );
        assert_eq!(r.clip_skip, Some(2));
        let keys: Vec<&String> = p.extra.keys().collect();
        assert_eq!(keys, ["stpes", "loras"]);
        assert_eq!(p.unknown_fields(), ["stpes (did you mean steps?)", "loras"]);
    }

    #[test]
    fn written_text_reads_back_the_same() {
        let p = Preset::parse(FULL, "full.toml").unwrap();
        let text = p.to_toml("full");
        assert!(text.starts_with("# easel preset \"full\""), "{text}");
        assert!(text.contains("schema_version = 1\n"), "{text}");
        assert!(text.contains("sampler = \"euler_a\"\n"), "{text}");
        let again = Preset::parse(&text, "again.toml").unwrap();
        assert_eq!(again, p);
        assert_eq!(again.to_toml("full"), text);
        let empty = Preset::default();
        assert_eq!(Preset::parse(&empty.to_toml("e"), "e").unwrap(), empty);
        assert!(!empty.sets_anything() && p.sets_anything());
    }

    fn error_at(text: &str) -> (usize, usize, String) {
        match Preset::parse(text, "x.toml").unwrap_err() {
            PresetError::Parse {
                file,
                line,
                column,
                message,
            } => {
                assert_eq!(file, "x.toml");
                (line, column, message)
            }
            other => panic!("not a parse error: {other}"),
        }
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let (l, c, m) = error_at("schema_version = 1\nsteps = 20\nprompt = \"unclosed\n");
        assert_eq!((l, c), (3, 19), "{m}");
        let (l, c, m) = error_at("schema_version = 1\n\nsteps = \"many\"\n");
        assert_eq!((l, c), (3, 9), "{m}");
        assert!(m.contains("expected a whole number"), "{m}");
        let (l, c, m) = error_at("cfg = 7\nsteps = 0\n");
        assert_eq!((l, c), (2, 9));
        assert!(m.contains("steps must be between 1 and 1000"), "{m}");
        let (l, c, m) = error_at("  sampler = \"dpm9\"\n");
        assert_eq!((l, c), (1, 13));
        assert!(m.contains("dpm9"), "{m}");
        let (l, _, m) = error_at("# c\nschema_version = 7\n");
        assert_eq!(l, 2);
        assert!(m.contains("newer than this easel"), "{m}");
        let (_, _, m) = error_at("width = 0\n");
        assert!(m.contains("width must be between"), "{m}");
        let (_, _, m) = error_at("cfg = nan\n");
        assert!(m.contains("cfg must be a finite"), "{m}");
        let (_, _, m) = error_at("model = \" \"\n");
        assert!(m.contains("model is empty"), "{m}");
        let (l, c, _) = error_at("steps = 20\nsteps = 21\n");
        assert_eq!((l, c), (2, 1));
        let (l, c, _) = error_at("prompt = \"ünï\" x\n");
        assert_eq!((l, c), (1, 16), "columns count characters, not bytes");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab\ncd", 99), (2, 3));
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(did_you_mean("stepz"), Some("steps"));
        assert_eq!(did_you_mean("negative"), Some("negative_prompt"));
        assert_eq!(did_you_mean("Guidance_Scale"), Some("cfg"));
        assert_eq!(did_you_mean("loras"), None);
        assert_eq!(did_you_mean("clip_skip"), None);
    }
}
