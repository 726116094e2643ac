//! One recipe to one PNG on disk: the render-and-save step that `easel generate` and the
//! studio's worker share, so both write the same files with the same metadata.
use crate::engine::pipeline::{
    Image, ModelDefaults, Output, Progress, StableDiffusion, TextToImage,
};
use crate::engine::EngineError;
use crate::history;
use crate::init_files::{self, InitFileError};
use crate::output::naming::OutputTarget;
use crate::output::{save_png, OutputError};
use crate::recipe::{self, Recipe, RecipeError, RecipePatch, SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("the engine returned no image")]
    NoImage,
    /// The init image or mask could not be read.
    #[error(transparent)]
    Init(#[from] InitFileError),
}

/// A finished image: where it was written, its pixels, and the engine's report.
#[derive(Debug)]
pub struct Rendered {
    pub path: PathBuf,
    pub image: Image,
    pub output: Output,
}

/// Renders `recipe` (one image) and writes it under `target` with the recipe embedded, reading
/// its init image and mask (img2img, inpainting) from their files. `Ok(None)` means the render
/// was cancelled and nothing was written.
#[allow(clippy::too_many_arguments)]
pub fn render_and_save(
    sd: &StableDiffusion,
    recipe: &Recipe,
    embeddings: &[PathBuf],
    target: &OutputTarget,
    stamp: &str,
    model_name: &str,
    on_step: &mut dyn FnMut(&Progress),
    on_note: &mut dyn FnMut(String),
    cancel: &AtomicBool,
) -> Result<Option<Rendered>, RenderError> {
    let request = TextToImage {
        embeddings: embeddings.to_vec(),
        ..recipe.to_request()
    };
    let request = with_init(recipe, request, on_note)?;
    render_request(
        sd, &request, recipe, target, stamp, model_name, on_step, cancel,
    )
}

/// `request` with the recipe's init image and mask read from their files and brought to the
/// recipe's size (unchanged for text-to-image). `on_note` hears what is worth telling the user
/// without failing.
pub fn with_init(
    recipe: &Recipe,
    request: TextToImage,
    on_note: &mut dyn FnMut(String),
) -> Result<TextToImage, RenderError> {
    let init = match &recipe.init {
        Some(init) => Some(init_files::load(
            init,
            recipe.width,
            recipe.height,
            on_note,
        )?),
        None => None,
    };
    Ok(TextToImage { init, ..request })
}

/// As `render_and_save`, with the engine request already built (previews, embeddings).
#[allow(clippy::too_many_arguments)]
pub fn render_request(
    sd: &StableDiffusion,
    request: &TextToImage,
    recipe: &Recipe,
    target: &OutputTarget,
    stamp: &str,
    model_name: &str,
    on_step: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<Option<Rendered>, RenderError> {
    let mut output = match sd.generate(request, on_step, cancel) {
        Err(EngineError::Cancelled) => return Ok(None),
        other => other?,
    };
    if output.images.is_empty() {
        return Err(RenderError::NoImage);
    }
    let image = output.images.remove(0);
    // A cancel that lands during the decode still means "write nothing".
    if cancel.load(Ordering::SeqCst) {
        return Ok(None);
    }
    let path = save_png(target, stamp, recipe, model_name, &image)?;
    Ok(Some(Rendered {
        path,
        image,
        output,
    }))
}

/// Adds a written image to the history index; the message says what was not recorded.
pub fn record_history(history: &Path, path: &Path, recipe: &Recipe) -> Result<(), String> {
    let entry = history::Entry::new(chrono::Local::now(), path, recipe);
    history::record(history, &entry).map_err(|e| {
        format!(
            "cannot record {} in the history {}: {e}",
            path.display(),
            history.display()
        )
    })
}

/// The full recipe of one image from a partial one, once the model's defaults are known
/// (what `easel generate` does per job): unset fields take the model's or easel's defaults.
pub fn resolve_patch(
    p: &RecipePatch,
    defaults: &ModelDefaults,
    device: &str,
    dtype: &str,
) -> Result<Recipe, RecipeError> {
    let side = |given: Option<u32>, default: i64| {
        given.unwrap_or_else(|| u32::try_from(default).unwrap_or(0))
    };
    let recipe = Recipe {
        schema_version: SCHEMA_VERSION,
        model: p.model.clone().unwrap_or_default(),
        prompt: p.prompt.clone().unwrap_or_default(),
        negative_prompt: p.negative_prompt.clone().unwrap_or_default(),
        sampler: p.sampler.unwrap_or(recipe::DEFAULT_SAMPLER),
        schedule: p.schedule.unwrap_or_default(),
        timestep_spacing: p.timestep_spacing,
        steps: p.steps.unwrap_or(defaults.steps),
        cfg: p.cfg.unwrap_or(defaults.cfg),
        seed: p.seed.unwrap_or_default(),
        width: side(p.width, defaults.width),
        height: side(p.height, defaults.height),
        batch_size: 1,
        index: 0,
        device: device.to_string(),
        dtype: dtype.to_string(),
        clip_skip: p.clip_skip.unwrap_or(recipe::DEFAULT_CLIP_SKIP),
        guidance_rescale: p.guidance_rescale.unwrap_or(0.0),
        prompt_template: None,
        loras: Vec::new(),
        vae: None,
        init: p.init(),
    };
    recipe.validate()?;
    Ok(recipe)
}
