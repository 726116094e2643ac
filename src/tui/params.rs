//! The parameters panel's values: what the studio renders with besides the prompts. Every
//! change goes through `set`/`step`, which refuse invalid values with the reason.
use crate::engine::schedulers::{SamplerKind, Schedule};
use crate::recipe::{self, Recipe, RecipeLora, RecipePatch};
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
    /// img2img: the PNG to start from (None: text-to-image), `~` already expanded.
    pub init_image: Option<String>,
    /// How much of the init image is repainted, in (0, 1].
    pub strength: f64,
    /// Inpainting: white repaints, black keeps; only with an init image.
    pub mask: Option<String>,
    pub mask_blur: u32,
    /// Put the original pixels back outside the mask after decoding.
    pub keep_unmasked: bool,
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
            init_image: None,
            strength: recipe::DEFAULT_STRENGTH,
            mask: None,
            mask_blur: recipe::DEFAULT_MASK_BLUR,
            keep_unmasked: false,
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
    InitImage,
    Strength,
    Mask,
    MaskBlur,
    KeepUnmasked,
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
        Field::InitImage,
        Field::Strength,
        Field::Mask,
        Field::MaskBlur,
        Field::KeepUnmasked,
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
            Field::InitImage => "init image",
            Field::Strength => "strength",
            Field::Mask => "mask",
            Field::MaskBlur => "mask blur",
            Field::KeepUnmasked => "keep unmasked",
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
                None if self.init_image.is_some() => "from init image".to_string(),
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
            Field::InitImage => self.init_image.clone().unwrap_or_else(|| "none".into()),
            Field::Strength => self.strength.to_string(),
            Field::Mask => self.mask.clone().unwrap_or_else(|| "none".into()),
            Field::MaskBlur => self.mask_blur.to_string(),
            Field::KeepUnmasked if self.keep_unmasked => "on".to_string(),
            Field::KeepUnmasked => "off".to_string(),
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
            Field::InitImage => {
                self.init_image = existing_file(text)?;
                if self.init_image.is_none() {
                    // A mask belongs to its image: text-to-image has nothing to mask.
                    self.mask = None;
                }
            }
            Field::Strength => {
                let v: f64 = text.parse().map_err(|_| number("strength"))?;
                recipe::check_strength(v).map_err(|e| e.to_string())?;
                self.strength = v;
            }
            Field::Mask => {
                let clearing = text.is_empty() || text == "none";
                if !clearing && self.init_image.is_none() {
                    return Err(
                        "a mask needs an init image to repaint: set the init image first".into(),
                    );
                }
                self.mask = existing_file(text)?;
            }
            Field::MaskBlur => {
                let v: u32 = text.parse().map_err(|_| {
                    format!("mask blur takes a whole number of pixels >= 0, got \"{text}\"")
                })?;
                recipe::check_mask_blur(v).map_err(|e| e.to_string())?;
                self.mask_blur = v;
            }
            Field::KeepUnmasked => {
                self.keep_unmasked = match text {
                    "on" | "yes" | "true" | "1" => true,
                    "off" | "no" | "false" | "0" => false,
                    _ => return Err(format!("keep unmasked is on or off, got \"{text}\"")),
                };
            }
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
            Field::InitImage | Field::Mask => {
                return Err("type a PNG file's path (or none), then Enter".into())
            }
            Field::Strength => {
                // In hundredths, so that stepping never shows 0.7000000000000001.
                let v = ((self.strength * 100.0).round() as i64 + 5 * d) as f64 / 100.0;
                self.set(field, &v.to_string())?;
            }
            Field::MaskBlur => {
                let v = i64::from(self.mask_blur) + d;
                self.set(field, &v.to_string())?;
            }
            Field::KeepUnmasked => self.keep_unmasked = !self.keep_unmasked,
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
    /// otherwise; img2img settings only with an init image, mask settings only with a mask,
    /// as `easel generate` accepts them).
    pub fn patch(&self, prompt: &str, negative: &str) -> RecipePatch {
        let init = self.init_image.is_some();
        let mask = self.mask.clone().filter(|_| init);
        let masked = mask.is_some();
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
            init_image: self.init_image.clone(),
            strength: init.then_some(self.strength),
            mask,
            mask_blur: masked.then_some(self.mask_blur),
            keep_unmasked: masked.then_some(self.keep_unmasked),
        }
    }

    /// The queue's tag for what these parameters render: img2img or inpainting with its
    /// strength (None: text-to-image).
    pub fn job_tag(&self) -> Option<String> {
        self.init_image.as_ref()?;
        let kind = if self.mask.is_some() {
            "inpaint"
        } else {
            "img2img"
        };
        Some(format!("{kind} {}", self.strength))
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
        if let Some(image) = &p.init_image {
            self.init_image = Some(image.clone());
            // The mask belongs to that image: none when it has none.
            self.mask.clone_from(&p.mask);
        } else if p.mask.is_some() && self.init_image.is_some() {
            self.mask.clone_from(&p.mask);
        }
        if let Some(s) = p.strength {
            self.strength = s;
        }
        if let Some(b) = p.mask_blur {
            self.mask_blur = b;
        }
        if let Some(k) = p.keep_unmasked {
            self.keep_unmasked = k;
        }
    }

    /// Takes every setting of a finished render's recipe (the gallery's Enter): a text-to-image
    /// recipe clears the init image and mask, so rendering it again gives the same image.
    pub fn load_recipe(&mut self, recipe: &Recipe) {
        self.apply(&RecipePatch::from_recipe(recipe));
        self.loras = recipe.loras.clone();
        if recipe.init.is_none() {
            self.init_image = None;
            self.mask = None;
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

/// A path typed into a file field: empty (or "none") for no file, `~` for the home folder;
/// a file that does not exist is refused.
fn existing_file(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() || text == "none" {
        return Ok(None);
    }
    let path = expand_home(text);
    let p = std::path::Path::new(&path);
    if p.is_dir() {
        return Err(format!("{path} is a folder: give a PNG file"));
    }
    if !p.is_file() {
        return Err(format!("no such file: {path}"));
    }
    Ok(Some(path))
}

/// `~` and `~/...` with the home folder in front (other text as it is).
pub fn expand_home(text: &str) -> String {
    let rest = match text.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return text.to_string(),
    };
    match directories::BaseDirs::new() {
        Some(dirs) => format!("{}{rest}", dirs.home_dir().display()),
        None => text.to_string(),
    }
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
