//! `easel generate`: a prompt in, PNGs with their recipe out.
use super::interrupt::{self, CANCELLED_EXIT};
use super::plan;
use super::progress::Reporter;
use super::report::{ImageReport, TimingReport};
use super::sheet;
use crate::engine::device::{device_name, kind_name, DeviceChoice, DtypeChoice};
use crate::engine::lora::{prompt_tags, LoraSpec};
use crate::engine::pipeline::{Image, LoadOptions, StableDiffusion, TextToImage};
use crate::engine::schedulers::config::TimestepSpacing;
use crate::engine::schedulers::{SamplerChoice, Schedule};
use crate::history;
use crate::metadata::{self, ImageParameters};
use crate::output::naming::{self, OutputTarget};
use crate::paths::Paths;
use crate::recipe::{self, Recipe, RecipeError, RecipeLora, RecipePatch};
use crate::render::{self, RenderError, Rendered};
use crate::variations::grid::GridAxis;
use crate::variations::wildcards::Wildcards;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  easel generate \"a red fox in the snow\" --model models/sd15
  easel generate \"a red fox\" -m models/sd15 --seed 7 --steps 30 --out fox.png
  easel generate \"a lighthouse at dusk\" -m models/sd15 --seed 100 --batch 8 --out shots/
  echo \"a long prompt from a file\" | easel generate - -m models/sd15 --json
  easel generate --from outputs/20260101-120000-7-0.png --steps 40
  easel generate \"a {red|green|blue} __animal__ in the snow\" -m models/sd15 --batch 4
  easel generate \"a cat|wearing a hat|in the snow\" -m models/sd15 --prompt-matrix
  easel generate \"a fox\" -m models/sd15 --grid-x cfg=4,7,10 --grid-y sampler=euler_a,ddim
  easel generate \"a fox <lora:ink:0.7>\" -m dreamshaper.safetensors --lora detail.safetensors:0.5
  easel generate \"a watercolor fox\" -m models/sd15 --init-image photo.png --strength 0.6
  easel generate \"a red hat\" -m models/sd15-inpainting --init-image photo.png --mask hat.png

