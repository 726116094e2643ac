//! Reading the recipe back out of a PNG: easel's own `easel` JSON chunk, or the `parameters`
//! text that AUTOMATIC1111 and stable-diffusion.cpp write. The result is what `easel info`
//! prints and what `--from IMAGE.png` and `preset save --from` layer as a RecipePatch.
pub mod a1111;
pub mod sdcpp;

use crate::engine::schedulers::SamplerKind;
use crate::output::png::{read_text_chunks, PARAMETERS_KEY, RECIPE_KEY};
use crate::output::OutputError;
use crate::recipe::{Recipe, RecipePatch};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which program wrote the metadata that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Easel,
    A1111,
    Sdcpp,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Easel => "easel (its recipe JSON)",
            Self::A1111 => "AUTOMATIC1111 (its `parameters` text)",
            Self::Sdcpp => "stable-diffusion.cpp (its `parameters` text)",
        }
    }
}

/// The generation settings found in an image. Every field is present in `--json` (null when
/// the image does not say), so tools can rely on the shape; keys easel has no field for stay in
/// `extra` under the name the image used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageParameters {
    pub source: Source,
    pub schema_version: Option<u32>,
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    /// None when the image names a sampler easel lacks; its name is then in `extra`.
    pub sampler: Option<SamplerKind>,
    /// The schedule a sampler name ("DPM++ 2M Karras") or an easel recipe names (AUTOMATIC1111's
    /// separate `Schedule type` stays in `extra`; `to_patch` reads it from there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::engine::schedulers::Schedule>,
    /// The timestep spacing an easel recipe overrides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestep_spacing: Option<crate::engine::schedulers::config::TimestepSpacing>,
    pub steps: Option<usize>,
    pub cfg: Option<f64>,
    pub seed: Option<u64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub batch_size: Option<u32>,
    pub index: Option<u32>,
    pub clip_skip: Option<u32>,
    pub guidance_rescale: Option<f64>,
    pub device: Option<String>,
    pub dtype: Option<String>,
    pub prompt_template: Option<String>,
    /// img2img: the init image (easel recipes) and the denoising strength (A1111's
    /// `Denoising strength`); left out of `--json` when the image does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<f64>,
    /// Inpainting: the mask (easel recipes), A1111's `Mask blur`, and whether unmasked pixels
    /// were kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_blur: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_unmasked: Option<bool>,
    pub extra: BTreeMap<String, Value>,
    /// Where the parameters came from, for error messages.
    #[serde(skip)]
    pub origin: String,
    /// The sampler name as the image wrote it, when easel does not know it.
    #[serde(skip)]
    pub unknown_sampler: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error(transparent)]
    Png(#[from] OutputError),
    #[error(
        "{0} has no generation settings: it carries no `easel` or `parameters` text \
         (easel, AUTOMATIC1111 and stable-diffusion.cpp write those; many sites strip them)"
    )]
    NoMetadata(PathBuf),
    #[error(
        "{origin} was rendered with the sampler {name:?}, which easel does not have: \
         choose one with --sampler ({choices})"
    )]
    UnknownSampler {
        origin: String,
        name: String,
        choices: String,
    },
}

impl ImageParameters {
    /// Parameters with nothing known yet.
    pub fn empty(source: Source, origin: &str) -> Self {
        Self {
            source,
            schema_version: None,
            model: None,
            prompt: None,
            negative_prompt: None,
            sampler: None,
            schedule: None,
            timestep_spacing: None,
            steps: None,
            cfg: None,
            seed: None,
            width: None,
            height: None,
            batch_size: None,
            index: None,
            clip_skip: None,
            guidance_rescale: None,
            device: None,
            dtype: None,
            prompt_template: None,
            init_image: None,
            strength: None,
            mask: None,
            mask_blur: None,
            keep_unmasked: None,
            extra: BTreeMap::new(),
            origin: origin.to_string(),
            unknown_sampler: None,
        }
    }

    pub fn from_recipe(r: &Recipe, origin: &str) -> Self {
        Self {
            schema_version: Some(r.schema_version),
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
            index: Some(r.index),
            clip_skip: Some(r.clip_skip),
            guidance_rescale: Some(r.guidance_rescale),
            device: Some(r.device.clone()),
            dtype: Some(r.dtype.clone()),
            prompt_template: r.prompt_template.clone(),
            init_image: r.init.as_ref().map(|i| i.image.clone()),
            strength: r.init.as_ref().map(|i| i.strength),
            mask: r.init.as_ref().and_then(|i| i.mask.clone()),
            mask_blur: r.init.as_ref().map(|i| i.mask_blur),
            keep_unmasked: r.init.as_ref().map(|i| i.keep_unmasked),
            ..Self::empty(Source::Easel, origin)
        }
    }

