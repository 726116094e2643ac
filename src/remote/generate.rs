//! `easel generate --remote HOST`: the plan's images rendered by a worker on the host, saved
//! here with their recipes, with the progress `easel generate` shows for a local render.
use super::protocol::HostFiles;
use super::RemoteWorker;
use crate::cli::generate::GenerateArgs;
use crate::cli::interrupt::{self, CANCELLED_EXIT};
use crate::cli::plan::{Plan, SheetPlan};
use crate::cli::progress::Reporter;
use crate::engine::pipeline::{Image, Progress};
use crate::output::naming::{self, OutputTarget};
use crate::paths::Paths;
use crate::worker::{Event, Job};
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The flags that name files on the host, as given (the host resolves and checks them).
fn host_files(args: &GenerateArgs) -> HostFiles {
    let given = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    HostFiles {
        vae: given(&args.vae),
        model_config: given(&args.model_config),
        embeddings: given(&args.embeddings),
        fast_decoder: given(&args.memory.fast_decoder),
        preview_decoder: None,
    }
}

pub fn run(args: &GenerateArgs, plan: &Plan) -> Result<ExitCode> {
    let target = OutputTarget::from_arg(args.out.as_deref())?;
    let history = Paths::discover().ok().map(|p| p.history());
    let cancel = interrupt::install().map_err(anyhow::Error::msg)?;
    let Some(mut options) = args.remote.options(target.dir(), history) else {
        bail!("--remote needs a host");
    };
    options.device = Some(args.device.to_string());
    options.dtype = Some(args.dtype.to_string());
    options.memory = args.memory.requested();
    options.host_files = host_files(args);
    eprintln!("connecting to {}", options.host);
    let worker = RemoteWorker::connect(&options)?;
    eprintln!("{}", worker.summary());
    let total = plan.jobs.len();
    for job in &plan.jobs {
        let id = job.number as u64;
        if let OutputTarget::File(base) = &target {
            // As a local run names them: name-1.png, ... when several or with a sheet.
            let n = u32::try_from(job.number).unwrap_or(u32::MAX);
            let count = u32::try_from(total).unwrap_or(u32::MAX);
            let count = if total > 1 || plan.sheet.is_some() {
                count.max(2)
            } else {
                1
            };
            worker.set_file(id, naming::file_for_index(base, n, count));
        }
        worker
            .submit(Job {
                id,
                patch: job.patch.clone(),
                count: 1,
                loras: args.loras.clone(),
                ..Default::default()
            })
            .map_err(anyhow::Error::msg)?;
    }
    let mut seeds = vec![0u64; total];
    let mut images: Vec<Option<Image>> = vec![None; total];
    let mut paths: Vec<Option<PathBuf>> = vec![None; total];
    let (mut ended, mut written, mut cancelled) = (0, 0, false);
    let mut reporter: Option<Reporter> = None;
    let mut cancel_sent = false;
    let mut preview = args
        .preview
        .then(|| crate::cli::preview::Preview::new(args.graphics));
    let outcome = loop {
        if ended == total {
            break Ok(());
        }
        if cancel.load(Ordering::SeqCst) && !cancel_sent {
            cancel_sent = true;
            (0..total as u64).for_each(|id| worker.cancel(id));
        }
        let Some(event) = worker.wait_event(Duration::from_millis(100)) else {
            continue;
        };
        let index = |id: u64| usize::try_from(id).ok().filter(|&i| i < total);
        match event {
            Event::Loading { model } => eprintln!("loading {model} on {}", worker.host()),
            Event::Loaded {
                device,
                dtype,
                seconds,
                ..
            } => eprintln!("loaded on {device} ({dtype}) in {seconds:.1} s"),
            Event::Started { id, seed } => {
                if let Some(i) = index(id) {
                    seeds[i] = seed;
                    if !args.json {
                        let counter = if total > 1 {
                            format!("[{}/{total}] ", i + 1)
                        } else {
                            String::new()
                        };
                        eprintln!("{counter}seed {seed} on {}", worker.host());
                    }
                }
            }
            Event::Progress { step, steps, .. } => reporter
                .get_or_insert_with(|| Reporter::new(steps, std::io::stderr().is_terminal()))
                .step(&Progress {
                    step,
                    steps,
                    timestep: 0.0,
                    preview: None,
                }),
            Event::Image {
                id,
                path,
                picture,
                seconds,
            } => {
                if let Some(r) = reporter.take() {
                    r.finish();
                }
                written += 1;
                let i = index(id).unwrap_or(0);
                let image = Image {
                    width: picture.width,
                    height: picture.height,
                    rgb: picture.rgb,
                };
                if args.json {
                    let report = serde_json::json!({
                        "path": path.display().to_string(),
                        "seed": seeds[i],
                        "index": i,
                        "width": picture.width,
                        "height": picture.height,
                        "host": worker.host(),
                        "seconds": seconds,
                    });
                    println!("{report}");
                } else {
                    if let Some(preview) = &mut preview {
                        preview.show(&image);
                    }
                    println!("{}", path.display());
                }
                if plan.sheet.is_some() {
                    images[i] = Some(image);
                }
                paths[i] = Some(path);
            }
            Event::Note { message } => eprintln!("note: {message}"),
            Event::LoadStage { .. } => {}
            Event::Done { .. } => ended += 1,
            Event::Cancelled { .. } => {
                ended += 1;
                cancelled = true;
            }
            // Ctrl-C reaches ssh too, which ends the connection: that is the cancel asked for.
            Event::Failed { .. } if cancel.load(Ordering::SeqCst) => {
                ended += 1;
                cancelled = true;
            }
            Event::Failed { message, .. } => break Err(anyhow::anyhow!("{message}")),
        }
    };
    if let Some(r) = reporter.take() {
        r.finish();
    }
    worker.shutdown_within(Duration::from_secs(5));
    outcome?;
    if cancelled {
        if written == 0 {
            eprintln!("cancelled: no image written");
        } else {
            eprintln!("cancelled: {written} finished image(s) kept, the rest skipped");
        }
        return Ok(ExitCode::from(CANCELLED_EXIT));
    }
    if let Some(sheet) = &plan.sheet {
        write_sheet(args.json, &target, sheet, &images, &paths, seeds[0])?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The matrix or grid's contact sheet, as a local run writes it.
fn write_sheet(
    json: bool,
    target: &OutputTarget,
    layout: &SheetPlan,
    images: &[Option<Image>],
    paths: &[Option<PathBuf>],
    seed: u64,
) -> Result<()> {
    let stamp = naming::stamp(chrono::Local::now());
    let (path, _) = crate::cli::sheet::draw_and_save(target, &stamp, seed, layout, images, paths)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"sheet": path.display().to_string()})
        );
    } else {
        println!("{}", path.display());
    }
    Ok(())
}
