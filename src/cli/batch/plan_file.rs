//! The plan file (TOML): `out` (the file name template), `[defaults]` and `[[jobs]]`, each a
//! set of recipe fields, presets, seeds and a variation. Every key is checked where it is read,
//! so a typo is an error that names the key, the job and the line, never a silent default.
use super::seeds::SeedSpec;
use crate::cli::generate::parse_lora;
use crate::cli::plan::Variation;
use crate::engine::schedulers::config::TimestepSpacing;
use crate::engine::schedulers::{SamplerChoice, Schedule};
use crate::presets::file::line_col;
use crate::recipe::{self, RecipeLora, RecipePatch};
use crate::variations::grid::GridAxis;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::{Spanned, Value};

type Fields = BTreeMap<Spanned<String>, Spanned<Value>>;

/// Recipe fields, as `easel generate`'s flags and presets name them.
pub const RECIPE_KEYS: &[&str] = &[
    "model",
    "prompt",
    "negative_prompt",
    "sampler",
    "schedule",
    "timestep_spacing",
    "steps",
    "cfg",
    "seed",
    "width",
    "height",
    "clip_skip",
    "guidance_rescale",
    "init_image",
    "strength",
    "mask",
    "mask_blur",
    "keep_unmasked",
    "loras",
];

/// What a plan adds to recipe fields, in `[defaults]` and in jobs.
pub const PLAN_KEYS: &[&str] = &[
    "preset",
    "seeds",
    "count",
    "prompt_matrix",
    "grid_x",
    "grid_y",
    "vary_seed",
];

/// Most images one job's seed list may ask for; more is a typo more likely than a plan.
pub const MAX_SEEDS: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {place}{message}")]
pub struct PlanError {
    pub file: String,
    pub line: usize,
    /// "job 2: ", "[defaults]: " or empty.
    pub place: String,
    pub message: String,
}

/// Where a section sits in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Defaults,
    /// 1-based, in file order.
    Job(usize),
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Defaults => f.write_str("[defaults]"),
            Self::Job(n) => write!(f, "job {n}"),
        }
    }
}

/// `[defaults]` or one job, read and checked.
#[derive(Debug, Clone)]
pub struct Section {
    pub place: Place,
    /// Where the section starts (1-based).
    pub line: usize,
    pub name: Option<String>,
    pub patch: RecipePatch,
    pub loras: Option<Vec<RecipeLora>>,
    pub presets: Option<Vec<String>>,
    pub seeds: Option<SeedSpec>,
    pub variation: Option<Variation>,
    pub vary_seed: Option<bool>,
    /// The section's keys and values without `count`, as JSON: what the job is, so its
    /// recorded random seeds stay its own when other jobs are added or `count` changes.
    pub identity: String,
}

#[derive(Debug, Clone)]
pub struct PlanFile {
    /// The output file name template and its line.
    pub out: Option<(String, usize)>,
    pub defaults: Section,
    pub jobs: Vec<Section>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    out: Option<Spanned<String>>,
    defaults: Option<Spanned<Fields>>,
    #[serde(default)]
    jobs: Vec<Spanned<Fields>>,
}

