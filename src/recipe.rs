//! The Recipe: everything that decides an image. Every face (CLI, TUI, batch, PNG metadata)
//! speaks this one type, so it is versioned and validated in one place.
use crate::engine::pipeline::TextToImage;
use crate::engine::schedulers::config::TimestepSpacing;
use crate::engine::schedulers::{SamplerKind, Schedule};
use serde::{Deserialize, Serialize};

/// The recipe format this build writes; readers refuse newer ones rather than misread them.
pub const SCHEMA_VERSION: u32 = 1;

pub const DEFAULT_STEPS: usize = 20;
pub const DEFAULT_CFG: f64 = 7.5;
pub const DEFAULT_SAMPLER: SamplerKind = SamplerKind::EulerAncestral;
pub const MAX_STEPS: usize = 1000;
pub const MAX_BATCH: u32 = 64;
/// Far beyond what any SD model renders well; stops a typo from asking for terabytes.
pub const MAX_SIDE: u32 = 16384;
/// AUTOMATIC1111's "Clip skip: 1": the text encoder's last layer.
pub const DEFAULT_CLIP_SKIP: u32 = 1;
/// AUTOMATIC1111's img2img defaults: denoising strength 0.75, mask blur 4.
pub const DEFAULT_STRENGTH: f64 = 0.75;
pub const DEFAULT_MASK_BLUR: u32 = 4;
/// Far beyond any useful blur of a mask; stops a typo from blurring for minutes.
pub const MAX_MASK_BLUR: u32 = 256;

fn default_clip_skip() -> u32 {
    DEFAULT_CLIP_SKIP
}

/// One render, fully resolved.
///
/// Seeds and batches: `easel generate --batch N` renders N images with consecutive seeds, each
/// its own render with `batch_size` 1 (AUTOMATIC1111's semantics), so every PNG's recipe
/// reproduces that image alone. `batch_size` > 1 still describes an engine batch: one
/// diffusers-style call with ONE generator seeded with `seed` that draws the noise of all N
/// images at once; image `index` of such a batch is reproduced by the same recipe with the same
/// `batch_size`, not by its seed alone (older easel files hold such recipes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub schema_version: u32,
    /// The model as the user named it (for now a diffusers folder path).
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub sampler: SamplerKind,
    /// How noise levels are spaced; recipes from before schedules read as the model's default.
    #[serde(default)]
    pub schedule: Schedule,
    /// Overrides the model's timestep spacing (absent: the model's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps: usize,
    /// Classifier-free guidance scale; <= 1 skips the unconditional pass.
    pub cfg: f64,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub batch_size: u32,
    /// This image's position within its batch, 0-based.
    #[serde(default)]
    pub index: u32,
    /// The device and number format that rendered it (`cpu`, `cuda:0`; `fp32`, `fp16`, `bf16`).
    pub device: String,
    pub dtype: String,
    /// AUTOMATIC1111's clip skip: 1 is the text encoder's last layer, 2 the one before.
    #[serde(default = "default_clip_skip")]
    pub clip_skip: u32,
    /// diffusers' guidance rescale, 0 (off) to 1.
    #[serde(default)]
    pub guidance_rescale: f64,
    /// The prompt as the user wrote it, when wildcards (`{a|b}`, `__name__`) were expanded into
    /// `prompt`; `prompt` is what was rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_template: Option<String>,
    /// LoRAs fused into the model (`--lora`), in order; `<lora:NAME:W>` tags stay in the prompt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loras: Vec<RecipeLora>,
    /// A VAE that replaced the model's (`--vae`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<String>,
    /// img2img and inpainting (`--init-image`): the image the render started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<RecipeInit>,
}

/// The image a render starts from and how much of it is repainted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeInit {
    /// The init image's path as the user gave it (a PNG, resized and center-cropped to the
    /// render size).
    pub image: String,
    /// Denoising strength in (0, 1]: 1 repaints everything.
    pub strength: f64,
    /// Inpainting: a mask image's path (white repaints, black keeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// PIL GaussianBlur radius for the mask, 0 for none.
    #[serde(default)]
    pub mask_blur: u32,
    /// Put the original pixels back outside the (blurred) mask after decoding.
    #[serde(default)]
    pub keep_unmasked: bool,
}

