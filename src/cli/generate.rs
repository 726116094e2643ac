//! `easel generate`: a prompt in, PNGs with their recipe out.
use super::interrupt::{self, CANCELLED_EXIT};
use super::progress::Reporter;
use super::report::{ImageReport, TimingReport};
use crate::engine::device::{device_name, kind_name, DeviceChoice, DtypeChoice};
use crate::engine::lora::{prompt_tags, LoraSpec};
use crate::engine::pipeline::{LoadOptions, ModelDefaults, StableDiffusion, TextToImage};
use crate::engine::schedulers::SamplerKind;
use crate::engine::EngineError;
use crate::output::naming::{self, OutputTarget};
use crate::output::save_png;
use crate::recipe::{self, Recipe, RecipeError, RecipeLora, SCHEMA_VERSION};
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  easel generate \"a red fox in the snow\" --model models/sd15
  easel generate \"a red fox\" -m models/sd15 --seed 7 --steps 30 --out fox.png
  easel generate \"a lighthouse at dusk\" -m models/sd15 --batch 4 --out shots/
  echo \"a long prompt from a file\" | easel generate - -m models/sd15 --json
  easel generate \"a fox <lora:ink:0.7>\" -m dreamshaper.safetensors --lora detail.safetensors:0.5

Models and LoRAs: --model takes a diffusers folder or a single-file .safetensors checkpoint
(SD 1.x, 2.x or XL, told apart by its tensor names; pickled .ckpt files are refused, with the
command that converts them). <lora:NAME:WEIGHT> in the prompt loads NAME.safetensors from the
loras/ folder of easel's config folder ($EASEL_HOME/config/loras when EASEL_HOME is set).

Files: an --out ending in .png is that file (replaced if it exists; a batch writes name-1.png,
name-2.png, ...). Anything else is a folder (created if needed; default ./outputs/) where names
are YYYYmmdd-HHMMSS-SEED-INDEX.png, sortable by time, and an existing file is never replaced.
Files appear whole: they are written to a temporary name and renamed.

Seeds: a batch draws all its images from one generator seeded with --seed, as diffusers does;
image i of a batch is reproduced by the same seed with the same --batch. Without --seed a
random one is chosen, printed, and recorded in every PNG.

Metadata: each PNG carries a `parameters` text in AUTOMATIC1111's format and the full recipe
as JSON under the keyword `easel`.

Prompts: AUTOMATIC1111's syntax. (word) weighs 1.1, ((word)) 1.21, (word:1.3) 1.3, [word] 1/1.1;
\\( \\) \\[ \\] are literal brackets; BREAK starts a new 75-token chunk; longer prompts run in
several chunks. A textual-inversion embedding is used by its name (its file name without
.safetensors) from the --embeddings folder.

Ctrl-C stops after the current step and writes nothing; a second Ctrl-C quits at once.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct GenerateArgs {
    /// What to draw; `-` reads the prompt from standard input.
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// The model: a diffusers folder (with model_index.json), or a single-file `.safetensors`
    /// checkpoint in the original SD 1.x / 2.x / XL layout (pickled .ckpt files are refused).
    #[arg(short, long, value_name = "PATH")]
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
    #[arg(short, long, value_name = "TEXT")]
    pub negative: Option<String>,

    /// Denoising steps, 1 to 1000 [default: the model's: 1 for turbo models, else 20].
    #[arg(short, long, value_name = "N")]
    pub steps: Option<usize>,

    /// Guidance scale: how strongly the image follows the prompt; 1 or less turns guidance off
    /// [default: the model's: 0 for turbo models, 5 for SDXL, else 7.5].
    #[arg(short, long, value_name = "F")]
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

    /// Sampler: ddim, euler, or euler_a (AUTOMATIC1111's names such as "Euler a" work too)
    /// [default: euler_a].
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<SamplerKind>,

    /// Images rendered together from one seed, 1 to 64 [default: 1].
    #[arg(short, long, value_name = "N")]
    pub batch: Option<u32>,

    /// Apply a preset (`easel preset list`); repeat to stack them, later ones winning.
    /// Flags given here win over presets.
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,

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

    /// Print one JSON object per image on stdout (path, seed, size, timings) and nothing else.
    #[arg(long)]
    pub json: bool,
}