/// Parses a plan; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<PlanFile, PlanError> {
    let at = |span: Option<Range<usize>>, place: String, message: String| PlanError {
        file: file.to_string(),
        line: line_col(text, span.map_or(0, |s| s.start)).0,
        place,
        message,
    };
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let mut message = e.message().trim_end().to_string();
        if message.contains("unknown field") {
            message.push_str(
                " at the top level: a plan holds `out = \"...\"`, a [defaults] table and \
                 [[jobs]] tables; recipe fields go inside those tables",
            );
        } else {
            message.push_str(" (fix the plan there; `easel batch --help` shows the format)");
        }
        at(e.span(), String::new(), message)
    })?;
    let reader = Reader { text, file };
    let defaults = match &raw.defaults {
        Some(d) => reader.section(d.get_ref(), d.span(), Place::Defaults)?,
        None => reader.section(&Fields::new(), 0..0, Place::Defaults)?,
    };
    let jobs = raw
        .jobs
        .iter()
        .enumerate()
        .map(|(i, j)| reader.section(j.get_ref(), j.span(), Place::Job(i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    if jobs.is_empty() {
        return Err(at(
            None,
            String::new(),
            "the plan has no [[jobs]]: add at least one, such as\n  [[jobs]]\n  prompt = \"a lighthouse at dusk\"\n  seeds = [1, 2, 3]".into(),
        ));
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for job in &jobs {
        if let Some(name) = &job.name {
            if let Some(first) = names.insert(name, job.line) {
                return Err(PlanError {
                    file: file.to_string(),
                    line: job.line,
                    place: format!("{}: ", job.place),
                    message: format!(
                        "the name {name:?} is already used by the job on line {first}: give each job its own name"
                    ),
                });
            }
        }
    }
    Ok(PlanFile {
        out: raw
            .out
            .map(|o| (o.get_ref().clone(), line_col(text, o.span().start).0)),
        defaults,
        jobs,
    })
}

struct Reader<'a> {
    text: &'a str,
    file: &'a str,
}

impl Reader<'_> {
    fn error(&self, span: Range<usize>, place: Place, message: String) -> PlanError {
        PlanError {
            file: self.file.to_string(),
            line: line_col(self.text, span.start).0,
            place: format!("{place}: "),
            message,
        }
    }

    fn section(
        &self,
        fields: &Fields,
        span: Range<usize>,
        place: Place,
    ) -> Result<Section, PlanError> {
        let mut s = Section {
            place,
            line: line_col(self.text, span.start).0,
            name: None,
            patch: RecipePatch::default(),
            loras: None,
            presets: None,
            seeds: None,
            variation: None,
            vary_seed: None,
            identity: String::new(),
        };
        // In file order, so the first mistake reported is the first one written.
        let mut entries: Vec<_> = fields.iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        let mut sampler: Option<(Range<usize>, SamplerChoice)> = None;
        let mut grid: (Option<GridAxis>, Option<GridAxis>) = (None, None);
        let mut matrix: Option<bool> = None;
        let mut seed_keys: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let k = key.get_ref().as_str();
            let fail = |message: String| self.error(value.span(), place, message);
            let v = Value::clone(value.get_ref());
            let p = &mut s.patch;
            match k {
                "model" => p.model = Some(non_empty(k, v).map_err(fail)?),
                "prompt" => p.prompt = Some(text(k, v).map_err(fail)?),
                "negative_prompt" => p.negative_prompt = Some(text(k, v).map_err(fail)?),
                "sampler" => {
                    let name = text(k, v).map_err(fail)?;
                    let choice: SamplerChoice = name
                        .parse()
                        .map_err(|e: crate::engine::EngineError| fail(e.to_string()))?;
                    sampler = Some((value.span(), choice));
                }
                "schedule" => {
                    let name = text(k, v).map_err(fail)?;
                    let schedule: Schedule = name
                        .parse()
                        .map_err(|e: crate::engine::EngineError| fail(e.to_string()))?;
                    p.schedule = Some(schedule);
                }
                "timestep_spacing" => {
                    let name = text(k, v).map_err(fail)?;
                    p.timestep_spacing = Some(name.parse::<TimestepSpacing>().map_err(fail)?);
                }
                "steps" => {
                    let steps = whole::<usize>(k, v).map_err(fail)?;
                    recipe::check_steps(steps).map_err(|e| fail(e.to_string()))?;
                    p.steps = Some(steps);
                }
                "cfg" => {
                    let cfg = number(k, v).map_err(fail)?;
                    recipe::check_cfg(cfg).map_err(|e| fail(e.to_string()))?;
                    p.cfg = Some(cfg);
                }
                "seed" => {
                    p.seed = Some(whole::<u64>(k, v).map_err(fail)?);
                    seed_keys.push(k);
                }
                "width" | "height" => {
                    let side = whole::<u32>(k, v).map_err(fail)?;
                    let name = if k == "width" { "width" } else { "height" };
                    recipe::check_side(name, side).map_err(|e| fail(e.to_string()))?;
                    if k == "width" {
                        p.width = Some(side);
                    } else {
                        p.height = Some(side);
                    }
                }
                "clip_skip" => {
                    let skip = whole::<u32>(k, v).map_err(fail)?;
                    if skip == 0 {
                        return Err(fail(
                            "clip_skip must be 1 or more (1 uses the text encoder's last layer)"
                                .into(),
                        ));
                    }
                    p.clip_skip = Some(skip);
                }
                "guidance_rescale" => {
                    let r = number(k, v).map_err(fail)?;
                    recipe::check_guidance_rescale(r).map_err(|e| fail(e.to_string()))?;
                    p.guidance_rescale = Some(r);
                }
                "init_image" => p.init_image = Some(non_empty(k, v).map_err(fail)?),
                "mask" => p.mask = Some(non_empty(k, v).map_err(fail)?),
                "strength" => {
                    let st = number(k, v).map_err(fail)?;
                    recipe::check_strength(st).map_err(|e| fail(e.to_string()))?;
                    p.strength = Some(st);
                }
                "mask_blur" => {
                    let blur = whole::<u32>(k, v).map_err(fail)?;
                    recipe::check_mask_blur(blur).map_err(|e| fail(e.to_string()))?;
                    p.mask_blur = Some(blur);
                }
                "keep_unmasked" => p.keep_unmasked = Some(flag(k, v).map_err(fail)?),
                "loras" => s.loras = Some(loras(v).map_err(fail)?),
                "preset" => s.presets = Some(presets(v).map_err(fail)?),
                "seeds" => {
                    s.seeds = Some(SeedSpec::from_toml(&v, MAX_SEEDS).map_err(fail)?);
                    seed_keys.push(k);
                }
                "count" => {
                    let n = whole::<u32>(k, v).map_err(fail)?;
                    if n == 0 || n as usize > MAX_SEEDS {
                        return Err(fail(format!(
                            "count must be between 1 and {MAX_SEEDS}, got {n}"
                        )));
                    }
                    s.seeds = Some(SeedSpec::Random(n));
                    seed_keys.push(k);
                }
                "prompt_matrix" => matrix = Some(flag(k, v).map_err(fail)?),
                "grid_x" | "grid_y" => {
                    let spec = text(k, v).map_err(fail)?;
                    let axis: GridAxis =
                        spec.parse()
                            .map_err(|e: crate::variations::grid::GridError| {
                                fail(format!("{k}: {e}"))
                            })?;
                    if k == "grid_x" {
                        grid.0 = Some(axis);
                    } else {
                        grid.1 = Some(axis);
                    }
                }
                "vary_seed" => s.vary_seed = Some(flag(k, v).map_err(fail)?),
                "name" if matches!(place, Place::Job(_)) => {
                    s.name = Some(non_empty(k, v).map_err(fail)?)
                }
                _ => {
                    return Err(self.error(key.span(), place, unknown_key(k, place)));
                }
            }
        }
        if seed_keys.len() > 1 {
            return Err(self.error(
                span.clone(),
                place,
                format!(
                    "{} are given together: use one of seed = N, seeds = [..] or \"A..B\", count = N",
                    seed_keys.join(" and ")
                ),
            ));
        }
        if let Some((sampler_span, choice)) = sampler {
            let schedule = choice
                .schedule_with(s.patch.schedule)
                .map_err(|e| self.error(sampler_span, place, e.to_string()))?;
            s.patch.sampler = Some(choice.kind);
            if s.patch.schedule.is_some() || choice.schedule.is_some() {
                s.patch.schedule = Some(schedule);
            }
        }
        s.variation = match (matrix, grid) {
            (Some(true), (None, None)) => Some(Variation::Matrix),
            (Some(true), _) => {
                return Err(self.error(
                    span,
                    place,
                    "prompt_matrix and grid_x/grid_y are given together: a job is a prompt \
                     matrix or a grid, not both (split it into two jobs)"
                        .into(),
                ))
            }
            (_, (None, None)) => matrix.map(|_| Variation::Sweep),
            (_, (x, y)) => Some(Variation::Grid { x, y }),
        };
        let identity: BTreeMap<&str, &Value> = fields
            .iter()
            .filter(|(k, _)| k.get_ref() != "count")
            .map(|(k, v)| (k.get_ref().as_str(), v.get_ref()))
            .collect();
        s.identity = serde_json::to_string(&identity).unwrap_or_default();
        Ok(s)
    }
}

