//! X/Y grids: `--grid-x cfg=4,7,10 --grid-y sampler=euler_a,ddim` renders one cell per pair of
//! values. Values are separated by commas; a value holding a comma is written in double quotes
//! (`prompt="a fox, at dusk","a cat"`). `prompt_sr` is AUTOMATIC1111's Prompt S/R: the first
//! value is searched for in the prompt (and negative prompt) and each cell replaces it with its
//! own value, the first cell keeping the prompt as it is.
use crate::engine::schedulers::SamplerKind;
use crate::recipe::{self, RecipePatch};
use std::str::FromStr;

pub const FIELDS: &str =
    "steps, cfg, seed, sampler, width, height, size, prompt, prompt_sr, negative_prompt, model";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GridError {
    #[error("a grid axis is FIELD=VALUE,VALUE,... (such as cfg=4,7,10), got {0:?}")]
    Syntax(String),
    #[error("unknown grid field {0:?}: choose one of {FIELDS}")]
    Field(String),
    #[error("grid {field}: {message}")]
    Value {
        field: &'static str,
        message: String,
    },
    #[error("grid prompt_sr: {0:?} occurs in neither the prompt nor the negative prompt, so there is nothing to replace")]
    NotFound(String),
    #[error("--grid-x and --grid-y both vary {0}: give two different fields")]
    SameField(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridField {
    Steps,
    Cfg,
    Seed,
    Sampler,
    Width,
    Height,
    Size,
    Prompt,
    PromptSr,
    NegativePrompt,
    Model,
}

impl GridField {
    pub fn name(self) -> &'static str {
        match self {
            Self::Steps => "steps",
            Self::Cfg => "cfg",
            Self::Seed => "seed",
            Self::Sampler => "sampler",
            Self::Width => "width",
            Self::Height => "height",
            Self::Size => "size",
            Self::Prompt => "prompt",
            Self::PromptSr => "prompt_sr",
            Self::NegativePrompt => "negative_prompt",
            Self::Model => "model",
        }
    }
}

impl FromStr for GridField {
    type Err = GridError;

    fn from_str(s: &str) -> Result<Self, GridError> {
        let key = s.trim().to_lowercase().replace('-', "_");
        Ok(match key.as_str() {
            "steps" => Self::Steps,
            "cfg" | "cfg_scale" | "guidance" => Self::Cfg,
            "seed" => Self::Seed,
            "sampler" => Self::Sampler,
            "width" | "w" => Self::Width,
            "height" | "h" => Self::Height,
            "size" => Self::Size,
            "prompt" => Self::Prompt,
            "prompt_sr" | "sr" => Self::PromptSr,
            "negative_prompt" | "negative" | "neg" => Self::NegativePrompt,
            "model" => Self::Model,
            _ => return Err(GridError::Field(s.to_string())),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum GridValue {
    Steps(usize),
    Cfg(f64),
    Seed(u64),
    Sampler(SamplerKind),
    Width(u32),
    Height(u32),
    Size(u32, u32),
    Prompt(String),
    /// Replace `search` with `replace`.
    PromptSr {
        search: String,
        replace: String,
    },
    NegativePrompt(String),
    Model(String),
}

impl GridValue {
    /// Sets this value in a cell's patch.
    pub fn apply(&self, patch: &mut RecipePatch) -> Result<(), GridError> {
        match self {
            Self::Steps(v) => patch.steps = Some(*v),
            Self::Cfg(v) => patch.cfg = Some(*v),
            Self::Seed(v) => patch.seed = Some(*v),
            Self::Sampler(v) => patch.sampler = Some(*v),
            Self::Width(v) => patch.width = Some(*v),
            Self::Height(v) => patch.height = Some(*v),
            Self::Size(w, h) => {
                patch.width = Some(*w);
                patch.height = Some(*h);
            }
            Self::Prompt(v) => patch.prompt = Some(v.clone()),
            Self::NegativePrompt(v) => patch.negative_prompt = Some(v.clone()),
            Self::Model(v) => patch.model = Some(v.clone()),
            Self::PromptSr { search, replace } => {
                let found = [&patch.prompt, &patch.negative_prompt]
                    .iter()
                    .any(|t| t.as_deref().is_some_and(|t| t.contains(search.as_str())));
                if !found {
                    return Err(GridError::NotFound(search.clone()));
                }
                for text in [&mut patch.prompt, &mut patch.negative_prompt]
                    .into_iter()
                    .flatten()
                {
                    *text = text.replace(search.as_str(), replace);
                }
            }
        }
        Ok(())
    }
}

/// One axis: a field, its values, and the label each value gets on the contact sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct GridAxis {
    pub field: GridField,
    pub values: Vec<GridValue>,
    pub labels: Vec<String>,
}

impl FromStr for GridAxis {
    type Err = GridError;

    fn from_str(s: &str) -> Result<Self, GridError> {
        let (field, list) = s
            .split_once('=')
            .ok_or_else(|| GridError::Syntax(s.to_string()))?;
        let field: GridField = field.parse()?;
        let raw = split_values(list).map_err(|m| value_err(field, m))?;
        if raw.is_empty() || raw.iter().all(|v| v.is_empty()) {
            return Err(GridError::Syntax(s.to_string()));
        }
        let mut values = Vec::with_capacity(raw.len());
        let mut labels = Vec::with_capacity(raw.len());
        for text in &raw {
            let value = parse_value(field, text, &raw[0])?;
            labels.push(label(field, text));
            values.push(value);
        }
        Ok(Self {
            field,
            values,
            labels,
        })
    }
}

fn value_err(field: GridField, message: impl Into<String>) -> GridError {
    GridError::Value {
        field: field.name(),
        message: message.into(),
    }
}

fn label(field: GridField, text: &str) -> String {
    match field {
        GridField::Prompt | GridField::PromptSr | GridField::NegativePrompt => text.to_string(),
        GridField::Model => {
            let t = text.trim_end_matches(['/', '\\']);
            let name = std::path::Path::new(t)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| t.to_string());
            format!("model: {name}")
        }
        _ => format!("{}: {}", field.name(), text),
    }
}

fn parse_value(field: GridField, text: &str, first: &str) -> Result<GridValue, GridError> {
    let bad = |what: &str| value_err(field, format!("{text:?} is not {what}"));
    let number = |what: &str| -> Result<u64, GridError> { text.parse().map_err(|_| bad(what)) };
    let side = |name: &'static str, t: &str| -> Result<u32, GridError> {
        let v: u32 = t.parse().map_err(|_| bad("a size in pixels"))?;
        recipe::check_side(name, v).map_err(|e| value_err(field, e.to_string()))?;
        Ok(v)
    };
    Ok(match field {
        GridField::Steps => {
            let v = number("a whole number of steps")? as usize;
            recipe::check_steps(v).map_err(|e| value_err(field, e.to_string()))?;
            GridValue::Steps(v)
        }
        GridField::Cfg => {
            let v: f64 = text.parse().map_err(|_| bad("a number"))?;
            recipe::check_cfg(v).map_err(|e| value_err(field, e.to_string()))?;
            GridValue::Cfg(v)
        }
        GridField::Seed => GridValue::Seed(number("a seed (a whole number)")?),
        GridField::Sampler => GridValue::Sampler(
            text.parse()
                .map_err(|e: crate::engine::EngineError| value_err(field, e.to_string()))?,
        ),
        GridField::Width => GridValue::Width(side("width", text)?),
        GridField::Height => GridValue::Height(side("height", text)?),
        GridField::Size => {
            let (w, h) = text.split_once('x').ok_or_else(|| bad("WIDTHxHEIGHT"))?;
            GridValue::Size(side("width", w)?, side("height", h)?)
        }
        GridField::Prompt => GridValue::Prompt(text.to_string()),
        GridField::NegativePrompt => GridValue::NegativePrompt(text.to_string()),
        GridField::PromptSr => {
            if first.is_empty() {
                return Err(value_err(
                    field,
                    "the first value (the text to replace) is empty",
                ));
            }
            GridValue::PromptSr {
                search: first.to_string(),
                replace: text.to_string(),
            }
        }
        GridField::Model => {
            if text.is_empty() {
                return Err(bad("a model folder"));
            }
            GridValue::Model(text.to_string())
        }
    })
}

/// Comma-separated values, trimmed; double quotes group a value holding commas (`""` inside
/// quotes is a quote).
pub fn split_values(list: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut chars = list.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        value.push('"');
                    }
                    Some('"') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("a quote is not closed in {list:?}")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.next() {
                None => {
                    values.push(value);
                    return Ok(values);
                }
                Some(',') => values.push(value),
                Some(c) => {
                    return Err(format!("unexpected {c:?} after a quoted value in {list:?}"))
                }
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some(c) => value.push(c),
                    None => {
                        values.push(value.trim().to_string());
                        return Ok(values);
                    }
                }
            }
            values.push(value.trim().to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(s: &str) -> GridAxis {
        s.parse().unwrap()
    }

    #[test]
    fn parses_fields_values_and_labels() {
        let a = axis("cfg=4, 7.5,10");
        assert_eq!(a.field, GridField::Cfg);
        assert_eq!(
            a.values,
            vec![
                GridValue::Cfg(4.0),
                GridValue::Cfg(7.5),
                GridValue::Cfg(10.0)
            ]
        );
        assert_eq!(a.labels, ["cfg: 4", "cfg: 7.5", "cfg: 10"]);
        let a = axis("sampler=euler_a,Euler,ddim");
        assert_eq!(a.values[1], GridValue::Sampler(SamplerKind::Euler));
        let a = axis(r#"prompt="a fox, at dusk", "say ""hi""",cat"#);
        assert_eq!(a.labels, ["a fox, at dusk", "say \"hi\"", "cat"]);
        assert_eq!(axis("size=64x32").values, vec![GridValue::Size(64, 32)]);
        assert_eq!(axis("model=models/sd15/").labels, ["model: sd15"]);
        assert_eq!(axis("Negative-Prompt=a,b").field, GridField::NegativePrompt);
    }

    #[test]
    fn refuses_bad_axes_with_reasons() {
        let err = |s: &str| s.parse::<GridAxis>().unwrap_err().to_string();
        assert!(err("cfg").contains("FIELD=VALUE"));
        assert!(err("colour=1,2").contains("choose one of steps, cfg"));
        assert!(err("steps=4,x").contains("\"x\" is not a whole number"));
        assert!(err("steps=4,0").contains("steps must be between 1 and 1000"));
        assert!(err("cfg=nan").contains("cfg must be a finite number"));
        assert!(err("sampler=euler,dpm9").contains("unknown sampler \"dpm9\""));
        assert!(err("width=0").contains("width must be between"));
        assert!(err("size=64").contains("WIDTHxHEIGHT"));
        assert!(err("prompt=\"open").contains("not closed"));
        assert!(err("seed=").contains("FIELD=VALUE"));
    }

    #[test]
    fn prompt_search_and_replace() {
        let a = axis("prompt_sr=fox,owl,cat");
        let mut patch = RecipePatch {
            prompt: Some("a fox, fox tail".into()),
            negative_prompt: Some("no fox".into()),
            ..Default::default()
        };
        let base = patch.clone();
        a.values[0].apply(&mut patch).unwrap();
        assert_eq!(patch, base);
        a.values[1].apply(&mut patch).unwrap();
        assert_eq!(patch.prompt.as_deref(), Some("a owl, owl tail"));
        assert_eq!(patch.negative_prompt.as_deref(), Some("no owl"));
        let mut other = RecipePatch {
            prompt: Some("a dog".into()),
            ..Default::default()
        };
        assert_eq!(
            a.values[2].apply(&mut other),
            Err(GridError::NotFound("fox".into()))
        );
    }
}
