//! The parameters panel's values: what the studio renders with besides the prompts. Every
//! change goes through `set`/`step`, which refuse invalid values with the reason.
use crate::engine::schedulers::{SamplerKind, Schedule};
use crate::recipe::{self, RecipeLora, RecipePatch};
use serde::{Deserialize, Serialize};

/// Sizes offered by stepping the size field (None: the model's native size).
pub const SIZES: &[Option<(u32, u32)>] = &[
    None,
    Some((512, 512)),
    Some((768, 512)),
    Some((512, 768)),
    Some((640, 448)),
    Some((448, 640)),
    Some((768, 768)),
    Some((1024, 1024)),
    Some((1216, 832)),
    Some((832, 1216)),
    Some((64, 64)),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Params {
    pub model: Option<String>,
    pub sampler: SamplerKind,
    pub schedule: Schedule,
    pub steps: usize,
    pub cfg: f64,
    pub seed: u64,
    /// Locked: every render uses `seed`; unlocked: a new random seed each time.
    pub seed_locked: bool,
    /// None: the model's native size.
    pub size: Option<(u32, u32)>,
    pub batch: u32,
    pub clip_skip: u32,
    /// LoRAs fused into the model, as `easel generate --lora` takes them.
    pub loras: Vec<RecipeLora>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            model: None,
            sampler: recipe::DEFAULT_SAMPLER,
            schedule: Schedule::Default,
            steps: recipe::DEFAULT_STEPS,
            cfg: recipe::DEFAULT_CFG,
            seed: 0,
            seed_locked: false,
            size: None,
            batch: 1,
            clip_skip: recipe::DEFAULT_CLIP_SKIP,
            loras: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Model,
    Sampler,
    Schedule,
    Steps,
    Cfg,
    Seed,
    Size,
    Batch,
    ClipSkip,
    Loras,
}

impl Field {
    pub const ALL: &'static [Field] = &[
        Field::Model,
        Field::Sampler,
        Field::Schedule,
        Field::Steps,
        Field::Cfg,
        Field::Seed,
        Field::Size,
        Field::Batch,
        Field::ClipSkip,
        Field::Loras,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Field::Model => "model",
            Field::Sampler => "sampler",
            Field::Schedule => "schedule",
            Field::Steps => "steps",
            Field::Cfg => "cfg",
            Field::Seed => "seed",
            Field::Size => "size",
            Field::Batch => "batch",
            Field::ClipSkip => "clip skip",
            Field::Loras => "loras",
        }
    }
}