    /// Parses a `parameters` text, telling stable-diffusion.cpp's from AUTOMATIC1111's.
    pub fn from_parameters(text: &str, origin: &str) -> Self {
        if sdcpp::is_sdcpp(text) {
            sdcpp::parse(text, origin)
        } else {
            a1111::parse(text, origin)
        }
    }

    /// Records a sampler name, through the parser of A1111's names (which may imply a schedule:
    /// "DPM++ 2M Karras").
    pub(crate) fn set_sampler(&mut self, key: &str, name: &str) {
        match crate::engine::schedulers::parse_a1111(name.trim()) {
            Ok((kind, schedule)) => {
                self.sampler = Some(kind);
                if schedule.is_some() {
                    self.schedule = schedule;
                }
            }
            Err(_) => {
                self.unknown_sampler = Some(name.trim().to_string());
                self.extra
                    .insert(key.to_string(), Value::String(name.to_string()));
            }
        }
    }

    /// The settings as a patch for `--from` and presets. An unknown sampler is an error (the
    /// image cannot be reproduced as written) unless `sampler_given` says a flag replaces it.
    /// The batch size is left out: each image of a run is its own render.
    pub fn to_patch(&self, sampler_given: bool) -> Result<RecipePatch, MetadataError> {
        if let (Some(name), false) = (&self.unknown_sampler, sampler_given) {
            let choices: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
            return Err(MetadataError::UnknownSampler {
                origin: self.origin.clone(),
                name: name.clone(),
                choices: choices.join(", "),
            });
        }
        Ok(RecipePatch {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            sampler: self.sampler,
            schedule: self.schedule.or_else(|| {
                self.extra
                    .get("Schedule type")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
            }),
            timestep_spacing: self.timestep_spacing,
            steps: self.steps,
            cfg: self.cfg,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch_size: None,
            clip_skip: self.clip_skip,
            guidance_rescale: self.guidance_rescale,
            init_image: self.init_image.clone(),
            strength: self.strength.or_else(|| self.a1111_strength()),
            mask: self.mask.clone(),
            mask_blur: self.mask_blur.or_else(|| {
                self.extra
                    .get("Mask blur")
                    .and_then(Value::as_str)
                    .and_then(|v| v.trim().parse().ok())
            }),
            keep_unmasked: self.keep_unmasked,
        })
    }

    /// AUTOMATIC1111's `Denoising strength` (kept in `extra` as written): img2img's strength,
    /// unless the image was a hires-fix render, where it is the upscale pass's.
    fn a1111_strength(&self) -> Option<f64> {
        if self.extra.contains_key("Hires upscale") || self.extra.contains_key("Hires steps") {
            return None;
        }
        self.extra
            .get("Denoising strength")
            .and_then(Value::as_str)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|x| *x > 0.0 && *x <= 1.0)
    }
}

/// The settings a PNG carries: its `easel` recipe when there is a readable one, else its
/// `parameters` text. Warnings (an `easel` chunk that could not be used) are returned beside.
pub fn read_png(path: &Path) -> Result<(ImageParameters, Vec<String>), MetadataError> {
    let chunks = read_text_chunks(path)?;
    let origin = path.display().to_string();
    let mut warnings = Vec::new();
    if let Some((_, json)) = chunks.iter().find(|(k, _)| k == RECIPE_KEY) {
        match Recipe::from_json(json) {
            Ok(recipe) => return Ok((ImageParameters::from_recipe(&recipe, &origin), warnings)),
            Err(e) => warnings.push(format!(
                "{origin}: its easel recipe cannot be used ({e}); reading its `parameters` text instead"
            )),
        }
    }
    match chunks.iter().find(|(k, _)| k == PARAMETERS_KEY) {
        Some((_, text)) => Ok((
            ImageParameters::from_parameters(&utf8_in_latin1(text), &origin),
            warnings,
        )),
        None => Err(MetadataError::NoMetadata(path.to_path_buf())),
    }
}