/// A LoRA and its weight, as the user named it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeLora {
    pub path: String,
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecipeError {
    #[error("steps must be between 1 and {MAX_STEPS}, got {0}")]
    Steps(usize),
    #[error(
        "cfg must be a finite number >= 0 (7.5 is typical; 1 or less turns guidance off), got {0}"
    )]
    Cfg(f64),
    #[error(
        "batch must be between 1 and {MAX_BATCH}, got {0}: for more images, run several batches"
    )]
    Batch(u32),
    #[error("{name} must be between 1 and {MAX_SIDE} pixels, got {value}")]
    Side { name: &'static str, value: u32 },
    #[error("index {index} is outside a batch of {batch_size}")]
    Index { index: u32, batch_size: u32 },
    #[error("guidance rescale must be between 0 (off) and 1 (0.7 is typical), got {0}")]
    GuidanceRescale(f64),
    #[error("the model is not named: pass --model DIR")]
    NoModel,
    #[error(
        "this recipe has schema version {0}, newer than this easel understands ({SCHEMA_VERSION}): update easel"
    )]
    NewerSchema(u32),
    #[error("not a valid recipe: {0}")]
    Json(String),
    /// A sampler name and a schedule that disagree ("DPM++ 2M Karras" with beta).
    #[error("{0}")]
    Sampler(String),
    #[error(
        "strength must be above 0 and at most 1 (0.75 is typical; 1 repaints everything), got {0}"
    )]
    Strength(f64),
    #[error("mask blur must be between 0 and {MAX_MASK_BLUR} pixels, got {0}")]
    MaskBlur(u32),
    #[error("{0} needs --init-image: a mask or strength applies to an image to start from")]
    NeedsInit(&'static str),
    #[error("{0} needs --mask: it shapes the inpainting mask")]
    NeedsMask(&'static str),
}

pub fn check_steps(steps: usize) -> Result<(), RecipeError> {
    if (1..=MAX_STEPS).contains(&steps) {
        Ok(())
    } else {
        Err(RecipeError::Steps(steps))
    }
}

pub fn check_cfg(cfg: f64) -> Result<(), RecipeError> {
    if cfg.is_finite() && cfg >= 0.0 {
        Ok(())
    } else {
        Err(RecipeError::Cfg(cfg))
    }
}

pub fn check_batch(batch: u32) -> Result<(), RecipeError> {
    if (1..=MAX_BATCH).contains(&batch) {
        Ok(())
    } else {
        Err(RecipeError::Batch(batch))
    }
}

pub fn check_guidance_rescale(rescale: f64) -> Result<(), RecipeError> {
    if (0.0..=1.0).contains(&rescale) {
        Ok(())
    } else {
        Err(RecipeError::GuidanceRescale(rescale))
    }
}

pub fn check_strength(strength: f64) -> Result<(), RecipeError> {
    if strength > 0.0 && strength <= 1.0 {
        Ok(())
    } else {
        Err(RecipeError::Strength(strength))
    }
}

pub fn check_mask_blur(blur: u32) -> Result<(), RecipeError> {
    if blur <= MAX_MASK_BLUR {
        Ok(())
    } else {
        Err(RecipeError::MaskBlur(blur))
    }
}

pub fn check_side(name: &'static str, value: u32) -> Result<(), RecipeError> {
    if (1..=MAX_SIDE).contains(&value) {
        Ok(())
    } else {
        Err(RecipeError::Side { name, value })
    }
}

impl Recipe {
    /// Checks every field a user can get wrong. Whether the model can render this size is the
    /// engine's call, as it depends on the model's configs.
    pub fn validate(&self) -> Result<(), RecipeError> {
        if self.schema_version > SCHEMA_VERSION {
            return Err(RecipeError::NewerSchema(self.schema_version));
        }
        if self.model.trim().is_empty() {
            return Err(RecipeError::NoModel);
        }
        check_steps(self.steps)?;
        check_cfg(self.cfg)?;
        check_guidance_rescale(self.guidance_rescale)?;
        check_batch(self.batch_size)?;
        check_side("width", self.width)?;
        check_side("height", self.height)?;
        if self.index >= self.batch_size {
            return Err(RecipeError::Index {
                index: self.index,
                batch_size: self.batch_size,
            });
        }
        if let Some(init) = &self.init {
            check_strength(init.strength)?;
            check_mask_blur(init.mask_blur)?;
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers cannot fail to serialize; NaN is refused by validate.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and validates a recipe, refusing ones written by a newer easel.
    pub fn from_json(text: &str) -> Result<Self, RecipeError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RecipeError::Json(e.to_string()))?;
        let version = value
            .get("schema_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| RecipeError::Json("no schema_version".into()))?;
        if version > u64::from(SCHEMA_VERSION) {
            return Err(RecipeError::NewerSchema(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        let recipe: Recipe =
            serde_json::from_value(value).map_err(|e| RecipeError::Json(e.to_string()))?;
        recipe.validate()?;
        Ok(recipe)
    }

    /// The recipe of image `index` of this batch.
    pub fn for_image(&self, index: u32) -> Recipe {
        Recipe {
            index,
            ..self.clone()
        }
    }

    /// The engine request that renders the whole batch this recipe belongs to.
    pub fn to_request(&self) -> TextToImage {
        TextToImage {
            // LoRA tags choose LoRAs at load time; the text encoder never sees them.
            prompt: crate::engine::lora::strip_tags(&self.prompt),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            guidance_scale: self.cfg,
            seed: self.seed,
            width: i64::from(self.width),
            height: i64::from(self.height),
            batch_size: i64::from(self.batch_size),
            sampler: self.sampler,
            schedule: self.schedule,
            timestep_spacing: self.timestep_spacing,
            preview_every: 0,
            clip_skip: self.clip_skip,
            guidance_rescale: self.guidance_rescale,
            embeddings: Vec::new(),
            // The init image and mask are files: the face that reads them fills this in.
            init: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Recipe {
        Recipe {
            schema_version: SCHEMA_VERSION,
            model: "models/tiny-sd1".into(),
            prompt: "a red fox, \"quoted\"\nsecond line, ünïcödé 狐".into(),
            negative_prompt: "blurry".into(),
            sampler: SamplerKind::EulerAncestral,
            schedule: Schedule::Default,
            timestep_spacing: None,
            steps: 20,
            cfg: 7.5,
            seed: u64::MAX,
            width: 512,
            height: 768,
            batch_size: 4,
            index: 3,
            device: "cuda:0".into(),
            dtype: "fp16".into(),
            clip_skip: 2,
            guidance_rescale: 0.7,
            prompt_template: Some("a {red|grey} fox".into()),
            loras: Vec::new(),
            vae: None,
            init: None,
        }
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let r = sample();
        let json = r.to_json();
        assert!(json.contains("\"schema_version\":1"), "{json}");
        assert!(json.contains("\"sampler\":\"euler_a\""), "{json}");
        assert_eq!(Recipe::from_json(&json).unwrap(), r);
    }

    #[test]
    fn schedules_round_trip_and_old_recipes_still_load() {
        let r = Recipe {
            sampler: SamplerKind::DpmPP2M,
            schedule: Schedule::Karras,
            timestep_spacing: Some(TimestepSpacing::Trailing),
            ..sample()
        };
        let json = r.to_json();
        assert!(json.contains("\"schedule\":\"karras\""), "{json}");
        assert!(json.contains("\"timestep_spacing\":\"trailing\""), "{json}");
        assert_eq!(Recipe::from_json(&json).unwrap(), r);
        // A recipe written before schedules existed.
        let mut old: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("schedule");
        fields.remove("timestep_spacing");
        let loaded = Recipe::from_json(&old.to_string()).unwrap();
        assert_eq!(loaded.schedule, Schedule::Default);
        assert_eq!(loaded.timestep_spacing, None);
    }

    #[test]
    fn refuses_newer_schema_and_garbage() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["schema_version"] = 2.into();
        assert_eq!(
            Recipe::from_json(&v.to_string()),
            Err(RecipeError::NewerSchema(2))
        );
        assert!(matches!(
            Recipe::from_json("{\"prompt\":1}"),
            Err(RecipeError::Json(_))
        ));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let ok = sample();
        assert_eq!(ok.validate(), Ok(()));
        let cases: Vec<(Recipe, &str)> = vec![
            (
                Recipe {
                    steps: 0,
                    ..ok.clone()
                },
                "steps",
            ),
            (
                Recipe {
                    steps: 1001,
                    ..ok.clone()
                },
                "steps",
            ),
            (
                Recipe {
                    cfg: f64::NAN,
                    ..ok.clone()
                },
                "cfg",
            ),
            (
                Recipe {
                    cfg: f64::INFINITY,
                    ..ok.clone()
                },
                "cfg",
            ),
            (
                Recipe {
                    cfg: -1.0,
                    ..ok.clone()
                },
                "cfg",
            ),
            (
                Recipe {
                    batch_size: 0,
                    index: 0,
                    ..ok.clone()
                },
                "batch",
            ),
            (
                Recipe {
                    batch_size: 65,
                    ..ok.clone()
                },
                "batch",
            ),
            (
                Recipe {
                    width: 0,
                    ..ok.clone()
                },
                "width",
            ),
            (
                Recipe {
                    height: 0,
                    ..ok.clone()
                },
                "height",
            ),
            (
                Recipe {
                    index: 4,
                    ..ok.clone()
                },
                "index",
            ),
            (
                Recipe {
                    guidance_rescale: 1.5,
                    ..ok.clone()
                },
                "guidance rescale",
            ),
            (
                Recipe {
                    guidance_rescale: f64::NAN,
                    ..ok.clone()
                },
                "guidance rescale",
            ),
            (
                Recipe {
                    model: " ".into(),
                    ..ok.clone()
                },
                "--model",
            ),
        ];
        for (r, word) in cases {
            let msg = r.validate().unwrap_err().to_string();
            assert!(msg.contains(word), "{msg:?} should mention {word}");
        }
        assert_eq!(
            Recipe {
                cfg: 0.0,
                steps: 1000,
                batch_size: 64,
                index: 63,
                ..ok
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn request_carries_the_recipe() {
        let r = sample();
        let q = r.to_request();
        assert_eq!(q.prompt, r.prompt);
        assert_eq!(q.negative_prompt, "blurry");
        assert_eq!((q.width, q.height, q.batch_size), (512, 768, 4));
        assert_eq!(
            (q.steps, q.seed, q.sampler),
            (20, u64::MAX, SamplerKind::EulerAncestral)
        );
        assert_eq!(q.guidance_scale, 7.5);
        assert_eq!((q.clip_skip, q.guidance_rescale), (2, 0.7));
        assert_eq!(r.for_image(1).index, 1);
    }

    #[test]
    fn init_images_round_trip_validate_and_old_recipes_load() {
        let r = Recipe {
            init: Some(RecipeInit {
                image: "in.png".into(),
                strength: 0.6,
                mask: Some("mask.png".into()),
                mask_blur: 4,
                keep_unmasked: true,
            }),
            ..sample()
        };
        let json = r.to_json();
        assert!(json.contains("\"init\":{\"image\":\"in.png\""), "{json}");
        assert_eq!(Recipe::from_json(&json).unwrap(), r);
        // Text-to-image recipes leave it out, and recipes from before it load.
        assert!(!sample().to_json().contains("init"));
        assert_eq!(Recipe::from_json(&sample().to_json()).unwrap().init, None);
        for (strength, blur) in [(0.0, 0), (1.01, 0), (f64::NAN, 0), (0.5, 257)] {
            let mut bad = r.clone();
            let init = bad.init.as_mut().unwrap();
            init.strength = strength;
            init.mask_blur = blur;
            let msg = bad.validate().unwrap_err().to_string();
            assert!(
                msg.contains("strength") || msg.contains("mask blur"),
                "{msg}"
            );
        }
    }

    #[test]
    fn recipes_without_clip_skip_or_rescale_still_load() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        let map = v.as_object_mut().unwrap();
        map.remove("clip_skip");
        map.remove("guidance_rescale");
        let r = Recipe::from_json(&v.to_string()).unwrap();
        assert_eq!((r.clip_skip, r.guidance_rescale), (DEFAULT_CLIP_SKIP, 0.0));
    }
}

/// A partial recipe: what a preset, a PNG's recipe, or command-line flags set. Layers apply in
/// order (model defaults, then `--from` image, then presets, then flags), later ones winning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipePatch {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub sampler: Option<SamplerKind>,
    pub schedule: Option<Schedule>,
    pub timestep_spacing: Option<TimestepSpacing>,
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
    pub seed: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub batch_size: Option<u32>,
    pub clip_skip: Option<u32>,
    pub guidance_rescale: Option<f64>,
    /// img2img: the init image's path.
    pub init_image: Option<String>,
    pub strength: Option<f64>,
    /// Inpainting: the mask's path.
    pub mask: Option<String>,
    pub mask_blur: Option<u32>,
    pub keep_unmasked: Option<bool>,
}

impl RecipePatch {
    /// Every field of a full recipe, as a patch (for `--from IMAGE.png`).
    pub fn from_recipe(r: &Recipe) -> Self {
        Self {
            model: Some(r.model.clone()),
            prompt: Some(r.prompt.clone()),
            negative_prompt: Some(r.negative_prompt.clone()),
            sampler: Some(r.sampler),
            schedule: Some(r.schedule),
            timestep_spacing: r.timestep_spacing,
            steps: Some(r.steps),
            cfg: Some(r.cfg),
            seed: Some(r.seed),
            width: Some(r.width),
            height: Some(r.height),
            batch_size: Some(r.batch_size),
            clip_skip: Some(r.clip_skip),
            guidance_rescale: Some(r.guidance_rescale),
            init_image: r.init.as_ref().map(|i| i.image.clone()),
            strength: r.init.as_ref().map(|i| i.strength),
            mask: r.init.as_ref().and_then(|i| i.mask.clone()),
            mask_blur: r.init.as_ref().map(|i| i.mask_blur),
            keep_unmasked: r.init.as_ref().map(|i| i.keep_unmasked),
        }
    }

    /// The init image settings, when an init image is set (strength 0.75 and mask blur 4
    /// unless given, as AUTOMATIC1111).
    pub fn init(&self) -> Option<RecipeInit> {
        let image = self.init_image.clone()?;
        Some(RecipeInit {
            image,
            strength: self.strength.unwrap_or(DEFAULT_STRENGTH),
            mask: self.mask.clone(),
            mask_blur: self.mask_blur.unwrap_or(DEFAULT_MASK_BLUR),
            keep_unmasked: self.keep_unmasked.unwrap_or(false),
        })
    }

    /// `other`'s fields win where it sets them.
    pub fn layer(&mut self, other: &RecipePatch) {
        fn take<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        take(&mut self.model, &other.model);
        take(&mut self.prompt, &other.prompt);
        take(&mut self.negative_prompt, &other.negative_prompt);
        take(&mut self.sampler, &other.sampler);
        take(&mut self.schedule, &other.schedule);
        take(&mut self.timestep_spacing, &other.timestep_spacing);
        take(&mut self.steps, &other.steps);
        take(&mut self.cfg, &other.cfg);
        take(&mut self.seed, &other.seed);
        take(&mut self.width, &other.width);
        take(&mut self.height, &other.height);
        take(&mut self.batch_size, &other.batch_size);
        take(&mut self.clip_skip, &other.clip_skip);
        take(&mut self.guidance_rescale, &other.guidance_rescale);
        take(&mut self.init_image, &other.init_image);
        take(&mut self.strength, &other.strength);
        take(&mut self.mask, &other.mask);
        take(&mut self.mask_blur, &other.mask_blur);
        take(&mut self.keep_unmasked, &other.keep_unmasked);
    }
}

#[cfg(test)]
mod patch_tests {
    use super::*;

    #[test]
    fn later_layers_win_only_where_set() {
        let mut base = RecipePatch {
            steps: Some(20),
            cfg: Some(7.0),
            ..Default::default()
        };
        base.layer(&RecipePatch {
            cfg: Some(4.0),
            seed: Some(9),
            ..Default::default()
        });
        assert_eq!(base.steps, Some(20));
        assert_eq!(base.cfg, Some(4.0));
        assert_eq!(base.seed, Some(9));
    }
}
