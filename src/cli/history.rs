//! `easel history`: the images easel has made, newest first, from the history index.
use crate::history::{self, Entry};
use crate::paths::Paths;
use anyhow::{Context, Result};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  easel history --limit 10
  easel history --search fox
  easel history --search sd15 --json | jq -r .path

Every image `easel generate` writes is recorded in history.jsonl in easel's data folder
($EASEL_HOME/data when EASEL_HOME is set): one JSON object per line with time (RFC 3339),
path and recipe. --search matches the prompt, negative prompt, prompt template and model,
ignoring case. --json prints those objects, one per line. Lines that cannot be read are skipped
with a warning and left in the file as they are.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct HistoryArgs {
    /// Only images whose prompt, negative prompt or model contains TEXT (ignoring case).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,

    /// At most N images (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Print the records as JSON, one per line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: HistoryArgs) -> Result<ExitCode> {
    let paths = Paths::discover().map_err(anyhow::Error::msg)?;
    let file = paths.history();
    let found = history::read(&file)
        .with_context(|| format!("cannot read the history {}", file.display()))?;
    for w in &found.warnings {
        eprintln!("warning: {w}");
    }
    let entries = history::select(&found.entries, args.search.as_deref(), args.limit);
    if entries.is_empty() && !args.json {
        match (&args.search, found.entries.is_empty()) {
            (_, true) => eprintln!("no images yet ({} is empty)", file.display()),
            (Some(s), false) => eprintln!("no image matches {s:?}"),
            (None, false) => {}
        }
    }
    for e in &entries {
        if args.json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{}", line(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-28 14:03:22  PATH  seed 7  64x64  euler_a  a red fox in the snow`, the prompt cut
/// to one short line.
pub fn line(e: &Entry) -> String {
    let time = chrono::DateTime::parse_from_rfc3339(&e.time)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| e.time.clone());
    let r = &e.recipe;
    let prompt: String = r.prompt.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = if prompt.chars().count() > 80 {
        prompt.chars().take(79).chain(['…']).collect()
    } else {
        prompt
    };
    format!(
        "{time}  {}  seed {}  {}x{}  {}  {short}",
        e.path, r.seed, r.width, r.height, r.sampler
    )
}
