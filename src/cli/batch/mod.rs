//! `easel batch`: a plan file of many renders, rendered headless, resumable and shardable.
//!
//! plan_file (TOML, checked) -> expand (layered recipes, seeds, matrix/grid, file names) ->
//! shard (by image identity) -> manifest (what is done) -> runner (one worker per device,
//! grouped by model) -> PNGs written atomically, then one manifest line each.
pub mod devices;
pub mod display;
pub mod dry_run;
pub mod estimate;
pub mod expand;
pub mod hash;
pub mod manifest;
pub mod plan_file;
pub mod queue;
pub mod runner;
pub mod seeds;
pub mod shard;
pub mod sheets;
pub mod signals;
pub mod state;
pub mod status;
pub mod temp_files;
pub mod template;

use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::paths::Paths;
use crate::presets::Preset;
use crate::variations::wildcards::Wildcards;
use anyhow::{anyhow, Context, Result};
use display::{Display, Mode};
use expand::{Expander, Expansion, PlannedImage};
use plan_file::PlanFile;
use shard::Shard;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use template::Template;

const HELP: &str = "\
A plan (TOML):
  out = \"{preset}/{date}/{seed}-{index}.png\"   # file names inside --out (optional)
  [defaults]                                   # applies to every job
  model = \"models/sd15\"
  steps = 20
  [[jobs]]
  prompt = \"a lighthouse at dusk\"
  seeds = [1, 2, 3]
  [[jobs]]
  preset = \"watercolor\"
  prompt = \"a fox in the snow\"
  seeds = \"10..14\"                             # 10, 11, 12, 13 (end excluded)

