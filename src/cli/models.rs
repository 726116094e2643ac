//! `easel models ...`: list, pull, add, rm, info, default. The library (src/models) does the
//! work; this file parses, asks, and draws the download progress.
use crate::models::listing::{self, Row, Status};
use crate::models::pull::{self, FileOutcome, PullOptions, PullPlan, PullProgress};
use crate::models::remove::{self, Removal};
use crate::models::{human_bytes, Catalog, Locations, ModelError, Registry};
use anyhow::{bail, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  easel models list
  easel models pull sdxl-turbo
  easel generate \"a red fox in the snow\" --model sdxl-turbo
  easel models add ~/Downloads/dreamshaper_8.safetensors --name dreamshaper
  easel models default dreamshaper
  easel models info sd15
  easel models rm sdxl-turbo

Catalog models are Hugging Face repositories pinned at a commit (models/catalog.toml in
easel's source; add your own entries in <config>/catalog.toml in the same format). `pull`
downloads only their safetensors weights and configs into the Hugging Face cache shared with
Python tools, checks every file against the hub's hash, and resumes an interrupted download.
Environment: HF_HOME or HF_HUB_CACHE (where the cache is), HF_ENDPOINT (a mirror, e.g.
https://hf-mirror.com), HF_TOKEN (gated models). Without network, `add` a model downloaded
elsewhere. Anywhere a model is asked for (--model, presets, the studio), a catalog name, a
registered name or a path works.";

#[derive(Debug, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every catalog and registered model: name, version, size, location, which is the default.
    #[command(visible_alias = "ls")]
    List {
        /// One JSON object per model per line instead.
        #[arg(long)]
        json: bool,
    },
    /// Download a catalog model (resuming an interrupted download) and verify its files.
    Pull {
        name: String,
        /// Hash the files already downloaded too, fetching again any that do not match.
        #[arg(long)]
        verify: bool,
    },
    /// Register a diffusers folder or a single-file .safetensors checkpoint under a name.
    Add {
        path: PathBuf,
        /// The name to use [default: from the folder or file name].
        #[arg(long)]
        name: Option<String>,
    },
    /// Forget a registered model, or delete the files a pull downloaded (asks first).
    #[command(visible_alias = "remove")]
    Rm {
        name: String,
        /// Delete without asking.
        #[arg(long, short)]
        yes: bool,
    },
    /// Everything about one model: source, revision, files, location, status.
    Info {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Set the model used when none is named (without NAME: print it; `--clear` unsets it).
    Default {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        clear: bool,
    },
}

pub fn run(args: ModelsArgs) -> Result<ExitCode> {
    let loc = Locations::discover()?;
    match args.command {
        ModelsCommand::List { json } => list(&loc, json),
        ModelsCommand::Pull { name, verify } => pull_model(&loc, &name, verify),
        ModelsCommand::Add { path, name } => {
            let m = crate::models::local::add(&loc, &path, name.as_deref())?;
            println!(
                "added {} ({}, {}): {}",
                m.name,
                m.version.as_deref().unwrap_or("?"),
                m.size.map(human_bytes).unwrap_or_else(|| "?".into()),
                m.path.display()
            );
            println!("use it with: easel generate \"...\" --model {}", m.name);
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Rm { name, yes } => rm(&loc, &name, yes),
        ModelsCommand::Info { name, json } => {
            let row = listing::row(&loc, &name)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&row)?))?;
            } else {
                emit(&info_text(&row)?)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Default { name, clear } => default(&loc, name, clear),
    }
}

fn list(loc: &Locations, json: bool) -> Result<ExitCode> {
    let rows = listing::rows(loc)?;
    let mut out = String::new();
    if json {
        for r in &rows {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        emit(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4) + 2;
    let ver_w = rows
        .iter()
        .map(|r| r.version.as_deref().unwrap_or("?").len())
        .max()
        .unwrap_or(7)
        .max(7)
        + 2;
    writeln!(
        out,
        "  {:name_w$}{:ver_w$}{:>10}  {:11}LOCATION",
        "NAME", "VERSION", "SIZE", "STATUS"
    )?;
    for r in &rows {
        let location = match &r.location {
            Some(p) => p.display().to_string(),
            None => r.repo.clone().unwrap_or_default(),
        };
        writeln!(
            out,
            "{} {:name_w$}{:ver_w$}{:>10}  {:11}{location}",
            if r.default { "*" } else { " " },
            r.name,
            r.version.as_deref().unwrap_or("?"),
            size_text(r),
            r.status.label(),
        )?;
    }
    if rows.iter().any(|r| r.default) {
        writeln!(out, "\n* the default model (used when no --model is given)")?;
    } else {
        writeln!(
            out,
            "\nno default model: set one with `easel models default NAME`"
        )?;
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn size_text(r: &Row) -> String {
    match r.size {
        Some(s) if r.size_exact => human_bytes(s),
        Some(s) => format!(">{}", human_bytes(s)),
        None => "?".into(),
    }
}

fn info_text(r: &Row) -> Result<String> {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| writeln!(out, "{k:12}{v}");
    line("name", &r.name)?;
    if let Some(t) = &r.title {
        line("title", t)?;
    }
    line("version", r.version.as_deref().unwrap_or("?"))?;
    if let Some(px) = r.resolution {
        line("resolution", &format!("{px}x{px}"))?;
    }
    line("status", r.status.label())?;
    line("size", &size_text(r))?;
    if let Some(repo) = &r.repo {
        line("repository", repo)?;
    }
    if let Some(rev) = &r.revision {
        line("revision", rev)?;
    }
    if let Some(c) = r
        .commit
        .as_ref()
        .filter(|c| Some(*c) != r.revision.as_ref())
    {
        line("commit", c)?;
    }
    if let Some(l) = &r.license {
        line("license", l)?;
    }
    if let Some(p) = &r.location {
        line("location", &p.display().to_string())?;
    }
    line("defined in", &r.defined_in)?;
    line("default", if r.default { "yes" } else { "no" })?;
    if !r.files.is_empty() {
        writeln!(out, "files")?;
        for (path, size) in &r.files {
            let size = size.map(human_bytes).unwrap_or_else(|| "?".into());
            writeln!(out, "  {size:>10}  {path}")?;
        }
    }
    match r.status {
        Status::NotPulled => writeln!(out, "\ndownload it with: easel models pull {}", r.name)?,
        Status::Partial => writeln!(
            out,
            "\nfinish the download with: easel models pull {}",
            r.name
        )?,
        Status::Missing if r.source == "catalog" => writeln!(
            out,
            "\nfetch the missing files with: easel models pull {}",
            r.name
        )?,
        _ => {}
    }
    Ok(out)
}

fn pull_model(loc: &Locations, name: &str, verify: bool) -> Result<ExitCode> {
    let catalog = Catalog::load(Some(&loc.user_catalog))?;
    let entry = match catalog.get(name).or_else(|| catalog.by_repo(name)) {
        Some(e) => e.clone(),
        None => {
            let registry = Registry::load(&loc.registry)?;
            if registry.get(name).is_some() {
                bail!("{name} is a model you added from disk: there is nothing to download");
            }
            let known: Vec<String> = catalog.entries.iter().map(|e| e.name.clone()).collect();
            return Err(ModelError::Unknown {
                name: name.to_string(),
                suggestions: crate::models::suggest::similar(name, &known),
                known,
            }
            .into());
        }
    };
    let config = crate::models::hub::HubConfig::from_env();
    eprintln!(
        "pulling {} ({} at {}) from {}",
        entry.name,
        entry.repo,
        short(&entry.revision),
        config.endpoint
    );
    let mut display = Display::new(std::io::stderr().is_terminal());
    let record = pull::pull(
        &entry,
        &config,
        &loc.pulls,
        PullOptions { verify },
        &mut display,
    )?;
    display.finish();
    let path = crate::models::pulled_path(&entry, &record);
    eprintln!(
        "{} is ready ({}, all files verified): {}",
        entry.name,
        human_bytes(record.total_size()),
        path.display()
    );
    eprintln!("use it with: easel generate \"...\" --model {}", entry.name);
    Ok(ExitCode::SUCCESS)
}

fn short(rev: &str) -> &str {
    if rev.len() == 40 {
        &rev[..10]
    } else {
        rev
    }
}

fn rm(loc: &Locations, name: &str, yes: bool) -> Result<ExitCode> {
    let removal = remove::plan(loc, name)?;
    let question = match &removal {
        Removal::Local { path, .. } => {
            eprintln!(
                "{name} is a model you added; its files stay where they are: {}",
                path.display()
            );
            None
        }
        Removal::Pulled {
            delete,
            bytes,
            kept,
            record,
            ..
        } => {
            if !kept.is_empty() {
                eprintln!(
                    "keeping {} file(s) easel did not download or that other models use: {}",
                    kept.len(),
                    kept.join(", ")
                );
            }
            Some(format!(
                "delete {} file(s), {}, of {name} from {}?",
                delete.len(),
                human_bytes(*bytes),
                record.snapshot.display()
            ))
        }
    };
    if let Some(q) = question {
        if !yes && !confirm(&q)? {
            eprintln!("nothing deleted");
            return Ok(ExitCode::from(1));
        }
    }
    remove::apply(loc, &removal)?;
    eprintln!("removed {name}");
    Ok(ExitCode::SUCCESS)
}

fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} easel asks before deleting: pass --yes to delete without asking");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn default(loc: &Locations, name: Option<String>, clear: bool) -> Result<ExitCode> {
    if clear {
        Registry::update(&loc.registry, |r| {
            r.default = None;
            Ok(())
        })?;
        println!("no default model");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(name) = name else {
        match Registry::load(&loc.registry)?.default {
            Some(d) => println!("{d}"),
            None => eprintln!("no default model: set one with `easel models default NAME`"),
        }
        return Ok(ExitCode::SUCCESS);
    };
    let row = listing::row(loc, &name)?;
    Registry::update(&loc.registry, |r| {
        r.default = Some(row.name.clone());
        Ok(())
    })?;
    println!("default model: {}", row.name);
    if row.status == Status::NotPulled || row.status == Status::Partial {
        println!("it is not downloaded yet: easel models pull {}", row.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// The pull's progress: one bar over all bytes (speed, ETA) on a terminal, else one line per
/// file as it completes.
struct Display {
    bar: Option<ProgressBar>,
    /// Bytes of the files finished so far (of those to fetch).
    finished: u64,
    file_start: Instant,
    resumed_from: u64,
}

impl Display {
    fn new(terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:30!} [{bar:25}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Self {
            bar,
            finished: 0,
            file_start: Instant::now(),
            resumed_from: 0,
        }
    }

    fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl PullProgress for Display {
    fn planned(&mut self, plan: &PullPlan) {
        let fetch = plan.to_fetch();
        let have = plan.files.iter().filter(|f| f.present).count();
        self.say(&format!(
            "{} files, {} at commit {}; {} to download{}",
            plan.files.len(),
            human_bytes(plan.total()),
            short(&plan.commit),
            human_bytes(fetch),
            if have > 0 {
                format!(", {have} already here")
            } else {
                String::new()
            }
        ));
        if let Some(bar) = &self.bar {
            let len: u64 = plan
                .files
                .iter()
                .filter(|f| !f.present)
                .map(|f| f.size)
                .sum();
            bar.set_length(len);
        }
    }

    fn file_started(&mut self, path: &str, _size: u64, resume_from: u64) {
        self.file_start = Instant::now();
        self.resumed_from = resume_from;
        if let Some(bar) = &self.bar {
            bar.set_message(path.to_string());
            bar.set_position(self.finished + resume_from);
            bar.reset_eta();
        }
    }

    fn file_progress(&mut self, _path: &str, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.finished + done);
        }
    }

    fn file_finished(&mut self, path: &str, size: u64, outcome: FileOutcome) {
        let secs = self.file_start.elapsed().as_secs_f64().max(1e-3);
        let moved = size.saturating_sub(self.resumed_from);
        let speed = format!("{}/s", human_bytes((moved as f64 / secs) as u64));
        let line = match outcome {
            FileOutcome::Present => format!("have     {path} ({}, verified)", human_bytes(size)),
            FileOutcome::Fetched => {
                format!(
                    "fetched  {path} ({} in {secs:.1}s, {speed})",
                    human_bytes(size)
                )
            }
            FileOutcome::Resumed { from } => format!(
                "resumed  {path} from {} ({} in {secs:.1}s, {speed})",
                human_bytes(from),
                human_bytes(size)
            ),
            FileOutcome::Refetched => format!(
                "fetched  {path} again after a bad copy ({} in {secs:.1}s)",
                human_bytes(size)
            ),
        };
        if outcome != FileOutcome::Present {
            self.finished += size;
            if let Some(bar) = &self.bar {
                bar.set_position(self.finished);
            }
        }
        self.resumed_from = 0;
        self.say(&line);
    }

    fn note(&mut self, message: &str) {
        self.say(&format!("note: {message}"));
    }
}
