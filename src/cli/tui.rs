//! `easel tui` (and bare `easel` on a terminal): the studio.
use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::tui::images::Graphics;
use crate::tui::TuiOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, clap::Args)]
pub struct TuiArgs {
    /// The model to render with: a diffusers folder or a single-file `.safetensors` checkpoint
    /// (otherwise the one from the last session).
    #[arg(short, long, value_name = "PATH")]
    pub model: Option<PathBuf>,

    /// Apply a preset at start; repeat to stack them.
    #[arg(long = "preset", value_name = "NAME")]
    pub presets: Vec<String>,

    /// How to draw images: probe the terminal (auto), or force a protocol.
    #[arg(long, value_enum, default_value = "auto")]
    pub graphics: Graphics,

    /// Folder for the rendered PNGs.
    #[arg(long, value_name = "DIR", default_value = "outputs")]
    pub out: PathBuf,

    /// Where to run: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,

    /// Number format: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16 or bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeChoice,

    /// A model to offer when none is chosen yet (scripts/run passes the tiny test model).
    #[arg(long, value_name = "PATH", hide = true)]
    pub demo_model: Option<PathBuf>,

    /// Draw the step previews with TAESD (a diffusers AutoencoderTiny folder: madebyollin/taesd
    /// for SD 1.x/2.x, taesdxl for SDXL): full size and close to the final image, for a few
    /// milliseconds a step. Without it, previews are a cheap latent-to-colour map. With
    /// --remote, a folder on the host.
    #[arg(long, value_name = "DIR")]
    pub preview_decoder: Option<PathBuf>,

    #[command(flatten)]
    pub memory: crate::cli::memory_flags::MemoryArgs,

    #[command(flatten)]
    pub remote: crate::remote::RemoteArgs,
}

pub fn run(args: TuiArgs) -> anyhow::Result<ExitCode> {
    crate::tui::run(TuiOptions {
        model: args.model,
        presets: args.presets,
        graphics: args.graphics,
        demo_model: args.demo_model,
        out_dir: args.out,
        device: args.device,
        dtype: args.dtype,
        remote: args.remote,
        preview_decoder: args.preview_decoder,
        memory: args.memory,
    })
    .map_err(anyhow::Error::msg)?;
    Ok(ExitCode::SUCCESS)
}
