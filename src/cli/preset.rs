//! `easel preset ...`: list, show, save, edit, rm, rename, export, import presets, and import
//! AUTOMATIC1111's styles.csv. Also the `--preset` layer of `easel generate`.
use super::generate::GenerateArgs;
use crate::engine::schedulers::SamplerKind;
use crate::paths::Paths;
use crate::presets::file::PRESET_SCHEMA_VERSION;
use crate::presets::styles::{read_styles, StyleRow};
use crate::presets::{
    check_name, EditBase, Entry, Preset, PresetError, PresetStore, Saved, Source,
};
use crate::recipe::{self, RecipePatch};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  easel preset list
  easel preset show cinematic
  easel generate \"a lighthouse at dusk\" -m models/sd15 --preset cinematic
  easel generate \"a fox\" -m models/sd15 --preset watercolor --preset sd15-draft --steps 20
  easel preset save my-look --prompt \"{prompt}, golden hour, 50mm\" --steps 28 --cfg 6
  easel preset save from-image --from outputs/20260101-120000-7-0.png
  easel preset edit cinematic
  easel preset import-styles ~/stable-diffusion-webui/styles.csv

A preset is a TOML file setting any of: model, prompt, negative_prompt, sampler, steps, cfg,
seed, width, height, batch_size, plus description and tags. In its prompt (and negative_prompt),
{prompt} marks where your prompt goes; without it your prompt comes first and the preset's is
added after \", \", as AUTOMATIC1111's styles do. Several --preset apply in order: later ones
win for single values, prompts are wrapped in turn; flags on the command line win over all.

Your presets live one file each in <config>/presets/ (EASEL_HOME moves it: $EASEL_HOME/config);
yours hide built-ins of the same name. Files that do not parse are reported and skipped, never
changed. A replaced or removed preset is kept in easel's trash (<data>/trash/presets/).";

#[derive(Debug, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct PresetArgs {
    #[command(subcommand)]
    pub command: PresetCommand,
}

#[derive(Debug, Subcommand)]
pub enum PresetCommand {
    /// List every preset, one per line: name, where it comes from, description.
    List {
        /// One JSON object per preset per line instead.
        #[arg(long)]
        json: bool,
    },
    /// Print a preset's TOML, after a comment saying where it lives.
    Show {
        name: String,
        /// A JSON object instead: source, path, fields, unknown fields, and the TOML text.
        #[arg(long)]
        json: bool,
    },
    /// Save the recipe flags given (or a PNG's recipe) as a preset.
    Save(Box<SaveArgs>),
    /// Open a preset in $VISUAL or $EDITOR (default vi); a built-in is copied to yours when changed.
    Edit { name: String },
    /// Remove one of your presets (a copy goes to easel's trash); built-ins stay.
    #[command(visible_alias = "remove")]
    Rm { name: String },
    /// Rename one of your presets; its file is kept as it is.
    #[command(visible_alias = "mv")]
    Rename {
        old: String,
        new: String,
        /// Replace an existing preset named NEW.
        #[arg(long)]
        force: bool,
    },
    /// Write a preset's TOML to FILE, or to standard output.
    Export {
        name: String,
        file: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Add a preset from a TOML file (`-` reads standard input), checked first.
    Import {
        file: PathBuf,
        /// The preset's name [default: the file's name without .toml].
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Replace a preset of yours with the same name.
        #[arg(long)]
        force: bool,
        /// FILE is AUTOMATIC1111's styles.csv (same as `import-styles`).
        #[arg(long, conflicts_with = "name")]
        a1111_styles: bool,
    },
    /// Turn every style in AUTOMATIC1111's styles.csv into a preset.
    ImportStyles {
        file: PathBuf,
        /// Replace presets of yours with the same names.
        #[arg(long)]
        force: bool,
    },
}

/// The recipe fields a preset can set, as flags (named as `easel generate` names them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecipeFlags {
    /// The model (a diffusers folder).
    #[arg(short, long, value_name = "DIR")]
    pub model: Option<String>,
    /// The prompt style; {prompt} marks where the user's prompt goes.
    #[arg(short, long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// The negative prompt style; {prompt} marks where the user's goes.
    #[arg(short, long, value_name = "TEXT")]
    pub negative: Option<String>,
    /// Sampler: ddim, euler, or euler_a.
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<SamplerKind>,
    /// Denoising steps, 1 to 1000.
    #[arg(short, long, value_name = "N")]
    pub steps: Option<usize>,
    /// Guidance scale.
    #[arg(short, long, value_name = "F")]
    pub cfg: Option<f64>,
    /// Seed of the noise.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Image width in pixels.
    #[arg(short = 'W', long, value_name = "W")]
    pub width: Option<u32>,
    /// Image height in pixels.
    #[arg(short = 'H', long, value_name = "H")]
    pub height: Option<u32>,
    /// Images rendered together, 1 to 64.
    #[arg(short, long, value_name = "N")]
    pub batch: Option<u32>,
    /// Stop N-1 layers before the text encoder's last (AUTOMATIC1111's clip skip; 1 = none).
    #[arg(long, value_name = "N")]
    pub clip_skip: Option<u32>,
    /// Rescale guided noise toward the prompt's (0 to 1; 0.7 counters over-exposure).
    #[arg(long, value_name = "F")]
    pub guidance_rescale: Option<f64>,
}

