//! Output file names from the plan's `out` template, such as `{preset}/{date}/{seed}-{index}.png`.
//! Values are made file-safe (no `/`, no leading dot), and the template's own text may not
//! climb out of the output folder, so every name lands inside it.
use std::path::{Component, Path};

/// Used when the plan has no `out`: unique for every image of a plan.
pub const DEFAULT_TEMPLATE: &str = "{job}-{index}-{seed}.png";

/// Every placeholder and what it becomes (shown by `easel batch --help` and the README).
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "job",
        "the job's name, else its number in the plan (1, 2, ...)",
    ),
    ("index", "the image's number within its job, from 0"),
    (
        "cell",
        "the prompt-matrix or grid cell, from 0 (0 in other jobs)",
    ),
    ("seed", "the image's seed"),
    ("preset", "the job's presets joined with +, or none"),
    (
        "model",
        "the model's folder name, or its file name without .safetensors",
    ),
    (
        "date",
        "YYYY-MM-DD: the day the plan first ran into this output folder",
    ),
    ("prompt", "the prompt's first 48 characters, file-safe"),
    ("hash", "the first 12 hex digits of the image's recipe hash"),
];

const PROMPT_CHARS: usize = 48;
const MAX_VALUE_CHARS: usize = 96;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Job,
    Index,
    Cell,
    Seed,
    Preset,
    Model,
    Date,
    Prompt,
    Hash,
}

impl Field {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "job" => Self::Job,
            "index" => Self::Index,
            "cell" => Self::Cell,
            "seed" => Self::Seed,
            "preset" => Self::Preset,
            "model" => Self::Model,
            "date" => Self::Date,
            "prompt" => Self::Prompt,
            "hash" => Self::Hash,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// What one image fills a template with.
#[derive(Debug, Clone, Default)]
pub struct Values<'a> {
    pub job: &'a str,
    pub index: usize,
    pub cell: usize,
    pub seed: u64,
    pub preset: &'a str,
    pub model: &'a str,
    pub date: &'a str,
    pub prompt: &'a str,
    pub hash: &'a str,
}