fn unknown_key(key: &str, place: Place) -> String {
    let mut known: Vec<&str> = RECIPE_KEYS.iter().chain(PLAN_KEYS).copied().collect();
    if matches!(place, Place::Job(_)) {
        known.push("name");
    }
    let hint = known
        .iter()
        .filter(|k| strsim::levenshtein(k, &key.to_lowercase()) <= 2)
        .min_by_key(|k| strsim::levenshtein(k, &key.to_lowercase()))
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    let extra = match (key, place) {
        ("out", _) => " (`out` goes at the top of the plan, before any table)".to_string(),
        ("name", Place::Defaults) => " (only jobs have names)".to_string(),
        ("batch" | "batch_size", _) => {
            " (a plan sets images with seeds = [..], seeds = \"A..B\" or count = N)".to_string()
        }
        _ => String::new(),
    };
    format!(
        "unknown key `{key}`{hint}{extra}; known keys: {}",
        known.join(", ")
    )
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "text",
        Value::Integer(_) => "a whole number",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

fn text(key: &str, v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(format!(
            "{key} must be text in quotes, got {}",
            kind(&other)
        )),
    }
}

fn non_empty(key: &str, v: Value) -> Result<String, String> {
    let s = text(key, v)?;
    if s.trim().is_empty() {
        return Err(format!(
            "{key} is empty: give a value or leave the line out"
        ));
    }
    Ok(s)
}