Keys, in [defaults] and in jobs: the recipe fields model, prompt, negative_prompt, sampler
(easel's or AUTOMATIC1111's names), schedule, timestep_spacing, steps, cfg, seed, width,
height, clip_skip, guidance_rescale, init_image, strength, mask, mask_blur, keep_unmasked,
loras ([\"file.safetensors:0.8\"]); preset (a name, or a list stacked in order); seeds (a list
or \"A..B\"), count = N (N random seeds, drawn once and recorded in the output folder), or
seed = N; prompt_matrix = true, grid_x / grid_y = \"FIELD=V1,V2\" and vary_seed (as easel
generate's flags, one image per cell, and a labelled contact sheet {job}-{seed}-grid.png or
-matrix.png beside the first cell, drawn by whichever run or shard finishes its last cell).
Jobs may have a name. Prompts take
wildcards ({a|b}, __file__), drawn per seed. A job's fields win over its presets, which win
over [defaults]; a job's preset replaces the defaults' preset. Model and file paths are
relative to the current folder. Unknown keys are errors.

File names (out): {job} the job's name or number, {index} the image's number in its job
(from 0), {cell} its matrix/grid cell, {seed}, {preset} (names joined with +, or none),
{model}, {date} (YYYY-MM-DD of the first run into --out), {prompt} (48 characters, file-safe),
{hash} (12 hex digits of the recipe hash); {{ and }} are literal braces. Default:
{job}-{index}-{seed}.png. Names stay inside --out; two images with one name are refused
before anything renders.

Resume: --out holds easel-manifest.jsonl, one line per finished or failed image (job, recipe
hash, path, seed, timings), and easel-batch.json (random seeds, date). Run the same command
again to render only what is missing or failed. Ctrl-C or SIGTERM stops after the images
being rendered (a second one quits at once); PNGs appear whole (written under a temporary
name, then renamed), so a kill loses at most the images in flight.

Shards: --shard K/N renders the K-th of N disjoint parts (split by a hash of each image's
recipe, not its position, so adding jobs moves no image). Shards may run at once on one
host or several into one shared --out: they append to the one manifest under a lock, whole
lines only. `easel batch status PLAN.toml --out DIR` reports done, missing and failed images
across shards. scripts/slurm/easel-array.sbatch runs a plan as a Slurm job array.

Progress: bars on a terminal; otherwise one line per image (count, it/s, ETA); --json prints
JSON lines on stdout: plan, loading, started, progress, done, failed, sheet, note, summary.
Exit status: 0 when every image is rendered, 1 when any failed (with a summary), 130 after
Ctrl-C, 143 after SIGTERM.";

#[derive(Debug, Clone, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_long_help = HELP
)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub command: Option<BatchCommand>,

    /// The plan: a TOML file with [defaults] and [[jobs]] (see --help).
    #[arg(value_name = "PLAN.toml", required = true)]
    pub plan: Option<PathBuf>,

    #[command(flatten)]
    pub out: OutArg,

    /// Render only the K-th of N parts of the plan (1-based), such as 2/8.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,

    /// One worker per device: GPU numbers (0,1), cuda:N, cpu (cpu,cpu runs two CPU workers)
    /// [default: auto, one worker].
    #[arg(long, value_name = "LIST", value_parser = parse_device_list)]
    pub devices: Option<DeviceList>,

    /// Number format: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.
    #[arg(long, value_name = "T", default_value = "auto")]
    pub dtype: DtypeChoice,

    /// A folder of textual-inversion embeddings prompts use by name
    /// [default: embeddings/ in easel's config folder, when it exists].
    #[arg(long, value_name = "DIR")]
    pub embeddings: Option<PathBuf>,

    #[command(flatten)]
    pub memory: crate::cli::memory_flags::MemoryArgs,

    /// Print the images the plan makes, which are done, and an estimate of time and disk;
    /// render nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// JSON lines on stdout instead of bars and log lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutArg {
    /// The output folder [default: outputs/PLAN (the plan's file name without .toml)].
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BatchCommand {
    /// Report done, missing and failed images of a plan across all shards (exit status 0 only
    /// when every image is done).
    Status(StatusArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[arg(value_name = "PLAN.toml")]
    pub plan: PathBuf,

    #[command(flatten)]
    pub out: OutArg,

    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The `--devices` list.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceList(pub Vec<DeviceChoice>);

fn parse_device_list(s: &str) -> Result<DeviceList, String> {
    devices::parse_devices(s).map(DeviceList)
}

/// A plan read and checked, with its file name template.
pub struct LoadedPlan {
    pub path: PathBuf,
    /// The plan's path as errors show it.
    pub name: String,
    pub plan: PlanFile,
    pub template: Template,
}

impl LoadedPlan {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the plan {}: check the path (`easel batch --help` shows a plan)",
                path.display()
            )
        })?;
        let name = path.display().to_string();
        let plan = plan_file::parse(&text, &name)?;
        let template = match &plan.out {
            Some((source, line)) => {
                Template::parse(source).map_err(|e| anyhow!("{name}:{line}: {e}"))?
            }
            None => Template::parse(template::DEFAULT_TEMPLATE).map_err(anyhow::Error::msg)?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            name,
            plan,
            template,
        })
    }

    /// `--out`, else `outputs/<plan name>`.
    pub fn out_dir(&self, arg: &OutArg) -> PathBuf {
        arg.out.clone().unwrap_or_else(|| {
            let stem = self
                .path
                .file_stem()
                .map(|s| template::safe(&s.to_string_lossy()))
                .unwrap_or_else(|| "batch".into());
            Path::new(crate::output::naming::DEFAULT_DIR).join(stem)
        })
    }

    /// The plan's images, with random seeds and the date from `state` when it has them.
    pub fn expand(&self, state: Option<&state::BatchState>) -> Result<Expansion> {
        let mut store = None;
        let mut lookup = |name: &str| -> Result<Preset> {
            if store.is_none() {
                store = Some(crate::cli::preset::open_store()?);
            }
            let store = store.as_ref().ok_or_else(|| anyhow!("no preset store"))?;
            Ok(store.get(name)?.preset)
        };
        let wildcard_dir = Paths::discover()
            .map(|p| p.wildcards())
            .unwrap_or_else(|_| PathBuf::from("wildcards"));
        let mut wildcards = Wildcards::new(&wildcard_dir);
        let date = state.map_or_else(|| state::BatchState::fresh().date, |s| s.date.clone());
        Expander {
            presets: &mut lookup,
            wildcards: &mut wildcards,
            state,
            date,
            template: &self.template,
            plan_file: &self.name,
        }
        .expand(&self.plan)
    }
}

/// Refuses, before anything renders, models that are not there and LoRAs that cannot be found
/// (named with `loras` or by prompt tags).
pub fn check_inputs(expansion: &Expansion, lora_dir: Option<&Path>) -> Result<()> {
    for job in &expansion.unseeded {
        let at = || format!("job {} (line {})", job.job, job.job_line);
        crate::cli::generate::check_model_dir(Path::new(&job.model)).with_context(at)?;
        check_lora_files(&job.loras).with_context(at)?;
    }
    let mut seen = std::collections::HashSet::new();
    for image in &expansion.images {
        let at = || format!("job {} (line {})", image.job, image.job_line);
        if seen.insert(("model", image.model().to_string())) {
            crate::cli::generate::check_model_dir(Path::new(image.model())).with_context(at)?;
        }
        let prompt = image.patch.prompt.as_deref().unwrap_or_default();
        if seen.insert(("loras", runner::group_key(image))) {
            crate::cli::generate::resolve_loras(&image.loras, prompt, lora_dir).with_context(at)?;
            check_lora_files(&image.loras).with_context(at)?;
        }
    }
    Ok(())
}