impl Template {
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let field = Field::from_name(name.trim()).ok_or_else(|| {
                        format!(
                            "out = {source:?}: unknown placeholder {{{name}}}; use {} ({{{{ and }}}} for literal braces)",
                            PLACEHOLDERS
                                .iter()
                                .map(|(n, _)| format!("{{{n}}}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => {
                    return Err(format!(
                        "out = {source:?}: a lone }} (write }}}} for a literal one)"
                    ))
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let template = Self {
            source: source.to_string(),
            parts,
        };
        template.check_shape()?;
        Ok(template)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn uses(&self, field: Field) -> bool {
        self.parts.contains(&Part::Field(field))
    }

    /// The template's own text must keep names inside the output folder and end in .png.
    fn check_shape(&self) -> Result<(), String> {
        let sample = self.fill(&Values {
            job: "x",
            preset: "x",
            model: "x",
            date: "x",
            prompt: "x",
            hash: "x",
            ..Values::default()
        });
        let bad = |why: &str| Err(format!("out = {:?} {why}", self.source));
        if !sample.to_ascii_lowercase().ends_with(".png") {
            return bad("must end in .png: easel writes PNG files");
        }
        if sample.contains('\\') {
            return bad("uses \\: separate folders with /");
        }
        let path = Path::new(&sample);
        for component in path.components() {
            match component {
                Component::Normal(name) if !name.to_string_lossy().starts_with('.') => {}
                Component::Normal(_) => {
                    return bad("names a hidden file or folder (a part starting with .)")
                }
                Component::ParentDir => {
                    return bad(
                        "climbs out of the output folder with ..: names stay inside --out \
                         (choose the folder with --out)",
                    )
                }
                Component::RootDir | Component::Prefix(_) => {
                    return bad("is absolute: it names files inside --out, so start it without /")
                }
                Component::CurDir => return bad("holds a ./ part: leave it out"),
            }
        }
        if sample.contains("//") || sample.ends_with('/') {
            return bad("has an empty folder name (//)");
        }
        Ok(())
    }

    fn fill(&self, v: &Values) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&match f {
                    Field::Job => safe(v.job),
                    Field::Index => v.index.to_string(),
                    Field::Cell => v.cell.to_string(),
                    Field::Seed => v.seed.to_string(),
                    Field::Preset => safe(v.preset),
                    Field::Model => safe(v.model),
                    Field::Date => safe(v.date),
                    Field::Prompt => safe(&v.prompt.chars().take(PROMPT_CHARS).collect::<String>()),
                    Field::Hash => safe(&v.hash.chars().take(12).collect::<String>()),
                }),
            }
        }
        out
    }

    /// The image's path relative to the output folder, `/`-separated.
    pub fn render(&self, v: &Values) -> String {
        self.fill(v)
    }
}

/// A value as a file-name part: letters, digits and `-_.+=` kept, spaces as `-`, anything
/// else `_`; never empty, never starting with a dot, never a path.
pub fn safe(value: &str) -> String {
    let mut out = String::new();
    for c in value.trim().chars().take(MAX_VALUE_CHARS) {
        let keep = if c.is_ascii_alphanumeric() || "-_.+=".contains(c) {
            c
        } else if c.is_whitespace() {
            '-'
        } else {
            '_'
        };
        out.push(keep);
    }
    let out = out.trim_start_matches('.').to_string();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            job: "fox",
            index: 2,
            cell: 1,
            seed: 42,
            preset: "anime+watercolor",
            model: "sd15",
            date: "2026-11-28",
            prompt: "a red fox, in the snow: at dusk / night",
            hash: "0123456789abcdef",
        }
    }

    #[test]
    fn every_placeholder_fills() {
        let t = Template::parse(
            "{preset}/{date}/{model}/{job}-{index}-{cell}-{seed}-{hash}-{prompt}.png",
        )
        .unwrap();
        assert_eq!(
            t.render(&values()),
            "anime+watercolor/2026-11-28/sd15/fox-2-1-42-0123456789ab-a-red-fox_-in-the-snow_-at-dusk-_-night.png"
        );
        for (name, _) in PLACEHOLDERS {
            assert!(Field::from_name(name).is_some(), "{name}");
        }
        assert!(t.uses(Field::Date) && !Template::parse("{seed}.png").unwrap().uses(Field::Date));
        assert_eq!(
            Template::parse("{{x}}-{seed}.png")
                .unwrap()
                .render(&values()),
            "{x}-42.png"
        );
        assert_eq!(
            Template::parse(DEFAULT_TEMPLATE).unwrap().render(&values()),
            "fox-2-42.png"
        );
    }

    #[test]
    fn values_cannot_escape_or_hide() {
        let t = Template::parse("{job}/{model}.png").unwrap();
        let v = Values {
            job: "../../etc",
            model: "..",
            ..values()
        };
        let path = t.render(&v);
        assert_eq!(path, "_.._etc/_.png");
        assert!(Path::new(&path)
            .components()
            .all(|c| matches!(c, Component::Normal(_))));
        assert_eq!(safe(""), "_");
        assert_eq!(safe(".hidden"), "hidden");
    }

    #[test]
    fn templates_that_would_escape_are_refused() {
        for (bad, why) in [
            ("../{seed}.png", ".."),
            ("/tmp/{seed}.png", "absolute"),
            ("a/../../{seed}.png", ".."),
            ("{seed}.jpg", ".png"),
            ("{seed}", ".png"),
            ("a\\{seed}.png", "\\"),
            (".cache/{seed}.png", "hidden"),
            ("./{seed}.png", "./"),
            ("a//{seed}.png", "empty folder"),
            ("{colour}.png", "unknown placeholder {colour}"),
            ("{seed.png", "unknown placeholder"),
            ("x}.png", "lone }"),
        ] {
            let err = Template::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