fn whole<T: TryFrom<i64>>(key: &str, v: Value) -> Result<T, String> {
    match v {
        Value::Integer(i) => T::try_from(i).map_err(|_| format!("{key} = {i} is out of range")),
        other => Err(format!(
            "{key} must be a whole number, got {}",
            kind(&other)
        )),
    }
}

fn number(key: &str, v: Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(f),
        Value::Integer(i) => Ok(i as f64),
        other => Err(format!("{key} must be a number, got {}", kind(&other))),
    }
}

fn flag(key: &str, v: Value) -> Result<bool, String> {
    match v {
        Value::Boolean(b) => Ok(b),
        other => Err(format!("{key} must be true or false, got {}", kind(&other))),
    }
}

/// `["a.safetensors:0.5", ...]` or `[{ path = "a.safetensors", weight = 0.5 }, ...]`.
fn loras(v: Value) -> Result<Vec<RecipeLora>, String> {
    let Value::Array(items) = v else {
        return Err(format!(
            "loras must be a list such as [\"style.safetensors:0.8\"], got {}",
            kind(&v)
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => parse_lora(&s),
            Value::Table(mut t) => {
                let path = t
                    .remove("path")
                    .ok_or("a LoRA table needs path = \"FILE.safetensors\"")?;
                let path = non_empty("path", path)?;
                let weight = match t.remove("weight") {
                    Some(w) => number("weight", w)?,
                    None => 1.0,
                };
                if let Some(extra) = t.keys().next() {
                    return Err(format!(
                        "unknown key `{extra}` in a LoRA: it takes path and weight"
                    ));
                }
                if !weight.is_finite() {
                    return Err("a LoRA weight must be a finite number".into());
                }
                Ok(RecipeLora { path, weight })
            }
            other => Err(format!(
                "each LoRA is \"PATH:WEIGHT\" or {{ path = ..., weight = ... }}, got {}",
                kind(&other)
            )),
        })
        .collect()
}

/// `"name"` or `["a", "b"]` (stacked, later ones winning).
fn presets(v: Value) -> Result<Vec<String>, String> {
    let names = match v {
        Value::String(s) => vec![s],
        Value::Array(items) => items
            .into_iter()
            .map(|i| text("preset", i))
            .collect::<Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "preset must be a name or a list of names, got {}",
                kind(&other)
            ))
        }
    };
    for name in &names {
        crate::presets::check_name(name).map_err(|e| e.to_string())?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    fn parse_ok(text: &str) -> PlanFile {
        parse(text, "plan.toml").unwrap()
    }

    fn parse_err(text: &str) -> PlanError {
        parse(text, "plan.toml").unwrap_err()
    }

    #[test]
    fn the_issue_example_reads() {
        let plan = parse_ok(
            r#"
out = "{preset}/{date}/{seed}-{index}.png"
[defaults]
model = "path/or/name"
steps = 20
[[jobs]]
prompt = "a lighthouse at dusk"
seeds = [1, 2, 3]
[[jobs]]
preset = "watercolor"
prompt = "a fox in the snow"
seeds = "10..14"
"#,
        );
        assert_eq!(
            plan.out,
            Some(("{preset}/{date}/{seed}-{index}.png".into(), 2))
        );
        assert_eq!(plan.defaults.patch.model.as_deref(), Some("path/or/name"));
        assert_eq!(plan.defaults.patch.steps, Some(20));
        assert_eq!(plan.jobs.len(), 2);
        assert_eq!(plan.jobs[0].seeds, Some(SeedSpec::List(vec![1, 2, 3])));
        assert_eq!(plan.jobs[0].line, 6);
        assert_eq!(plan.jobs[1].presets, Some(vec!["watercolor".to_string()]));
        assert_eq!(
            plan.jobs[1].seeds,
            Some(SeedSpec::List(vec![10, 11, 12, 13]))
        );
        assert_eq!(plan.jobs[1].place, Place::Job(2));
    }

    #[test]
    fn every_recipe_field_and_variation_reads() {
        let plan = parse_ok(
            r#"
[[jobs]]
name = "fox"
model = "m"
prompt = "a fox"
negative_prompt = "blur"
sampler = "DPM++ 2M Karras"
timestep_spacing = "trailing"
steps = 3
cfg = 4
width = 64
height = 32
clip_skip = 2
guidance_rescale = 0.5
init_image = "in.png"
strength = 0.5
mask = "m.png"
mask_blur = 0
keep_unmasked = true
loras = ["a.safetensors:0.5", { path = "b.safetensors" }]
preset = ["anime", "watercolor"]
count = 3
grid_x = "cfg=4,7"
vary_seed = true
"#,
        );
        let j = &plan.jobs[0];
        let p = &j.patch;
        assert_eq!(j.name.as_deref(), Some("fox"));
        assert_eq!(
            (p.sampler, p.schedule),
            (Some(SamplerKind::DpmPP2M), Some(Schedule::Karras))
        );
        assert_eq!(p.timestep_spacing, Some(TimestepSpacing::Trailing));
        assert_eq!(
            (p.steps, p.cfg, p.width, p.height),
            (Some(3), Some(4.0), Some(64), Some(32))
        );
        assert_eq!((p.clip_skip, p.guidance_rescale), (Some(2), Some(0.5)));
        assert_eq!(p.init().unwrap().mask.as_deref(), Some("m.png"));
        assert_eq!(p.keep_unmasked, Some(true));
        let loras = j.loras.as_ref().unwrap();
        assert_eq!((loras[0].weight, loras[1].weight), (0.5, 1.0));
        assert_eq!(j.presets.as_ref().unwrap().len(), 2);
        assert_eq!(j.seeds, Some(SeedSpec::Random(3)));
        assert!(matches!(
            j.variation,
            Some(Variation::Grid {
                x: Some(_),
                y: None
            })
        ));
        assert_eq!(j.vary_seed, Some(true));
        assert!(!j.identity.contains("count"), "{}", j.identity);
        assert!(j.identity.contains("\"fox\""), "{}", j.identity);
    }

    #[test]
    fn unknown_keys_name_the_key_the_job_and_the_line() {
        let e = parse_err("[[jobs]]\nprompt = \"a\"\n\n[[jobs]]\nprompt = \"b\"\nstpes = 3\n");
        assert_eq!((e.line, e.place.as_str()), (6, "job 2: "));
        let msg = e.to_string();
        assert!(
            msg.starts_with("plan.toml:6: job 2: unknown key `stpes`"),
            "{msg}"
        );
        assert!(msg.contains("did you mean `steps`"), "{msg}");
        let e = parse_err("[defaults]\nname = \"x\"\n[[jobs]]\nprompt = \"a\"\n");
        assert_eq!((e.line, e.place.as_str()), (2, "[defaults]: "));
        assert!(e.message.contains("only jobs have names"), "{e}");
        let e = parse_err("model = \"m\"\n[[jobs]]\nprompt = \"a\"\n");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("unknown field `model`"), "{e}");
        assert!(e.message.contains("[defaults]"), "{e}");
    }

    #[test]
    fn bad_values_say_why_and_where() {
        let cases = [
            ("steps = 0", "steps must be between 1 and 1000"),
            ("steps = \"ten\"", "steps must be a whole number, got text"),
            ("cfg = -1", "cfg must be a finite number"),
            ("width = 0", "width must be between 1"),
            ("sampler = \"dpm9\"", "unknown sampler"),
            (
                "sampler = \"DPM++ 2M Karras\"\nschedule = \"beta\"",
                "implies the karras",
            ),
            ("seeds = \"5..5\"", "empty"),
            ("seeds = [1, -2]", "seeds"),
            ("count = 0", "count must be between 1"),
            ("seed = 1\ncount = 2", "seed and count are given together"),
            ("prompt_matrix = true\ngrid_x = \"cfg=1,2\"", "not both"),
            ("grid_x = \"colour=1\"", "grid_x"),
            ("preset = \"../x\"", ".."),
            ("loras = \"a\"", "loras must be a list"),
            (
                "loras = [{ path = \"a\", wieght = 1 }]",
                "unknown key `wieght`",
            ),
            ("clip_skip = 0", "clip_skip must be 1 or more"),
            ("model = \"\"", "model is empty"),
        ];
        for (line, expected) in cases {
            let text = format!("[[jobs]]\nprompt = \"p\"\n{line}\n");
            let e = parse_err(&text);
            assert!(e.message.contains(expected), "{line}: {e}");
            assert_eq!(e.place, "job 1: ", "{line}");
            assert!(e.line >= 1, "{line}");
        }
        let e = parse_err("[[jobs]]\nprompt = \"p\"\nsteps = 0\n");
        assert_eq!(e.line, 3);
        assert!(parse_err("").message.contains("no [[jobs]]"));
        let e = parse_err("[[jobs]]\nname = \"a\"\n[[jobs]]\nname = \"a\"\n");
        assert!(
            e.message.contains("already used by the job on line 1"),
            "{e}"
        );
        assert!(parse_err("[[jobs]\n")
            .to_string()
            .starts_with("plan.toml:1:"));
    }

    #[test]
    fn a1111_sampler_names_keep_their_schedule_only_when_implied() {
        let plan = parse_ok("[defaults]\nsampler = \"Euler a\"\n[[jobs]]\nprompt = \"x\"\n");
        assert_eq!(
            plan.defaults.patch.sampler,
            Some(SamplerKind::EulerAncestral)
        );
        assert_eq!(plan.defaults.patch.schedule, None);
        assert!(plan.jobs[0].variation.is_none());
        let plan = parse_ok("[[jobs]]\nprompt_matrix = false\n");
        assert!(matches!(plan.jobs[0].variation, Some(Variation::Sweep)));
    }
}