fn check_lora_files(loras: &[crate::recipe::RecipeLora]) -> Result<()> {
    match loras.iter().find(|l| !Path::new(&l.path).is_file()) {
        Some(l) => Err(anyhow!(
            "the LoRA {} does not exist: fix its path (relative to the current folder)",
            l.path
        )),
        None => Ok(()),
    }
}

pub fn run(args: BatchArgs) -> Result<ExitCode> {
    if let Some(BatchCommand::Status(s)) = args.command {
        return status::run(&s);
    }
    let plan_path = args
        .plan
        .clone()
        .ok_or_else(|| anyhow!("no plan: easel batch PLAN.toml (see easel batch --help)"))?;
    let loaded = LoadedPlan::read(&plan_path)?;
    let out_dir = loaded.out_dir(&args.out);
    let devices = args
        .devices
        .clone()
        .map_or_else(|| vec![DeviceChoice::Auto], |d| d.0);
    if args.dry_run {
        return dry_run::run(&loaded, &out_dir, args.shard, &devices, args.json);
    }
    let embeddings = crate::cli::generate::embeddings_dirs(args.embeddings.as_deref())?;
    let paths = Paths::discover().ok();
    let lora_dir = paths.as_ref().map(Paths::loras);
    // Mistakes in the plan are refused before anything is written into --out.
    let recorded = state::read(&out_dir)?;
    check_inputs(&loaded.expand(recorded.as_ref())?, lora_dir.as_deref())?;
    // Seeds are drawn and recorded before anything renders, so every shard agrees on them.
    let state = state::ensure(
        &out_dir,
        &expand::random_seed_wants(&loaded.plan),
        &mut || crate::cli::generate::random_seed(),
    )?;
    let expansion = loaded.expand(Some(&state))?;
    check_inputs(&expansion, lora_dir.as_deref())?;
    let sheets = expansion.sheets;
    let mine: Vec<PlannedImage> = expansion
        .images
        .into_iter()
        .filter(|i| args.shard.is_none_or(|s| s.contains(&i.id)))
        .collect();
    let manifest = manifest::Manifest::read(&out_dir)
        .with_context(|| format!("cannot read {}", manifest::path(&out_dir).display()))?;
    let latest = manifest.latest();
    let todo: Vec<PlannedImage> = mine
        .iter()
        .filter(|i| !manifest::is_done(&latest, &out_dir, &i.path, &i.recipe_hash))
        .cloned()
        .collect();
    temp_files::remove_stale(&out_dir);
    let stop = signals::install().map_err(anyhow::Error::msg)?;
    let mode = if args.json {
        Mode::Json
    } else if std::io::stderr().is_terminal() {
        Mode::Bars
    } else {
        Mode::Lines
    };
    let names = devices.iter().map(ToString::to_string).collect();
    let mut display = Display::new(mode, todo.len(), names);
    let already_done = mine.len() - todo.len();
    let mut counts = display::Counts {
        images: mine.len(),
        already_done,
        to_render: todo.len(),
        ..Default::default()
    };
    display.plan(
        &loaded.name,
        &out_dir.display().to_string(),
        &counts,
        args.shard.map(|s| s.to_string()),
    );
    let config = runner::RunConfig {
        out_dir: out_dir.clone(),
        devices,
        dtype: args.dtype,
        embeddings,
        lora_dir,
        history: paths.as_ref().map(Paths::history),
        shard: args.shard.map(|s| s.to_string()),
        memory: args.memory.clone(),
    };
    let outcome = runner::render(&todo, &config, &mut display, stop)?;
    // After the images, so the shard that records a sheet's last cell finds it complete.
    let mut sheet_error = None;
    match sheets::draw_ready(&sheets, &out_dir) {
        Ok(written) => {
            for path in written {
                display.sheet(&path.display().to_string());
            }
        }
        Err(e) => sheet_error = Some(format!("{e:#}")),
    }
    counts = runner::counts(mine.len(), already_done, todo.len(), &outcome);
    let signal = stop.load(Ordering::SeqCst);
    let stopped = match signal {
        0 => None,
        s if s == signal_hook::consts::SIGTERM => Some("SIGTERM"),
        _ => Some("SIGINT"),
    };
    display.finish(&counts, outcome.left, stopped);
    if !outcome.failed.is_empty() && !args.json {
        eprintln!("failed:");
        for (path, message) in outcome.failed.iter().take(20) {
            eprintln!("  {path}: {message}");
        }
        if outcome.failed.len() > 20 {
            eprintln!("  ... and {} more", outcome.failed.len() - 20);
        }
    }
    if let Some(message) = &sheet_error {
        display.note(message);
    }
    Ok(if signal != 0 {
        ExitCode::from(signals::exit_status(signal))
    } else if outcome.failed.is_empty() && sheet_error.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