impl RecipeFlags {
    pub fn to_patch(&self) -> RecipePatch {
        RecipePatch {
            model: self.model.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative.clone(),
            sampler: self.sampler,
            schedule: None,
            timestep_spacing: None,
            steps: self.steps,
            cfg: self.cfg,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch_size: self.batch,
            clip_skip: self.clip_skip,
            guidance_rescale: self.guidance_rescale,
            ..RecipePatch::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    pub name: String,
    #[command(flatten)]
    pub recipe: RecipeFlags,
    /// Start from the recipe in a PNG made by easel, AUTOMATIC1111 or stable-diffusion.cpp;
    /// flags given here win over it.
    #[arg(long, value_name = "IMAGE.png")]
    pub from: Option<PathBuf>,
    /// A line saying what the preset is for.
    #[arg(short, long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A tag (repeat for several).
    #[arg(short, long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Replace a preset of yours with this name (its description, tags and fields this easel
    /// does not know are kept unless given; the old file goes to easel's trash).
    #[arg(long)]
    pub force: bool,
}

pub fn open_store() -> Result<PresetStore> {
    let paths = Paths::discover().map_err(|e| anyhow!(e))?;
    Ok(PresetStore::open(&paths))
}

pub fn run(args: PresetArgs) -> Result<ExitCode> {
    let store = open_store()?;
    let mut warned = Warned::default();
    match args.command {
        PresetCommand::List { json } => list(&store, json, &mut warned),
        PresetCommand::Show { name, json } => show(&store, &name, json, &mut warned),
        PresetCommand::Save(save_args) => save(&store, *save_args),
        PresetCommand::Edit { name } => edit(&store, &name, &mut warned),
        PresetCommand::Rm { name } => remove(&store, &name),
        PresetCommand::Rename { old, new, force } => {
            let saved = store.rename(&old, &new, force)?;
            println!("renamed {old} to {new}: {}", saved.path.display());
            report_saved(&new, &saved);
            Ok(ExitCode::SUCCESS)
        }
        PresetCommand::Export { name, file, force } => export(&store, &name, file, force),
        PresetCommand::Import {
            file,
            name,
            force,
            a1111_styles,
        } => {
            if a1111_styles {
                import_styles(&store, &file, force)
            } else {
                import(&store, &file, name, force, &mut warned)
            }
        }
        PresetCommand::ImportStyles { file, force } => import_styles(&store, &file, force),
    }
}

/// Warnings about unknown fields, once per file in one run.
#[derive(Default)]
pub struct Warned(BTreeSet<String>);

impl Warned {
    pub fn unknown_fields(&mut self, entry: &Entry) {
        let fields = entry.preset.unknown_fields();
        if !fields.is_empty() && self.0.insert(entry.location()) {
            eprintln!(
                "warning: {}: kept but not used by this easel: {}",
                entry.location(),
                fields.join(", ")
            );
        }
    }
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn source_label(entry: &Entry) -> &'static str {
    match &entry.source {
        Source::BuiltIn => "built-in",
        Source::User {
            shadows_builtin: true,
            ..
        } => "user, hides built-in",
        Source::User { .. } => "user",
    }
}

/// The fields a preset sets, as JSON (unset ones left out).
fn patch_json(patch: &RecipePatch) -> Value {
    let mut v = serde_json::to_value(patch).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.retain(|_, value| !value.is_null());
    }
    v
}

fn entry_json(entry: &Entry) -> Value {
    let path = match &entry.source {
        Source::User { path, .. } => Value::from(path.display().to_string()),
        Source::BuiltIn => Value::Null,
    };
    json!({
        "name": entry.name,
        "source": if entry.is_builtin() { "built-in" } else { "user" },
        "path": path,
        "shadows_builtin": matches!(entry.source, Source::User { shadows_builtin: true, .. }),
        "description": entry.preset.description,
        "tags": entry.preset.tags,
        "recipe": patch_json(&entry.preset.patch),
        "unknown_fields": entry.preset.extra.keys().collect::<Vec<_>>(),
    })
}

fn list(store: &PresetStore, json: bool, warned: &mut Warned) -> Result<ExitCode> {
    let listing = store.list();
    let name_width = listing
        .entries
        .iter()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for entry in &listing.entries {
        warned.unknown_fields(entry);
        let line = if json {
            entry_json(entry).to_string()
        } else {
            format!(
                "{:name_width$}  {:20}  {}",
                entry.name,
                source_label(entry),
                entry.preset.description.as_deref().unwrap_or("")
            )
        };
        text.push_str(line.trim_end());
        text.push('\n');
    }
    emit(&text)?;
    for problem in &listing.problems {
        eprintln!("warning: {problem} (skipped)");
    }
    Ok(ExitCode::SUCCESS)
}

fn show(store: &PresetStore, name: &str, json: bool, warned: &mut Warned) -> Result<ExitCode> {
    let entry = store.get(name)?;
    warned.unknown_fields(&entry);
    if json {
        let mut v = entry_json(&entry);
        v["toml"] = Value::from(entry.text.clone());
        emit(&format!("{v}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let place = match &entry.source {
        Source::BuiltIn => format!(
            "built into easel; `easel preset edit {name}` makes your own copy in {}",
            store.dir().display()
        ),
        Source::User {
            path,
            shadows_builtin,
        } => format!(
            "{}{}",
            path.display(),
            if *shadows_builtin {
                " (hides the built-in preset of this name)"
            } else {
                ""
            }
        ),
    };
    // A comment, so the output is still a valid preset file.
    let newline = if entry.text.ends_with('\n') { "" } else { "\n" };
    emit(&format!("# {name}: {place}\n{}{newline}", entry.text))?;
    Ok(ExitCode::SUCCESS)
}

/// Checks flag values as a preset file's values are checked.
fn check_patch(p: &RecipePatch) -> Result<()> {
    if let Some(v) = p.steps {
        recipe::check_steps(v)?;
    }
    if let Some(v) = p.cfg {
        recipe::check_cfg(v)?;
    }
    if let Some(v) = p.batch_size {
        recipe::check_batch(v)?;
    }
    if let Some(v) = p.width {
        recipe::check_side("width", v)?;
    }
    if let Some(v) = p.height {
        recipe::check_side("height", v)?;
    }
    if p.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
        bail!("--model is empty: name a model, or leave the flag out");
    }
    Ok(())
}

fn save(store: &PresetStore, args: SaveArgs) -> Result<ExitCode> {
    check_name(&args.name)?;
    let mut patch = RecipePatch::default();
    if let Some(image) = &args.from {
        // easel's recipe, or AUTOMATIC1111's / stable-diffusion.cpp's `parameters` text.
        patch = crate::metadata::recipe_patch_from_png(image)?;
    }
    patch.layer(&args.recipe.to_patch());
    check_patch(&patch)?;
    let description = args.description.clone();
    let tags = args.tags.clone();
    if patch == RecipePatch::default() && description.is_none() && tags.is_empty() {
        bail!(
            "nothing to save: give the settings the preset should hold (such as --prompt \"{{prompt}}, oil painting\" --steps 30), or --from IMAGE.png"
        );
    }
    let mut kept_unknown = Vec::new();
    let saved = store.update(&args.name, args.force, |existing| {
        let existing = existing.unwrap_or_default();
        kept_unknown = existing.unknown_fields();
        Ok(Preset {
            description: description.or(existing.description),
            tags: if tags.is_empty() { existing.tags } else { tags },
            patch,
            extra: existing.extra,
        })
    })?;
    println!("saved preset {}: {}", args.name, saved.path.display());
    report_saved(&args.name, &saved);
    if !kept_unknown.is_empty() {
        eprintln!(
            "note: kept fields this easel does not use: {}",
            kept_unknown.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn report_saved(name: &str, saved: &Saved) {
    if saved.shadows_builtin {
        eprintln!(
            "note: it hides the built-in preset {name} (`easel preset rm {name}` brings that back)"
        );
    }
    if let Some(old) = &saved.trashed {
        eprintln!("note: the previous version is kept in {}", old.display());
    }
}

fn remove(store: &PresetStore, name: &str) -> Result<ExitCode> {
    let removed = store.remove(name)?;
    println!(
        "removed preset {name} (a copy is kept in {})",
        removed.trashed.display()
    );
    if removed.builtin_visible {
        println!("the built-in preset {name} is in use again");
    }
    Ok(ExitCode::SUCCESS)
}

fn export(store: &PresetStore, name: &str, file: Option<PathBuf>, force: bool) -> Result<ExitCode> {
    let entry = store.get(name)?;
    match file {
        None => emit(&entry.text)?,
        Some(path) => {
            if path.exists() && !force {
                bail!(
                    "{} exists: pass --force to replace it, or choose another file",
                    path.display()
                );
            }
            crate::store::write_atomic(&path, entry.text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported {name} to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_input(file: &Path) -> Result<String> {
    let bytes = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        bytes
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    String::from_utf8(bytes)
        .map_err(|_| anyhow!("{} is not UTF-8 text: save it as UTF-8", file.display()))
}

fn import(
    store: &PresetStore,
    file: &Path,
    name: Option<String>,
    force: bool,
    warned: &mut Warned,
) -> Result<ExitCode> {
    let name = match name {
        Some(n) => n,
        None if file == Path::new("-") => {
            bail!("give the preset a name with --name when reading standard input")
        }
        None => {
            let stem = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stem = stem.strip_suffix(".toml").unwrap_or(&stem).to_string();
            check_name(&stem).map_err(|e| {
                anyhow!("{e}\nthe name comes from the file's name: choose one with --name NAME")
            })?;
            stem
        }
    };
    if file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        bail!(
            "{} looks like a CSV file: for AUTOMATIC1111's styles.csv use `easel preset import-styles {}`",
            file.display(),
            file.display()
        );
    }
    let text = read_input(file)?;
    let label = file.display().to_string();
    let preset = Preset::parse(&text, &label)?;
    let saved = store.save_text(&name, &text, force)?;
    println!("imported preset {name}: {}", saved.path.display());
    report_saved(&name, &saved);
    let fields = preset.unknown_fields();
    if !fields.is_empty() {
        warned.0.insert(saved.path.display().to_string());
        eprintln!(
            "warning: {}: kept but not used by this easel: {}",
            saved.path.display(),
            fields.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn import_styles(store: &PresetStore, file: &Path, force: bool) -> Result<ExitCode> {
    let text = read_input(file)?;
    let rows = read_styles(&text, &file.display().to_string())?;
    let (mut imported, mut skipped) = (0, 0);
    for row in rows {
        match row {
            StyleRow::Style {
                line,
                style,
                name,
                preset,
            } => match store.save(&name, &preset, force) {
                Ok(saved) => {
                    imported += 1;
                    let note = if saved.shadows_builtin {
                        ", hides the built-in"
                    } else {
                        ""
                    };
                    println!("imported {name:24} from line {line}, style {style:?}{note}");
                }
                Err(PresetError::Exists(_)) => {
                    skipped += 1;
                    println!(
                        "skipped  line {line}, style {style:?}: you already have a preset {name} (--force replaces it)"
                    );
                }
                Err(e) => {
                    skipped += 1;
                    println!("skipped  line {line}, style {style:?}: {e}");
                }
            },
            StyleRow::Skipped {
                line,
                style,
                reason,
            } => {
                skipped += 1;
                println!("skipped  line {line}, style {style:?}: {reason}");
            }
        }
    }
    println!("{imported} imported, {skipped} skipped");
    Ok(ExitCode::SUCCESS)
}

/// What a new preset starts as in the editor.
fn template(name: &str) -> String {
    format!(
        "# easel preset {name:?}. Set only what this preset should change; leave the rest out.\n\
         # In prompts, {{prompt}} marks where your prompt goes; without it, your prompt comes\n\
         # first and this one is added after \", \".\n\
         schema_version = {PRESET_SCHEMA_VERSION}\n\
         description = \"\"\n\
         tags = []\n\
         prompt = \"{{prompt}}\"\n\
         negative_prompt = \"\"\n\
         # model = \"models/sd15\"\n\
         # sampler = \"euler_a\"   # ddim, euler, euler_a\n\
         # steps = 20\n\
         # cfg = 7.5\n\
         # seed = 42\n\
         # width = 512\n\
         # height = 512\n\
         # batch_size = 1\n"
    )
}

fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".into())
}

/// Runs the editor on `path`; through the shell, so EDITOR="code --wait" works.
fn run_editor(editor: &str, path: &Path) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$@\""))
        .arg(editor)
        .arg(path)
        .status()
}

fn edit(store: &PresetStore, name: &str, warned: &mut Warned) -> Result<ExitCode> {
    let path = store.user_path(name)?;
    let base = store.edit_base(name)?;
    let start: Vec<u8> = match &base {
        EditBase::User(bytes) => bytes.clone(),
        EditBase::BuiltIn(text) => text.as_bytes().to_vec(),
        EditBase::New => template(name).into_bytes(),
    };
    // The editor works on a copy: the preset changes in one atomic step, under the lock.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("easel-preset-{name}-"))
        .suffix(".toml")
        .tempfile()
        .context("cannot make a temporary file to edit")?;
    tmp.write_all(&start)?;
    tmp.flush()?;
    let editor = editor();
    let status = run_editor(&editor, tmp.path());
    let edited = std::fs::read(tmp.path()).context("cannot read the edited file back")?;
    match status {
        Ok(s) if s.success() => {}
        other => {
            let why = match other {
                Ok(s) => match s.code() {
                    Some(code) => format!("exited with status {code}"),
                    None => format!("was stopped ({s})"),
                },
                Err(e) => format!("could not start: {e}"),
            };
            let kept = if edited != start {
                let (_, kept) = tmp.keep().map_err(|e| e.error)?;
                format!("; your text is kept in {}", kept.display())
            } else {
                String::new()
            };
            bail!("the editor ({editor}) {why}, so {name} was left unchanged{kept}. Set $VISUAL or $EDITOR to the editor you use");
        }
    }
    if edited == start {
        println!("no changes to {name}");
        return Ok(ExitCode::SUCCESS);
    }
    let label = path.display().to_string();
    let parsed = match std::str::from_utf8(&edited) {
        Ok(text) => Preset::parse(text, &label),
        Err(_) => Err(PresetError::Invalid(format!(
            "{label}: this is not UTF-8 text; save the file as UTF-8"
        ))),
    };
    let saved = store.finish_edit(name, &base, &edited)?;
    match parsed {
        Ok(_) => {
            println!("saved preset {name}: {}", saved.path.display());
            report_saved(name, &saved);
            if let Ok(entry) = store.get(name) {
                warned.unknown_fields(&entry);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "your text is saved as it is, but easel skips this preset until it parses: fix it with `easel preset edit {name}`"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The `--preset` layer of `easel generate`: `below` (model defaults aside, e.g. a `--from`
/// image's settings) < the named presets, in order < `flags`. Prompts are styled, not replaced:
/// see `presets::resolve`. Prints the presets used (unless `quiet`) and unknown-field warnings.
pub fn apply_presets(
    names: &[String],
    below: &RecipePatch,
    flags: &RecipePatch,
    quiet: bool,
) -> Result<RecipePatch> {
    let mut out = below.clone();
    if names.is_empty() {
        out.layer(flags);
        return Ok(out);
    }
    let store = open_store()?;
    let (patch, stack) = crate::presets::apply_named(&store, names, below, flags)?;
    let mut warned = Warned::default();
    for entry in &stack {
        warned.unknown_fields(entry);
    }
    if !quiet {
        eprintln!("presets: {}", names.join(", "));
    }
    Ok(patch)
}

/// Fills what the flags of `easel generate` leave unset from its `--preset`s and returns the
/// prompt to render.
pub fn apply_to_generate(args: &mut GenerateArgs, prompt: String) -> Result<String> {
    if args.presets.is_empty() {
        return Ok(prompt);
    }
    let flags = RecipePatch {
        model: args.model.as_ref().map(|m| m.display().to_string()),
        prompt: Some(prompt),
        negative_prompt: args.negative.clone(),
        sampler: args.sampler.map(|c| c.kind),
        // check_args has refused a sampler name and --schedule that disagree.
        schedule: crate::cli::generate::schedule_of(args).ok().flatten(),
        timestep_spacing: args.timestep_spacing,
        steps: args.steps,
        cfg: args.cfg,
        seed: args.seed,
        width: args.width,
        height: args.height,
        batch_size: args.batch,
        clip_skip: args.clip_skip,
        guidance_rescale: args.guidance_rescale,
        ..RecipePatch::default()
    };
    let r = apply_presets(&args.presets, &RecipePatch::default(), &flags, args.json)?;
    args.model = r.model.map(PathBuf::from);
    args.negative = r.negative_prompt;
    args.sampler = r.sampler.map(Into::into);
    args.schedule = r.schedule;
    args.timestep_spacing = r.timestep_spacing;
    args.steps = r.steps;
    args.cfg = r.cfg;
    args.seed = r.seed;
    args.width = r.width;
    args.height = r.height;
    args.batch = r.batch_size;
    args.clip_skip = r.clip_skip;
    args.guidance_rescale = r.guidance_rescale;
    Ok(r.prompt.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: PresetCommand,
    }

    #[test]
    fn flags_become_a_patch() {
        let w = Wrap::try_parse_from([
            "x",
            "save",
            "look",
            "-p",
            "{prompt}, film",
            "--sampler",
            "Euler a",
            "-s",
            "30",
            "-W",
            "640",
            "--tag",
            "a",
            "--tag",
            "b",
        ])
        .unwrap();
        let PresetCommand::Save(s) = w.cmd else {
            panic!()
        };
        let p = s.recipe.to_patch();
        assert_eq!(p.prompt.as_deref(), Some("{prompt}, film"));
        assert_eq!(p.sampler, Some(SamplerKind::EulerAncestral));
        assert_eq!((p.steps, p.width, p.height), (Some(30), Some(640), None));
        assert_eq!(s.tags, ["a", "b"]);
        assert!(check_patch(&p).is_ok());
        let bad = RecipePatch {
            steps: Some(0),
            ..p
        };
        assert!(check_patch(&bad).unwrap_err().to_string().contains("steps"));
    }

    #[test]
    fn without_presets_the_flags_layer_over_what_is_below() {
        let below = RecipePatch {
            prompt: Some("from an image".into()),
            steps: Some(40),
            ..Default::default()
        };
        let flags = RecipePatch {
            steps: Some(8),
            ..Default::default()
        };
        let r = apply_presets(&[], &below, &flags, true).unwrap();
        assert_eq!(r.prompt.as_deref(), Some("from an image"));
        assert_eq!(r.steps, Some(8));
    }

    #[test]
    fn new_preset_template_parses_and_changes_nothing() {
        let p = Preset::parse(&template("x"), "template").unwrap();
        let flags = RecipePatch {
            prompt: Some("a fox".into()),
            negative_prompt: Some("blur".into()),
            ..Default::default()
        };
        let r = crate::presets::resolve(&RecipePatch::default(), &[&p], &flags);
        assert_eq!(r, flags);
        assert!(p.extra.is_empty());
    }
}