/// The prompt argument, reading standard input for `-`.
pub fn resolve_prompt(arg: Option<&str>, stdin: &mut dyn Read) -> Result<String> {
    match arg {
        None => bail!(
            "no prompt: give one as the first argument, `-` to read it from standard input, \
             or \"\" for none"
        ),
        Some("-") => {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .context("cannot read the prompt from standard input")?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        Some(p) => Ok(p.to_string()),
    }
}

/// Checks what can be checked before the model loads, so mistakes cost no loading time.
pub fn check_args(args: &GenerateArgs) -> std::result::Result<(), RecipeError> {
    recipe::check_steps(args.steps.unwrap_or(recipe::DEFAULT_STEPS))?;
    recipe::check_cfg(args.cfg.unwrap_or(recipe::DEFAULT_CFG))?;
    recipe::check_batch(args.batch.unwrap_or(1))?;
    recipe::check_guidance_rescale(args.guidance_rescale.unwrap_or(0.0))?;
    if let Some(w) = args.width {
        recipe::check_side("width", w)?;
    }
    if let Some(h) = args.height {
        recipe::check_side("height", h)?;
    }
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
pub fn check_model_dir(dir: &Path) -> Result<()> {
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

/// The full recipe once the model's defaults are known.
pub fn build_recipe(
    args: &GenerateArgs,
    prompt: String,
    seed: u64,
    defaults: &ModelDefaults,
    device: &str,
    dtype: &str,
) -> std::result::Result<Recipe, RecipeError> {
    let side = |given: Option<u32>, default: i64| {
        given.unwrap_or_else(|| u32::try_from(default).unwrap_or(0))
    };
    let recipe = Recipe {
        schema_version: SCHEMA_VERSION,
        model: args
            .model
            .as_ref()
            .map(|m| m.display().to_string())
            .unwrap_or_default(),
        prompt,
        negative_prompt: args.negative.clone().unwrap_or_default(),
        sampler: args.sampler.unwrap_or(recipe::DEFAULT_SAMPLER),
        steps: args.steps.unwrap_or(defaults.steps),
        cfg: args.cfg.unwrap_or(defaults.cfg),
        seed,
        width: side(args.width, defaults.width),
        height: side(args.height, defaults.height),
        batch_size: args.batch.unwrap_or(1),
        index: 0,
        device: device.to_string(),
        dtype: dtype.to_string(),
        clip_skip: args.clip_skip.unwrap_or(recipe::DEFAULT_CLIP_SKIP),
        guidance_rescale: args.guidance_rescale.unwrap_or(0.0),
        loras: args.loras.clone(),
        vae: args.vae.as_ref().map(|p| p.display().to_string()),
    };
    recipe.validate()?;
    Ok(recipe)
}

fn cancelled() -> ExitCode {
    eprintln!("cancelled: no image written");
    ExitCode::from(CANCELLED_EXIT)
}

pub fn run(mut args: GenerateArgs) -> Result<ExitCode> {
    check_args(&args)?;
    let prompt = {
        if args.prompt.as_deref() == Some("-") && std::io::stdin().is_terminal() {
            eprintln!("reading the prompt from standard input (end it with Ctrl-D)");
        }
        resolve_prompt(args.prompt.as_deref(), &mut std::io::stdin().lock())?
    };
    // Presets (src/presets): layered under the flags given here.
    let prompt = super::preset::apply_to_generate(&mut args, prompt)?;
    let model = args.model.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "no model: pass --model DIR (a diffusers folder), or a --preset that names one"
        )
    })?;
    check_model_dir(&model)?;
    let embeddings = embeddings_dirs(args.embeddings.as_deref())?;
    let target = OutputTarget::from_arg(args.out.as_deref())?;
    let seed = match args.seed {
        Some(s) => s,
        None => random_seed()?,
    };
    let cancel = interrupt::install().map_err(anyhow::Error::msg)?;

    let start = Instant::now();
    let device = args.device.resolve()?;
    let kind = args.dtype.resolve(device);
    eprintln!(
        "loading {} on {} ({})",
        model.display(),
        device_name(device),
        kind_name(kind)
    );
    let lora_dir = crate::paths::Paths::discover().ok().map(|p| p.loras());
    let options = LoadOptions {
        loras: resolve_loras(&args.loras, &prompt, lora_dir.as_deref())?,
        vae: args.vae.clone(),
        config: args.model_config.clone(),
    };
    let sd = StableDiffusion::load_with(&model, device, kind, &options)
        .with_context(|| format!("cannot load the model {}", model.display()))?;
    let load_s = start.elapsed().as_secs_f64();
    let recipe = build_recipe(
        &args,
        prompt,
        seed,
        &sd.defaults(),
        &device_name(sd.device()),
        kind_name(sd.kind()),
    )?;
    if !args.json {
        eprintln!(
            "seed {}, {}x{}, {} steps, {}",
            recipe.seed, recipe.width, recipe.height, recipe.steps, recipe.sampler
        );
    }
    if cancel.load(Ordering::SeqCst) {
        return Ok(cancelled());
    }

    let mut reporter = Reporter::new(recipe.steps, std::io::stderr().is_terminal());
    let request = TextToImage {
        embeddings,
        ..recipe.to_request()
    };
    let result = sd.generate(&request, &mut |p| reporter.step(p), cancel);
    reporter.finish();
    let output = match result {
        Err(EngineError::Cancelled) => return Ok(cancelled()),
        other => other.context("the render failed")?,
    };
    let total_s = start.elapsed().as_secs_f64();
    if output.images.len() != recipe.batch_size as usize {
        bail!(
            "the engine returned {} images for a batch of {}",
            output.images.len(),
            recipe.batch_size
        );
    }

    let timings = TimingReport::new(load_s, &output.timings, recipe.steps, total_s);
    let stamp = naming::stamp(chrono::Local::now());
    let model_name = model_name(&model);
    for (index, image) in (0u32..).zip(&output.images) {
        if cancel.load(Ordering::SeqCst) {
            return Ok(cancelled());
        }
        let image_recipe = recipe.for_image(index);
        let path = save_png(&target, &stamp, &image_recipe, &model_name, image)?;
        if args.json {
            let report = ImageReport {
                path: path.display().to_string(),
                seed: recipe.seed,
                index,
                width: image.width,
                height: image.height,
                timings: timings.clone(),
            };
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        ])
        .unwrap();
        assert_eq!(a.sampler, Some(SamplerKind::EulerAncestral));
        assert_eq!(a.device, DeviceChoice::Cuda(1));
        assert_eq!(a.dtype, DtypeChoice::Bf16);
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
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["--sampler", "dpm9"]).unwrap_err().to_string();
        assert!(err.contains("ddim, euler, euler_a"), "{err}");
        // A preset may name the model, so its absence is refused later, by run().
        assert!(Wrap::try_parse_from(["easel", "a fox"])
            .unwrap()
            .args
            .model
            .is_none());
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
        let r = build_recipe(
            &a,
            "a fox".into(),
            1,
            &ModelDefaults {
                width: 64,
                height: 64,
                steps: 20,
                cfg: 7.5,
            },
            "cpu",
            "fp32",
        )
        .unwrap();
        assert_eq!(r.loras, a.loras);
        assert!(Recipe::from_json(&r.to_json()).unwrap().loras == a.loras);
    }

    #[test]
    fn prompt_from_argument_or_stdin() {
        let mut empty = std::io::empty();
        assert_eq!(resolve_prompt(Some("a fox"), &mut empty).unwrap(), "a fox");
        let mut input = "a fox\nin snow\r\n\n".as_bytes();
        assert_eq!(
            resolve_prompt(Some("-"), &mut input).unwrap(),
            "a fox\nin snow"
        );
        let err = resolve_prompt(None, &mut empty).unwrap_err().to_string();
        assert!(err.contains("no prompt"), "{err}");
    }

    #[test]
    fn recipe_takes_model_defaults_unless_given() {
        let defaults = ModelDefaults {
            width: 768,
            height: 512,
            steps: 20,
            cfg: 7.5,
        };
        let a = parse(&["--seed", "9", "--height", "640", "-n", "blur"]).unwrap();
        let r = build_recipe(&a, "a fox".into(), 9, &defaults, "cpu", "fp32").unwrap();
        assert_eq!((r.width, r.height), (768, 640));
        assert_eq!((r.steps, r.cfg, r.seed), (20, 7.5, 9));
        assert_eq!((r.batch_size, r.index), (1, 0));
        assert_eq!(r.negative_prompt, "blur");
        assert_eq!(r.sampler, recipe::DEFAULT_SAMPLER);
        assert_eq!(r.model, "m");
        assert_eq!(r.schema_version, SCHEMA_VERSION);
        assert_eq!((r.clip_skip, r.guidance_rescale), (1, 0.0));
        let a = parse(&["--clip-skip", "2", "--guidance-rescale", "0.7"]).unwrap();
        let r = build_recipe(&a, "a fox".into(), 9, &defaults, "cpu", "fp32").unwrap();
        assert_eq!((r.clip_skip, r.guidance_rescale), (2, 0.7));
        let turbo = ModelDefaults {
            steps: 1,
            cfg: 0.0,
            ..defaults
        };
        let r = build_recipe(
            &parse(&[]).unwrap(),
            "a fox".into(),
            9,
            &turbo,
            "cpu",
            "fp32",
        )
        .unwrap();
        assert_eq!((r.steps, r.cfg), (1, 0.0));
        let a = parse(&["--steps", "4", "--cfg", "2"]).unwrap();
        let r = build_recipe(&a, "a fox".into(), 9, &turbo, "cpu", "fp32").unwrap();
        assert_eq!((r.steps, r.cfg), (4, 2.0));
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