/// tEXt chunks are Latin-1 by the PNG standard, but stable-diffusion.cpp (through
/// stb_image_write) stores UTF-8 bytes there. Text read as Latin-1 whose bytes form valid UTF-8
/// with multi-byte characters is taken as UTF-8: real Latin-1 prose almost never is (an `é`
/// alone is an invalid UTF-8 byte).
pub fn utf8_in_latin1(text: &str) -> std::borrow::Cow<'_, str> {
    let bytes: Option<Vec<u8>> = text.chars().map(|c| u8::try_from(c).ok()).collect();
    match bytes {
        Some(bytes) if !text.is_ascii() => match String::from_utf8(bytes) {
            Ok(utf8) => utf8.into(),
            Err(_) => text.into(),
        },
        _ => text.into(),
    }
}

/// The recipe a PNG carries, as a patch to layer under presets and flags (`--from`,
/// `easel preset save NAME --from IMAGE.png`). Fails on an image without metadata or one
/// rendered with a sampler easel lacks.
pub fn recipe_patch_from_png(path: &Path) -> Result<RecipePatch, MetadataError> {
    let (params, _warnings) = read_png(path)?;
    params.to_patch(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sampler_blocks_the_patch_unless_replaced() {
        let mut p = ImageParameters::empty(Source::A1111, "x.png");
        p.set_sampler("Sampler", "DPM++ 9M Turbo");
        assert_eq!(p.sampler, None);
        assert_eq!(p.extra["Sampler"], "DPM++ 9M Turbo");
        let err = p.to_patch(false).unwrap_err().to_string();
        assert!(err.contains("x.png"), "{err}");
        assert!(err.contains("\"DPM++ 9M Turbo\""), "{err}");
        assert!(err.contains("--sampler"), "{err}");
        assert!(p.to_patch(true).unwrap().sampler.is_none());
        p.set_sampler("Sampler", "Euler a");
        assert_eq!(p.sampler, Some(SamplerKind::EulerAncestral));
    }

    #[test]
    fn a1111_sampler_names_and_schedule_types_give_a_schedule() {
        use crate::engine::schedulers::Schedule;
        let patch = |text: &str| {
            ImageParameters::from_parameters(text, "x.png")
                .to_patch(false)
                .unwrap()
        };
        let p = patch("a fox\nSteps: 4, Sampler: DPM++ 2M Karras, Seed: 1");
        assert_eq!(
            (p.sampler, p.schedule),
            (Some(SamplerKind::DpmPP2M), Some(Schedule::Karras))
        );
        let p = patch("a fox\nSteps: 4, Sampler: DPM++ SDE, Schedule type: Exponential, Seed: 1");
        assert_eq!(
            (p.sampler, p.schedule),
            (Some(SamplerKind::DpmPPSde), Some(Schedule::Exponential))
        );
        assert_eq!(
            patch("a fox\nSteps: 4, Sampler: Heun, Seed: 1").schedule,
            None
        );
    }

    #[test]
    fn a1111_img2img_strength_and_mask_blur_reach_the_patch() {
        let patch = |text: &str| {
            ImageParameters::from_parameters(text, "x.png")
                .to_patch(false)
                .unwrap()
        };
        let p = patch("a fox\nSteps: 20, Seed: 1, Denoising strength: 0.45, Mask blur: 6");
        assert_eq!((p.strength, p.mask_blur), (Some(0.45), Some(6)));
        // A hires-fix render's denoising strength is not an img2img strength.
        let p = patch("a fox\nSteps: 20, Denoising strength: 0.45, Hires upscale: 2");
        assert_eq!(p.strength, None);
    }

    #[test]
    fn utf8_stored_as_latin1_is_recovered() {
        let mangled: String = "a fox 狐 ❄".bytes().map(char::from).collect();
        assert_eq!(utf8_in_latin1(&mangled), "a fox 狐 ❄");
        for plain in ["café, naïve", "plain ascii", "a fox 狐"] {
            assert_eq!(utf8_in_latin1(plain), plain);
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let p = ImageParameters::empty(Source::Sdcpp, "x.png");
        let v = serde_json::to_value(&p).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "batch_size",
                "cfg",
                "clip_skip",
                "device",
                "dtype",
                "extra",
                "guidance_rescale",
                "height",
                "index",
                "model",
                "negative_prompt",
                "prompt",
                "prompt_template",
                "sampler",
                "schema_version",
                "seed",
                "source",
                "steps",
                "width"
            ]
        );
        assert_eq!(v["source"], "sdcpp");
    }
}
