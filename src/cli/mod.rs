//! The command line: clap definitions and dispatch. Errors leave as anyhow at this edge.
pub mod batch;
pub mod generate;
pub mod history;
pub mod info;
pub mod interrupt;
pub mod memory_flags;
pub mod models;
pub mod plan;
pub mod preset;
pub mod preview;
pub mod progress;
pub mod report;
pub mod sheet;
pub mod text_arg;
pub mod tui;
pub mod worker;

use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "easel",
    version,
    about = "A terminal image-generation studio: Stable Diffusion on libtorch",
    after_help = "With no command on a terminal, easel opens the studio (`easel tui`). \
                  Start with `easel tui --help` or `easel generate --help`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render images from a prompt and write them as PNGs that carry their recipe.
    Generate(Box<generate::GenerateArgs>),
    /// Render a plan of many images (TOML): resumable, shardable (--shard K/N), one worker per
    /// device (--devices); `easel batch status` reports what is done.
    Batch(Box<batch::BatchArgs>),
    /// Print the recipe a PNG carries (made by easel, AUTOMATIC1111 or stable-diffusion.cpp).
    Info(info::InfoArgs),
    /// List generated images, newest first.
    History(history::HistoryArgs),
    /// Named, stackable recipes: list, show, save, edit, rm, rename, export, import.
    Preset(preset::PresetArgs),
    /// The studio: write, tune, render and compare in the terminal (bare `easel` opens it too).
    Tui(Box<tui::TuiArgs>),
    /// Models by name: list, pull (from Hugging Face), add, rm, info, default.
    Models(models::ModelsArgs),
    /// Serve renders over stdin/stdout for `--remote` (what `ssh HOST easel worker --stdio` runs).
    Worker(worker::WorkerArgs),
}

/// Runs easel with the process's arguments.
pub fn run() -> anyhow::Result<ExitCode> {
    run_from(std::env::args_os())
}

pub fn run_from<I, T>(args: I) -> anyhow::Result<ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors to stderr with 2.
            let _ = e.print();
            return Ok(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)));
        }
    };
    match cli.command {
        Some(Command::Generate(args)) => generate::run(*args),
        Some(Command::Batch(args)) => batch::run(*args),
        Some(Command::Info(args)) => info::run(args),
        Some(Command::History(args)) => history::run(args),
        Some(Command::Preset(args)) => preset::run(args),
        Some(Command::Tui(args)) => tui::run(*args),
        Some(Command::Models(args)) => models::run(args),
        Some(Command::Worker(args)) => worker::run(args),
        None => {
            use std::io::IsTerminal;
            // The studio needs a terminal both ways; in a pipe or a script, say what there is.
            if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                if let Some(Command::Tui(args)) = Cli::try_parse_from(["easel", "tui"])?.command {
                    return tui::run(*args);
                }
            }
            Cli::command().print_help()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `error: ...` followed by each cause not already spelled out by the message above it.
pub fn format_error(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            out.push_str(&format!("\n  caused by: {text}"));
        }
        shown = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn errors_show_their_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io)
            .context("cannot read unet/config.json")
            .context("cannot load the model in m");
        assert_eq!(
            format_error(&err),
            "error: cannot load the model in m\n  caused by: cannot read unet/config.json\n  \
             caused by: no such file"
        );
        let inner = crate::output::OutputError::Write {
            path: "a.png".into(),
            source: std::io::Error::other("disk full"),
        };
        let err = anyhow::Error::new(inner);
        assert_eq!(format_error(&err), "error: cannot write a.png: disk full");
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("plain"));
        assert_eq!(
            format_error(&err.context("top").unwrap_err()),
            "error: top\n  caused by: plain"
        );
    }

    #[test]
    fn no_subcommand_is_not_an_error() {
        assert!(Cli::try_parse_from(["easel"]).unwrap().command.is_none());
        Cli::command().debug_assert();
    }
}