Models and LoRAs: --model takes a diffusers folder or a single-file .safetensors checkpoint
(SD 1.x, 2.x or XL, told apart by its tensor names; pickled .ckpt files are refused, with the
command that converts them). <lora:NAME:WEIGHT> in the prompt loads NAME.safetensors from the
loras/ folder of easel's config folder ($EASEL_HOME/config/loras when EASEL_HOME is set).
Files: an --out ending in .png is that file (replaced if it exists; several images are written
as name-1.png, name-2.png, ..., and a matrix or grid's contact sheet is name.png itself).
Anything else is a folder (created if needed; default ./outputs/) where names are
YYYYmmdd-HHMMSS-SEED-INDEX.png, sortable by time, and an existing file is never replaced.
Files appear whole: they are written to a temporary name and renamed. Every image is also
recorded in the history (see `easel history`).

Seeds: --batch N renders N images with seeds SEED, SEED+1, ..., each on its own, so each
PNG's recipe reproduces it alone. Without --seed a random one is chosen, printed, and recorded.

Layers: settings come from the model's defaults, then --from IMAGE.png, then --preset NAME
(see `easel preset --help`), then the flags given here, later ones winning.

Wildcards: {a|b|c} picks one option per image, __name__ one line of wildcards/name.txt in
easel's config folder; picks follow each image's seed. The PNG records the prompt as rendered
and the template it came from. {prompt} and other braces without | are left as they are.

Matrix and grid: --prompt-matrix renders every combination of the parts after the first `|`
(AUTOMATIC1111's prompt matrix); --grid-x/--grid-y FIELD=V1,V2,... render one image per value
(fields: steps, cfg, seed, sampler, width, height, size, prompt, prompt_sr, negative_prompt,
model; quote a value holding a comma). Both write each image and a labeled contact sheet;
all cells share the seed unless --vary-seed.

Metadata: each PNG carries a `parameters` text in AUTOMATIC1111's format and the full recipe
as JSON under the keyword `easel` (see `easel info`).

Prompts: AUTOMATIC1111's syntax. (word) weighs 1.1, ((word)) 1.21, (word:1.3) 1.3, [word] 1/1.1;
\\( \\) \\[ \\] are literal brackets; BREAK starts a new 75-token chunk; longer prompts run in
several chunks. A textual-inversion embedding is used by its name (its file name without
.safetensors) from the --embeddings folder.

img2img and inpainting: --init-image starts from a PNG instead of noise. It is scaled
(Lanczos, keeping its aspect ratio) until it covers the render size, then center-cropped;
without --width/--height the render takes the image's own size rounded down to a multiple of 8.
--strength (0 to 1, default 0.75) is how much is repainted: int(steps * strength) steps run.
--mask (white repaints, black keeps) is resized and cropped like the image; an inpainting
model (9-channel UNet) uses it directly, a regular model blends the kept part back after each
step. --mask-blur softens its edge (PIL's GaussianBlur radius, default 4, 0 for none);
--keep-unmasked puts the original pixels back outside the mask, exactly.

Ctrl-C stops after the current step; images already finished are kept and the rest skipped;
a second Ctrl-C quits at once.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct GenerateArgs {
    /// What to draw; `-` reads the prompt from standard input.
    #[arg(value_name = "PROMPT", value_parser = super::text_arg::Utf8Text("the prompt"))]
    pub prompt: Option<String>,

    /// Start from the recipe in a PNG made by easel, AUTOMATIC1111 or stable-diffusion.cpp;
    /// flags given here override it.
    #[arg(long, value_name = "IMAGE.png")]
    pub from: Option<PathBuf>,

    /// The model: a name from `easel models list`, a diffusers folder (with model_index.json),
    /// or a single-file `.safetensors` checkpoint in the original SD 1.x / 2.x / XL layout
    /// (pickled .ckpt files are refused) [default: `easel models default`].
    #[arg(short, long, value_name = "NAME|PATH")]
    pub model: Option<PathBuf>,

    /// For a single-file checkpoint: a diffusers folder whose configs and tokenizer replace the
    /// standard ones easel picks from the checkpoint's keys (as diffusers' `config=`).
    #[arg(long, value_name = "DIR")]
    pub model_config: Option<PathBuf>,

    /// A LoRA to fuse into the model, with its weight (default 1); repeatable. Prompt tags
    /// `<lora:NAME:WEIGHT>` add LoRAs from the `loras` folder of easel's config folder.
    #[arg(long = "lora", value_name = "PATH[:WEIGHT]", value_parser = parse_lora)]
    pub loras: Vec<RecipeLora>,

    /// A VAE replacing the model's: a diffusers VAE folder or a `.safetensors` file.
    #[arg(long, value_name = "PATH")]
    pub vae: Option<PathBuf>,

    /// What to steer away from (the negative prompt).
    #[arg(short, long, value_name = "TEXT", value_parser = super::text_arg::Utf8Text("the negative prompt"))]
    pub negative: Option<String>,

    /// Denoising steps, 1 to 1000 [default: the model's: 1 for turbo models, else 20].
    #[arg(short, long, value_name = "N")]
    pub steps: Option<usize>,

    /// Guidance scale: how strongly the image follows the prompt; 1 or less turns guidance off
    /// [default: the model's: 0 for turbo models, 5 for SDXL, else 7.5].
    #[arg(short, long, value_name = "F", allow_negative_numbers = true)]
    pub cfg: Option<f64>,

    /// Seed of the noise; the same seed and settings give the same image [default: random].
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Image width in pixels [default: the model's].
    #[arg(short = 'W', long, value_name = "W")]
    pub width: Option<u32>,

    /// Image height in pixels [default: the model's].
    #[arg(short = 'H', long, value_name = "H")]
    pub height: Option<u32>,

    /// Sampler: ddim, ddpm, pndm, lms, euler, euler_a, heun, dpm2, dpm2_a, dpmpp_2m,
    /// dpmpp_2m_sde, dpmpp_sde, unipc, deis, lcm, tcd. AUTOMATIC1111's names work too
    /// ("Euler a", "DPM++ 2M Karras") [default: euler_a].
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<SamplerChoice>,

    /// Noise schedule: default (the model's), karras, exponential, beta
    /// [default: default, or the one the sampler's name implies].
    #[arg(long, value_name = "S")]
    pub schedule: Option<Schedule>,

    /// Timestep spacing: leading, linspace, trailing [default: the model's].
    #[arg(long, value_name = "S")]
    pub timestep_spacing: Option<TimestepSpacing>,

    /// Images to render, 1 to 64, with seeds SEED, SEED+1, ... (a seed sweep) [default: 1].
    #[arg(short, long, value_name = "N")]
    pub batch: Option<u32>,

    /// Apply a preset (`easel preset list`); repeat to stack them, later ones winning.
    /// Flags given here win over presets.
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,

    /// Render every combination of the prompt's `|`-separated optional parts, plus a contact sheet.
    #[arg(long)]
    pub prompt_matrix: bool,

    /// Grid columns: FIELD=V1,V2,... (such as cfg=4,7,10), plus a contact sheet.
    #[arg(long, value_name = "FIELD=VALUES")]
    pub grid_x: Option<GridAxis>,

    /// Grid rows: FIELD=V1,V2,... (such as sampler=euler_a,ddim).
    #[arg(long, value_name = "FIELD=VALUES")]
    pub grid_y: Option<GridAxis>,

    /// Give matrix or grid cell i the seed SEED+i instead of one seed for all.
    #[arg(long)]
    pub vary_seed: bool,

    /// A .png file, or a folder for uniquely named files [default: outputs/].
    #[arg(short, long, value_name = "FILE_OR_DIR")]
    pub out: Option<PathBuf>,

    /// Where to run: auto (CUDA when available), cpu, cuda, cuda:N.
    #[arg(long, value_name = "D", default_value = "auto")]
    pub device: DeviceChoice,

    /// Number format: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.
    #[arg(long, value_name = "T", default_value = "auto")]
    pub dtype: DtypeChoice,

    /// AUTOMATIC1111's clip skip: 1 uses the text encoder's last layer, 2 the one before it
    /// [default: 1].
    #[arg(long, value_name = "N")]
    pub clip_skip: Option<u32>,

    /// Guidance rescale, 0 (off) to 1, as diffusers' guidance_rescale: tames the washed-out or
    /// over-exposed look of high guidance (0.7 is typical) [default: 0].
    #[arg(long, value_name = "F")]
    pub guidance_rescale: Option<f64>,

    /// A folder of textual-inversion embeddings (.safetensors) that prompts use by name
    /// [default: embeddings/ in easel's config folder, when it exists].
    #[arg(long, value_name = "DIR")]
    pub embeddings: Option<PathBuf>,

    /// img2img: start from this PNG instead of noise (scaled to cover the render size and
    /// center-cropped; without --width/--height the image's own size, rounded down to a
    /// multiple of 8).
    #[arg(long, value_name = "IMAGE.png")]
    pub init_image: Option<PathBuf>,

    /// How much of the init image is repainted, above 0 up to 1: int(steps * strength) steps
    /// run [default: 0.75].
    #[arg(long, value_name = "F")]
    pub strength: Option<f64>,

    /// Inpainting: a PNG mask, white repaints and black keeps, resized and cropped like the
    /// init image (needs --init-image).
    #[arg(long, value_name = "MASK.png")]
    pub mask: Option<PathBuf>,

    /// Blur the mask's edge: PIL's GaussianBlur radius in pixels, 0 for none [default: 4].
    #[arg(long, value_name = "N")]
    pub mask_blur: Option<u32>,

    /// After inpainting, put back the init image's pixels outside the (blurred) mask exactly.
    #[arg(long)]
    pub keep_unmasked: bool,

    /// Print one JSON object per image on stdout (path, seed, size, timings), then one for the
    /// contact sheet if any, and nothing else.
    #[arg(long)]
    pub json: bool,

    /// Show each finished image right in the terminal (over SSH too), above its path.
    #[arg(long, conflicts_with = "json")]
    pub preview: bool,

    /// How --preview draws: auto (kitty, iTerm2 or sixel when the terminal has it, else
    /// coloured half-blocks), or force one of them.
    #[arg(long, value_name = "G", default_value = "auto", requires = "preview")]
    pub graphics: crate::tui::images::Graphics,

    #[command(flatten)]
    pub memory: super::memory_flags::MemoryArgs,

    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
}

/// The prompt argument, reading standard input for `-`; None when no prompt was given.
pub fn resolve_prompt(arg: Option<&str>, stdin: &mut dyn Read) -> Result<Option<String>> {
    match arg {
        None => Ok(None),
        Some("-") => {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .context("cannot read the prompt from standard input")?;
            Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
        }
        Some(p) => Ok(Some(p.to_string())),
    }
}

/// Checks what can be checked before the model loads, so mistakes cost no loading time.
pub fn check_args(args: &GenerateArgs) -> std::result::Result<(), RecipeError> {
    schedule_of(args)?;
    if let Some(steps) = args.steps {
        recipe::check_steps(steps)?;
    }
    if let Some(cfg) = args.cfg {
        recipe::check_cfg(cfg)?;
    }
    if let Some(batch) = args.batch {
        recipe::check_batch(batch)?;
    }
    if let Some(rescale) = args.guidance_rescale {
        recipe::check_guidance_rescale(rescale)?;
    }
    if let Some(w) = args.width {
        recipe::check_side("width", w)?;
    }
    if let Some(h) = args.height {
        recipe::check_side("height", h)?;
    }
    if let Some(strength) = args.strength {
        recipe::check_strength(strength)?;
    }
    if let Some(blur) = args.mask_blur {
        recipe::check_mask_blur(blur)?;
    }
    Ok(())
}

/// Checks the layered settings, which may come from an image, before any model loads.
pub fn check_patch(patch: &RecipePatch) -> std::result::Result<(), RecipeError> {
    if let Some(steps) = patch.steps {
        recipe::check_steps(steps)?;
    }
    if let Some(cfg) = patch.cfg {
        recipe::check_cfg(cfg)?;
    }
    if let Some(rescale) = patch.guidance_rescale {
        recipe::check_guidance_rescale(rescale)?;
    }
    for (name, side) in [("width", patch.width), ("height", patch.height)] {
        if let Some(v) = side {
            recipe::check_side(name, v)?;
        }
    }
    Ok(())
}

/// The schedule the flags ask for: `--schedule`, or the one the sampler's name implies (None:
/// neither says).
pub fn schedule_of(args: &GenerateArgs) -> std::result::Result<Option<Schedule>, RecipeError> {
    match args.sampler {
        Some(choice) => choice
            .schedule_with(args.schedule)
            .map(|s| (args.schedule.is_some() || choice.schedule.is_some()).then_some(s))
            .map_err(|e| RecipeError::Sampler(e.to_string())),
        None => Ok(args.schedule),
    }
}

/// What the flags set, as the top layer.
pub fn flags_patch(args: &GenerateArgs, prompt: Option<String>) -> RecipePatch {
    RecipePatch {
        model: args.model.as_ref().map(|m| m.display().to_string()),
        prompt,
        negative_prompt: args.negative.clone(),
        sampler: args.sampler.map(|c| c.kind),
        // check_args has refused a sampler name and --schedule that disagree.
        schedule: schedule_of(args).ok().flatten(),
        timestep_spacing: args.timestep_spacing,
        steps: args.steps,
        cfg: args.cfg,
        seed: args.seed,
        width: args.width,
        height: args.height,
        batch_size: args.batch,
        clip_skip: args.clip_skip,
        guidance_rescale: args.guidance_rescale,
        init_image: args.init_image.as_ref().map(|p| p.display().to_string()),
        strength: args.strength,
        mask: args.mask.as_ref().map(|p| p.display().to_string()),
        mask_blur: args.mask_blur,
        keep_unmasked: args.keep_unmasked.then_some(true),
    }
}

/// Refuses img2img flags without an init image (which may also come from --from), and gives
/// the render the init image's size when no width or height is set.
pub fn resolve_init(args: &GenerateArgs, patch: &mut RecipePatch) -> Result<()> {
    if patch.init_image.is_none() {
        for (given, flag) in [
            (args.mask.is_some(), "--mask"),
            (args.strength.is_some(), "--strength"),
            (args.mask_blur.is_some(), "--mask-blur"),
            (args.keep_unmasked, "--keep-unmasked"),
        ] {
            if given {
                return Err(RecipeError::NeedsInit(flag).into());
            }
        }
        return Ok(());
    }
    if patch.mask.is_none() {
        for (given, flag) in [
            (args.mask_blur.is_some(), "--mask-blur"),
            (args.keep_unmasked, "--keep-unmasked"),
        ] {
            if given {
                return Err(RecipeError::NeedsMask(flag).into());
            }
        }
    }
    crate::init_files::fill_size(patch)?;
    Ok(())
}

/// `PATH` or `PATH:WEIGHT` (the weight is what follows the last colon, when it is a number).
pub fn parse_lora(arg: &str) -> std::result::Result<RecipeLora, String> {
    let (path, weight) = match arg.rsplit_once(':') {
        Some((p, w)) if w.trim().parse::<f64>().is_ok() => {
            (p, w.trim().parse::<f64>().unwrap_or(1.0))
        }
        _ => (arg, 1.0),
    };
    if path.is_empty() || !weight.is_finite() {
        return Err(format!(
            "{arg:?} is not PATH or PATH:WEIGHT (for example style.safetensors:0.8)"
        ));
    }
    Ok(RecipeLora {
        path: path.to_string(),
        weight,
    })
}

/// The LoRAs of a render: `--lora` ones, then those the prompt's `<lora:NAME:W>` tags name,
/// found as NAME.safetensors in `lora_dir`.
pub fn resolve_loras(
    flags: &[RecipeLora],
    prompt: &str,
    lora_dir: Option<&Path>,
) -> Result<Vec<LoraSpec>> {
    let mut specs: Vec<LoraSpec> = flags
        .iter()
        .map(|l| LoraSpec {
            path: PathBuf::from(&l.path),
            weight: l.weight,
        })
        .collect();
    for tag in prompt_tags(prompt) {
        let Some(dir) = lora_dir else {
            bail!("the prompt asks for <lora:{}>, but easel has no config folder to look in: set EASEL_HOME", tag.name);
        };
        let path = dir.join(format!("{}.safetensors", tag.name));
        if !path.is_file() {
            bail!(
                "the prompt asks for <lora:{}>, but {} does not exist: put the LoRA there, or pass it with --lora PATH:WEIGHT",
                tag.name,
                path.display()
            );
        }
        specs.push(LoraSpec {
            path,
            weight: tag.weight,
        });
    }
    Ok(specs)
}

/// A clear error for a model path that is neither a diffusers folder nor a checkpoint file.
/// A model name (catalog or registered) is resolved to its path first.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    let resolved;
    let dir = match dir.to_str().filter(|_| !dir.exists()) {
        Some(name) => {
            resolved = crate::models::resolve(name)?;
            resolved.as_path()
        }
        None => dir,
    };
    if let Some(e) = crate::engine::checkpoint::refuse_pickle(dir) {
        return Err(e.into());
    }
    if !dir.exists() {
        bail!(
            "model {} does not exist: pass --model with a diffusers folder (one holding model_index.json) or a .safetensors checkpoint",
            dir.display()
        );
    }
    if dir.is_file() {
        return Ok(());
    }
    if !dir.join("model_index.json").is_file() {
        bail!(
            "{} is not a diffusers model folder (it has no model_index.json)",
            dir.display()
        );
    }
    Ok(())
}

/// The textual-inversion folders a render may use: `--embeddings DIR` (which must exist), else
/// the config folder's embeddings/ when it exists.
pub fn embeddings_dirs(arg: Option<&Path>) -> Result<Vec<PathBuf>> {
    if let Some(dir) = arg {
        if !dir.is_dir() {
            bail!(
                "embeddings folder {} does not exist: pass --embeddings with a folder of .safetensors embeddings",
                dir.display()
            );
        }
        return Ok(vec![dir.to_path_buf()]);
    }
    Ok(crate::paths::Paths::discover()
        .map(|p| p.embeddings())
        .into_iter()
        .filter(|d| d.is_dir())
        .collect())
}

/// The name A1111's `Model:` field shows: the model folder's own name, or the file's stem.
pub fn model_name(dir: &Path) -> String {
    let path = dir.canonicalize().ok().unwrap_or_else(|| dir.to_path_buf());
    let name = if path.is_file() {
        path.file_stem()
    } else {
        path.file_name()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// A random seed in 0..2^32, short enough to type and accepted by other SD tools.
pub fn random_seed() -> Result<u64> {
    let v = getrandom::u32().map_err(|e| anyhow::anyhow!("cannot draw a random seed: {e}"))?;
    Ok(u64::from(v))
}

/// What the flags add to a recipe beyond the layered fields: `--lora` and `--vae`.
pub fn with_model_extras(mut recipe: Recipe, args: &GenerateArgs) -> Recipe {
    recipe.loras = args.loras.clone();
    recipe.vae = args.vae.as_ref().map(|p| p.display().to_string());
    recipe
}

/// The settings of a `--from` image, with its warnings printed.
fn read_from(path: &Path, sampler_given: bool) -> Result<(RecipePatch, ImageParameters)> {
    let (params, warnings) = metadata::read_png(path)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if let (Some(n), Some(i)) = (params.batch_size, params.index) {
        if n > 1 {
            eprintln!(
                "note: {} was image {i} of a batch of {n} drawn from one seed; easel now renders \
                 each image alone, so this one will differ",
                path.display()
            );
        }
    }
    let patch = params.to_patch(sampler_given)?;
    Ok((patch, params))
}

pub fn run(args: GenerateArgs) -> Result<ExitCode> {
    check_args(&args)?;
    let prompt = {
        if args.prompt.as_deref() == Some("-") && std::io::stdin().is_terminal() {
            eprintln!("reading the prompt from standard input (end it with Ctrl-D)");
        }
        resolve_prompt(args.prompt.as_deref(), &mut std::io::stdin().lock())?
    };

    // Layers, later ones winning: (model defaults, filled in per job) < --from < presets <
    // flags; presets style the prompt rather than replace it (src/presets).
    let from = match &args.from {
        Some(path) => Some(read_from(path, args.sampler.is_some())?),
        None => None,
    };
    let below = from.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
    let mut patch = super::preset::apply_presets(
        &args.presets,
        &below,
        &flags_patch(&args, prompt),
        args.json,
    )?;

    if patch.prompt.is_none() {
        bail!(
            "no prompt: give one as the first argument, `-` to read it from standard input, \
             \"\" for none, or --from IMAGE.png"
        );
    }
    if patch.model.is_none() {
        patch.model = crate::models::default_name().ok().flatten();
    }
    if patch.model.is_none() {
        bail!(
            "no model: pass --model with a name from `easel models list`, a diffusers folder or a \
             .safetensors file, set one with `easel models default NAME`, or use --from \
             IMAGE.png or a --preset that names one"
        );
    }
    resolve_init(&args, &mut patch)?;
    check_patch(&patch)?;
    let wildcards_apply = from
        .as_ref()
        .is_none_or(|(from_patch, _)| from_patch.prompt != patch.prompt);
    let request = plan::Request {
        count: patch.batch_size.unwrap_or(1),
        seed: match patch.seed {
            Some(s) => s,
            None => random_seed()?,
        },
        variation: variation(&args),
        vary_seed: args.vary_seed,
        wildcards: wildcards_apply,
    };
    let wildcard_dir = Paths::discover()
        .map(|p| p.wildcards())
        .unwrap_or_else(|_| PathBuf::from("wildcards"));
    let plan = plan::build(&patch, &request, &mut Wildcards::new(&wildcard_dir))?;
    if args.remote.remote.is_some() {
        return crate::remote::generate::run(&args, &plan);
    }
    // Jobs sharing a model and LoRA set (prompt tags may differ per job) share one load.
    let lora_dir = Paths::discover().ok().map(|p| p.loras());
    let mut groups: Vec<(String, Vec<LoraSpec>, Vec<&plan::Job>)> = Vec::new();
    for job in &plan.jobs {
        let prompt = job.patch.prompt.as_deref().unwrap_or_default();
        let loras = resolve_loras(&args.loras, prompt, lora_dir.as_deref())?;
        match groups
            .iter_mut()
            .find(|(m, l, _)| m == job.model() && *l == loras)
        {
            Some((_, _, jobs)) => jobs.push(job),
            None => {
                check_model_dir(Path::new(job.model()))?;
                groups.push((job.model().to_string(), loras, vec![job]));
            }
        }
    }
    let embeddings = embeddings_dirs(args.embeddings.as_deref())?;
    let target = OutputTarget::from_arg(args.out.as_deref())?;
    target.check_writable()?;
    let cancel = interrupt::install().map_err(anyhow::Error::msg)?;
    let history = match Paths::discover() {
        Ok(p) => Some(p.history()),
        Err(e) => {
            eprintln!("warning: images will not be recorded in the history: {e}");
            None
        }
    };
    let mut run = Run {
        args: &args,
        target,
        stamp: naming::stamp(chrono::Local::now()),
        history,
        total: plan.jobs.len(),
        written: 0,
        has_sheet: plan.sheet.is_some(),
        images: vec![
            None;
            if plan.sheet.is_some() {
                plan.jobs.len()
            } else {
                0
            }
        ],
        paths: vec![None; plan.jobs.len()],
        first_seed: None,
        start: Instant::now(),
        from: from.map(|(_, params)| params),
        embeddings,
        preview: args
            .preview
            .then(|| super::preview::Preview::new(args.graphics)),
    };
    for (model, loras, jobs) in groups {
        if run.render_model(&model, loras, &jobs, cancel)? == Flow::Cancelled {
            return Ok(cancelled(run.written));
        }
    }
    if let Some(sheet) = &plan.sheet {
        run.write_sheet(sheet)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn variation(args: &GenerateArgs) -> plan::Variation {
    if args.prompt_matrix {
        plan::Variation::Matrix
    } else if args.grid_x.is_some() || args.grid_y.is_some() {
        plan::Variation::Grid {
            x: args.grid_x.clone(),
            y: args.grid_y.clone(),
        }
    } else {
        plan::Variation::Sweep
    }
}

fn cancelled(written: usize) -> ExitCode {
    if written == 0 {
        eprintln!("cancelled: no image written");
    } else {
        eprintln!("cancelled: {written} finished image(s) kept, the rest skipped");
    }
    ExitCode::from(CANCELLED_EXIT)
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Cancelled,
}

/// The state of one `easel generate` while it renders.
struct Run<'a> {
    args: &'a GenerateArgs,
    target: OutputTarget,
    stamp: String,
    history: Option<PathBuf>,
    total: usize,
    has_sheet: bool,
    written: usize,
    first_seed: Option<u64>,
    /// Kept for the contact sheet (empty when there is none).
    images: Vec<Option<Image>>,
    paths: Vec<Option<PathBuf>>,
    start: Instant,
    from: Option<ImageParameters>,
    /// Textual-inversion folders the prompts may use.
    embeddings: Vec<PathBuf>,
    preview: Option<super::preview::Preview>,
}

impl Run<'_> {
    fn render_model(
        &mut self,
        model: &str,
        loras: Vec<LoraSpec>,
        jobs: &[&plan::Job],
        cancel: &AtomicBool,
    ) -> Result<Flow> {
        let load_start = Instant::now();
        let device = self.args.device.resolve()?;
        let kind = self.args.dtype.resolve(device);
        eprintln!(
            "loading {model} on {} ({})",
            device_name(device),
            kind_name(kind)
        );
        let dir = &crate::models::resolve(model)?;
        let options = LoadOptions {
            loras,
            vae: self.args.vae.clone(),
            config: self.args.model_config.clone(),
            memory: self.args.memory.options(device),
        };
        let mut sd = StableDiffusion::load_with(dir, device, kind, &options)
            .with_context(|| format!("cannot load the model {model}"))?;
        self.args.memory.apply(&mut sd)?;
        let load_s = load_start.elapsed().as_secs_f64();
        let (device, dtype) = (device_name(sd.device()), kind_name(sd.kind()));
        if let Some(from) = self.from.take() {
            let (d, t) = (from.device.as_deref(), from.dtype.as_deref());
            if d.is_some_and(|d| d != device) || t.is_some_and(|t| t != dtype) {
                eprintln!(
                    "note: {} was rendered on {} ({}); on {device} ({dtype}) pixels may differ slightly",
                    from.origin,
                    d.unwrap_or("?"),
                    t.unwrap_or("?")
                );
            }
        }
        let name = crate::models::display_name(model).unwrap_or_else(|| model_name(dir));
        for job in jobs {
            if cancel.load(Ordering::SeqCst) {
                return Ok(Flow::Cancelled);
            }
            let recipe = with_model_extras(job.recipe(&sd.defaults(), &device, dtype)?, self.args);
            if !self.args.json {
                let counter = if self.total > 1 {
                    format!("[{}/{}] ", job.number + 1, self.total)
                } else {
                    String::new()
                };
                eprintln!(
                    "{counter}seed {}, {}x{}, {} steps, {}, cfg {}",
                    recipe.seed,
                    recipe.width,
                    recipe.height,
                    recipe.steps,
                    crate::engine::schedulers::display_name(recipe.sampler, recipe.schedule),
                    recipe.cfg
                );
            }
            let mut reporter = Reporter::new(recipe.steps, std::io::stderr().is_terminal());
            let request = render::with_init(
                &recipe,
                TextToImage {
                    embeddings: self.embeddings.clone(),
                    ..recipe.to_request()
                },
                &mut |note| eprintln!("note: {note}"),
            )?;
            // img2img runs fewer steps than the recipe's.
            let mut ran = recipe.steps;
            let result = render::render_request(
                &sd,
                &request,
                &recipe,
                &self.job_target(job.number),
                &self.stamp,
                &name,
                &mut |p| {
                    ran = p.steps;
                    reporter.step(p)
                },
                cancel,
            );
            reporter.finish();
            let Rendered {
                path,
                image,
                output,
            } = match result {
                Ok(Some(rendered)) => rendered,
                Ok(None) => return Ok(Flow::Cancelled),
                Err(RenderError::Engine(e)) => {
                    return Err(anyhow::Error::new(e).context("the render failed"))
                }
                Err(RenderError::Output(e)) => return Err(e.into()),
                Err(RenderError::Init(e)) => return Err(e.into()),
                Err(RenderError::NoImage) => bail!("the engine returned no image"),
            };
            for note in &output.notes {
                eprintln!("note: {note}");
            }
            self.written += 1;
            self.record(&path, &recipe);
            let total_s = self.start.elapsed().as_secs_f64();
            if self.args.json {
                let report = ImageReport {
                    path: path.display().to_string(),
                    seed: recipe.seed,
                    index: u32::try_from(job.number).unwrap_or(u32::MAX),
                    width: image.width,
                    height: image.height,
                    timings: TimingReport::new(load_s, &output.timings, ran, total_s),
                };
                println!("{}", serde_json::to_string(&report)?);
            } else {
                if let Some(preview) = &mut self.preview {
                    preview.show(&image);
                }
                println!("{}", path.display());
            }
            self.paths[job.number] = Some(path);
            if job.number == 0 {
                self.first_seed = Some(recipe.seed);
            }
            if let Some(slot) = self.images.get_mut(job.number) {
                *slot = Some(image);
            }
        }
        Ok(Flow::Continue)
    }

    /// Where image `number` goes: a lone image to --out itself; several to name-1.png, ...
    /// (the contact sheet then takes name.png); a folder names files itself.
    fn job_target(&self, number: usize) -> OutputTarget {
        match &self.target {
            OutputTarget::File(base) if self.total > 1 || self.has_sheet => {
                let n = u32::try_from(number).unwrap_or(u32::MAX);
                let total = u32::try_from(self.total).unwrap_or(u32::MAX);
                // At least 2, so names are always suffixed when a contact sheet takes name.png.
                OutputTarget::File(naming::file_for_index(base, n, total.max(2)))
            }
            other => other.clone(),
        }
    }

    fn record(&self, path: &Path, recipe: &Recipe) {
        let Some(history) = &self.history else {
            return;
        };
        let entry = history::Entry::new(chrono::Local::now(), path, recipe);
        if let Err(e) = history::record(history, &entry) {
            eprintln!(
                "warning: cannot record {} in the history {}: {e}",
                path.display(),
                history.display()
            );
        }
    }

    fn write_sheet(&self, layout: &plan::SheetPlan) -> Result<()> {
        let seed = self.first_seed.unwrap_or_default();
        let (path, image) = sheet::draw_and_save(
            &self.target,
            &self.stamp,
            seed,
            layout,
            &self.images,
            &self.paths,
        )?;
        if self.args.json {
            let report = serde_json::json!({
                "sheet": path.display().to_string(),
                "kind": layout.kind.name(),
                "columns": layout.columns,
                "rows": layout.rows,
                "width": image.width,
                "height": image.height,
                "cells": self.paths.iter().flatten().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            });
            println!("{report}");
        } else {
            println!("{}", path.display());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: GenerateArgs,
    }

    fn parse(extra: &[&str]) -> std::result::Result<GenerateArgs, clap::Error> {
        let mut v = vec!["easel", "a fox", "--model", "m"];
        v.extend_from_slice(extra);
        Wrap::try_parse_from(v).map(|w| w.args)
    }

    fn check(extra: &[&str]) -> String {
        check_args(&parse(extra).unwrap()).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_parsing() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.prompt.as_deref(), Some("a fox"));
        assert_eq!(a.sampler, None);
        assert_eq!((a.batch, a.steps, a.cfg, a.seed), (None, None, None, None));
        assert!(a.presets.is_empty());
        assert_eq!((a.device, a.dtype), (DeviceChoice::Auto, DtypeChoice::Auto));
        assert!(check_args(&a).is_ok());
        let a = parse(&[
            "--sampler",
            "Euler a",
            "--device",
            "cuda:1",
            "--dtype",
            "bf16",
            "--grid-x",
            "cfg=4,7",
            "--from",
            "x.png",
        ])
        .unwrap();
        assert_eq!(a.sampler, Some(SamplerKind::EulerAncestral.into()));
        assert_eq!(a.device, DeviceChoice::Cuda(1));
        assert_eq!(a.dtype, DtypeChoice::Bf16);
        assert_eq!(a.grid_x.unwrap().values.len(), 2);
        assert_eq!(a.from.as_deref(), Some(Path::new("x.png")));
        assert!(Wrap::try_parse_from(["easel", "--from", "x.png"]).is_ok());
    }

    #[test]
    fn bad_values_are_refused_with_reasons() {
        assert!(check(&["--steps", "0"]).contains("steps must be between 1 and 1000"));
        assert!(check(&["--steps", "1001"]).contains("steps"));
        assert!(check(&["--cfg", "nan"]).contains("cfg must be a finite number"));
        assert!(check(&["--cfg", "inf"]).contains("cfg"));
        assert!(check(&["--cfg=-2"]).contains("cfg"));
        assert!(check(&["--batch", "0"]).contains("batch must be between 1 and 64"));
        assert!(check(&["--batch", "65"]).contains("batch"));
        assert!(check(&["--width", "0"]).contains("width"));
        assert!(check(&["--height", "0"]).contains("height"));
        assert!(check(&["--guidance-rescale", "1.5"]).contains("guidance rescale"));
        for bad in [
            &["--sampler", "dpm9"][..],
            &["--device", "tpu"],
            &["--dtype", "int8"],
            &["--steps", "-1"],
            &["--width", "x"],
            &["--grid-x", "colour=1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["--sampler", "dpm9"]).unwrap_err().to_string();
        assert!(err.contains("ddim, euler, euler_a"), "{err}");
        let err = parse(&["--grid-y", "steps=0"]).unwrap_err().to_string();
        assert!(err.contains("steps must be between"), "{err}");
        let err = check_patch(&RecipePatch {
            steps: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("steps"), "{err}");
    }

    #[test]
    fn loras_from_flags_and_prompt_tags() {
        let a = parse(&["--lora", "a.safetensors:0.5", "--lora", "dir/b.safetensors"]).unwrap();
        assert_eq!(
            a.loras,
            vec![
                RecipeLora {
                    path: "a.safetensors".into(),
                    weight: 0.5
                },
                RecipeLora {
                    path: "dir/b.safetensors".into(),
                    weight: 1.0
                }
            ]
        );
        assert!(parse(&["--lora", ":0.5"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ink.safetensors"), b"").unwrap();
        let specs = resolve_loras(&a.loras, "a fox <lora:ink:-0.3>", Some(dir.path())).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[2].path, dir.path().join("ink.safetensors"));
        assert_eq!(specs[2].weight, -0.3);
        let err = resolve_loras(&[], "<lora:nope:1>", Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.safetensors") && err.contains("--lora"),
            "{err}"
        );
        let job = plan::Job {
            number: 0,
            patch: RecipePatch {
                model: Some("m".into()),
                prompt: Some("a fox".into()),
                ..Default::default()
            },
            prompt_template: None,
        };
        let defaults = crate::engine::pipeline::ModelDefaults {
            width: 64,
            height: 64,
            steps: recipe::DEFAULT_STEPS,
            cfg: recipe::DEFAULT_CFG,
        };
        let r = with_model_extras(job.recipe(&defaults, "cpu", "fp32").unwrap(), &a);
        assert_eq!(r.loras, a.loras);
        assert!(Recipe::from_json(&r.to_json()).unwrap().loras == a.loras);
    }

    #[test]
    fn schedules_and_spacing_from_flags_or_sampler_names() {
        let patch = |extra: &[&str]| flags_patch(&parse(extra).unwrap(), None);
        let p = patch(&["--sampler", "DPM++ 2M Karras"]);
        assert_eq!(
            (p.sampler, p.schedule),
            (Some(SamplerKind::DpmPP2M), Some(Schedule::Karras))
        );
        let p = patch(&[
            "--sampler",
            "dpmpp_2m_sde",
            "--schedule",
            "exponential",
            "--timestep-spacing",
            "trailing",
        ]);
        assert_eq!(p.schedule, Some(Schedule::Exponential));
        assert_eq!(p.timestep_spacing, Some(TimestepSpacing::Trailing));
        // Nothing said: lower layers (presets, --from) or the model decide.
        let p = patch(&["--sampler", "dpmpp_2m"]);
        assert_eq!((p.schedule, p.timestep_spacing), (None, None));
        let clash = check(&["--sampler", "DPM++ 2M Karras", "--schedule", "beta"]);
        assert!(clash.contains("implies the karras schedule"), "{clash}");
        assert!(parse(&["--schedule", "polyexponential"]).is_err());
        assert!(parse(&["--timestep-spacing", "even"]).is_err());
    }

    #[test]
    fn prompt_from_argument_or_stdin() {
        let mut empty = std::io::empty();
        assert_eq!(
            resolve_prompt(Some("a fox"), &mut empty)
                .unwrap()
                .as_deref(),
            Some("a fox")
        );
        let mut input = "a fox\nin snow\r\n\n".as_bytes();
        assert_eq!(
            resolve_prompt(Some("-"), &mut input).unwrap().as_deref(),
            Some("a fox\nin snow")
        );
        assert_eq!(resolve_prompt(None, &mut empty).unwrap(), None);
    }

    #[test]
    fn flags_are_the_top_layer() {
        let a = parse(&[
            "--seed", "9", "--height", "640", "-n", "blur", "--batch", "3",
        ])
        .unwrap();
        let flags = flags_patch(&a, Some("a fox".into()));
        let mut from = RecipePatch {
            model: Some("old".into()),
            prompt: Some("old prompt".into()),
            steps: Some(30),
            seed: Some(1),
            ..Default::default()
        };
        from.layer(&flags);
        assert_eq!(from.model.as_deref(), Some("m"));
        assert_eq!(from.prompt.as_deref(), Some("a fox"));
        assert_eq!(from.negative_prompt.as_deref(), Some("blur"));
        assert_eq!(
            (from.steps, from.seed, from.height),
            (Some(30), Some(9), Some(640))
        );
        assert_eq!(from.batch_size, Some(3));
        assert_eq!(from.width, None);
        assert_eq!((from.clip_skip, from.guidance_rescale), (None, None));
        let a = parse(&["--clip-skip", "2", "--guidance-rescale", "0.7"]).unwrap();
        let flags = flags_patch(&a, None);
        assert_eq!(
            (flags.clip_skip, flags.guidance_rescale),
            (Some(2), Some(0.7))
        );
    }

    #[test]
    fn embeddings_folder_given_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            embeddings_dirs(Some(dir.path())).unwrap(),
            vec![dir.path().to_path_buf()]
        );
        let missing = dir.path().join("nope");
        let err = embeddings_dirs(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn model_folder_checks_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("my-model");
        let err = check_model_dir(&model).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = check_model_dir(&dir.path().join("old.ckpt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pickle"), "{err}");
        let file = dir.path().join("dreamy.safetensors");
        std::fs::write(&file, b"").unwrap();
        assert!(check_model_dir(&file).is_ok());
        assert_eq!(model_name(&file), "dreamy");
        std::fs::create_dir(&model).unwrap();
        let err = check_model_dir(&model).unwrap_err().to_string();
        assert!(err.contains("model_index.json"), "{err}");
        std::fs::write(model.join("model_index.json"), "{}").unwrap();
        assert!(check_model_dir(&model).is_ok());
        assert_eq!(model_name(&model), "my-model");
        assert_eq!(model_name(&model.join(".")), "my-model");
        assert!(random_seed().unwrap() <= u64::from(u32::MAX));
    }
}