impl Params {
    pub fn show(&self, field: Field) -> String {
        match field {
            Field::Model => self.model.clone().unwrap_or_else(|| "(none)".into()),
            Field::Sampler => self.sampler.name().to_string(),
            Field::Schedule => self.schedule.name().to_string(),
            Field::Steps => self.steps.to_string(),
            Field::Cfg => self.cfg.to_string(),
            Field::Seed if self.seed_locked => format!("{} (locked)", self.seed),
            Field::Seed => "new each time".to_string(),
            Field::Size => match self.size {
                Some((w, h)) => format!("{w}x{h}"),
                None => "native".to_string(),
            },
            Field::Batch => self.batch.to_string(),
            Field::ClipSkip => self.clip_skip.to_string(),
            Field::Loras if self.loras.is_empty() => "none".to_string(),
            Field::Loras => self
                .loras
                .iter()
                .map(|l| format!("{}:{}", l.path, l.weight))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Sets a field from typed text; the error says why the value is refused.
    pub fn set(&mut self, field: Field, text: &str) -> Result<(), String> {
        let text = text.trim();
        let number = |what: &str| format!("{what} takes a number, got \"{text}\"");
        match field {
            Field::Model => {
                self.model = (!text.is_empty()).then(|| text.to_string());
            }
            Field::Sampler => {
                self.sampler = text
                    .parse::<crate::engine::schedulers::SamplerChoice>()
                    .map(|c| {
                        if let Some(s) = c.schedule {
                            self.schedule = s;
                        }
                        c.kind
                    })
                    .map_err(|e| e.to_string())?;
            }
            Field::Schedule => {
                self.schedule = Schedule::ALL
                    .iter()
                    .copied()
                    .find(|s| s.name() == text)
                    .ok_or_else(|| {
                        let names: Vec<&str> = Schedule::ALL.iter().map(|s| s.name()).collect();
                        format!("unknown schedule \"{text}\": one of {}", names.join(", "))
                    })?;
            }
            Field::Steps => {
                let v: usize = text.parse().map_err(|_| number("steps"))?;
                recipe::check_steps(v).map_err(|e| e.to_string())?;
                self.steps = v;
            }
            Field::Cfg => {
                let v: f64 = text.parse().map_err(|_| number("cfg"))?;
                recipe::check_cfg(v).map_err(|e| e.to_string())?;
                self.cfg = v;
            }
            Field::Seed => {
                self.seed = text
                    .parse()
                    .map_err(|_| format!("seed takes a whole number >= 0, got \"{text}\""))?;
                self.seed_locked = true;
            }
            Field::Size => self.size = parse_size(text)?,
            Field::Batch => {
                let v: u32 = text.parse().map_err(|_| number("batch"))?;
                recipe::check_batch(v).map_err(|e| e.to_string())?;
                self.batch = v;
            }
            Field::ClipSkip => {
                let v: u32 = text.parse().map_err(|_| number("clip skip"))?;
                if !(1..=12).contains(&v) {
                    return Err(format!("clip skip must be between 1 and 12, got {v}"));
                }
                self.clip_skip = v;
            }
            Field::Loras => self.loras = parse_loras(text)?,
        }
        Ok(())
    }

    /// Left/Right on a field: the previous or next value.
    pub fn step(&mut self, field: Field, up: bool) -> Result<(), String> {
        let d: i64 = if up { 1 } else { -1 };
        match field {
            Field::Model => {
                return Err("type a model folder or .safetensors file, then Enter".into())
            }
            Field::Loras => return Err("type PATH:WEIGHT, ... (empty for none), then Enter".into()),
            Field::Sampler => {
                self.sampler = cycle(SamplerKind::ALL, self.sampler, up);
                if !self.sampler.schedules().contains(&self.schedule) {
                    self.schedule = Schedule::Default;
                }
            }
            Field::Schedule => self.schedule = cycle(self.sampler.schedules(), self.schedule, up),
            Field::Steps => {
                let v = self.steps as i64 + d;
                self.set(field, &v.to_string())?;
            }
            Field::Cfg => {
                let v = self.cfg + 0.5 * d as f64;
                self.set(field, &v.to_string())?;
            }
            Field::Seed => {
                let v = self.seed as i64 + d;
                self.set(field, &v.to_string())?;
            }
            Field::Size => self.size = cycle(SIZES, self.size, up),
            Field::Batch => {
                let v = i64::from(self.batch) + d;
                self.set(field, &v.to_string())?;
            }
            Field::ClipSkip => {
                let v = i64::from(self.clip_skip) + d;
                self.set(field, &v.to_string())?;
            }
        }
        Ok(())
    }

    /// The recipe fields these parameters set (the seed only when locked; the worker draws one
    /// otherwise).
    pub fn patch(&self, prompt: &str, negative: &str) -> RecipePatch {
        RecipePatch {
            model: self.model.clone(),
            prompt: Some(prompt.to_string()),
            negative_prompt: Some(negative.to_string()),
            sampler: Some(self.sampler),
            schedule: Some(self.schedule),
            timestep_spacing: None,
            steps: Some(self.steps),
            cfg: Some(self.cfg),
            seed: self.seed_locked.then_some(self.seed),
            width: self.size.map(|s| s.0),
            height: self.size.map(|s| s.1),
            batch_size: None,
            clip_skip: Some(self.clip_skip),
            guidance_rescale: None,
            ..RecipePatch::default()
        }
    }

    /// Layers a preset's or recipe's fields over these (prompts are the caller's).
    pub fn apply(&mut self, p: &RecipePatch) {
        if let Some(m) = &p.model {
            self.model = Some(m.clone());
        }
        if let Some(s) = p.sampler {
            self.sampler = s;
        }
        if let Some(s) = p.schedule {
            self.schedule = s;
        }
        if let Some(s) = p.steps {
            self.steps = s;
        }
        if let Some(c) = p.cfg {
            self.cfg = c;
        }
        if let Some(s) = p.seed {
            self.seed = s;
            self.seed_locked = true;
        }
        if let (Some(w), Some(h)) = (p.width, p.height) {
            self.size = Some((w, h));
        }
        if let Some(b) = p.batch_size {
            self.batch = b;
        }
        if let Some(c) = p.clip_skip {
            self.clip_skip = c;
        }
    }
}

fn cycle<T: PartialEq + Copy>(all: &[T], current: T, up: bool) -> T {
    let i = all.iter().position(|x| *x == current).unwrap_or(0);
    let n = all.len().max(1);
    let j = if up { (i + 1) % n } else { (i + n - 1) % n };
    all.get(j).copied().unwrap_or(current)
}

/// `a.safetensors:0.8, b.safetensors` (weight 1 when left out); every file must exist.
fn parse_loras(text: &str) -> Result<Vec<RecipeLora>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty() && *item != "none")
        .map(|item| {
            let (path, weight) = match item.rsplit_once(':') {
                Some((p, w)) if w.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                    (p.trim(), w.trim().parse().unwrap_or(1.0))
                }
                _ => (item, 1.0),
            };
            if !std::path::Path::new(path).is_file() {
                return Err(format!(
                    "the LoRA file {path} does not exist: give a .safetensors file (PATH:WEIGHT)"
                ));
            }
            Ok(RecipeLora {
                path: path.to_string(),
                weight,
            })
        })
        .collect()
}

fn parse_size(text: &str) -> Result<Option<(u32, u32)>, String> {
    if text.is_empty() || text == "native" {
        return Ok(None);
    }
    let bad = || format!("size is WIDTHxHEIGHT (like 512x768) or \"native\", got \"{text}\"");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    recipe::check_side("width", w).map_err(|e| e.to_string())?;
    recipe::check_side("height", h).map_err(|e| e.to_string())?;
    if !w.is_multiple_of(8) || !h.is_multiple_of(8) {
        return Err(format!("size {w}x{h} is not a multiple of 8 on both sides"));
    }
    Ok(Some((w, h)))
}
