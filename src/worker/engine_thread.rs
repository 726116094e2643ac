//! The worker thread's loop: load (or keep) the model, render each job's images, report.
use super::{Event, Flags, InitSources, Job, Picture, Placement, Queued, WorkerConfig};
use crate::engine::device::{device_name, kind_name};
use crate::engine::lora::{prompt_tags, LoraSpec};
use crate::engine::models::autoencoder_tiny::AutoencoderTiny;
use crate::engine::pipeline::{Image, LoadOptions, StableDiffusion, TextToImage};
use crate::output::naming::{self, OutputTarget};
use crate::recipe::RecipePatch;
use crate::render;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::PoisonError;
use std::time::Instant;

struct Loaded {
    model: String,
    loras: Vec<LoraSpec>,
    sd: StableDiffusion,
}

pub(super) fn run(
    config: &WorkerConfig,
    jobs: &Receiver<Queued>,
    events: &Sender<Event>,
    flags: &Flags,
) {
    let _guard = tch::no_grad_guard();
    let mut loaded: Option<Loaded> = None;
    for (job, cancel, placement) in jobs.iter() {
        let id = job.id;
        let event = if cancel.load(Ordering::SeqCst) {
            Event::Cancelled {
                id,
                paths: Vec::new(),
            }
        } else {
            // libtorch reports some failures (CUDA out of memory among them) as panics: the job
            // fails with the reason and the worker lives on, with the model loaded afresh.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                crate::fault::worker_job();
                render_job(
                    config,
                    &job,
                    placement.as_ref(),
                    &cancel,
                    &mut loaded,
                    events,
                )
            }));
            match outcome {
                Ok(Ok(Outcome::Done(paths))) => Event::Done { id, paths },
                Ok(Ok(Outcome::Cancelled(paths))) => Event::Cancelled { id, paths },
                Ok(Err(message)) => Event::Failed { id, message },
                Err(payload) => {
                    loaded = None;
                    Event::Failed {
                        id,
                        message: format!(
                            "the engine failed: {} (the model loads again for the next job)",
                            crate::engine::oom::describe_panic(payload.as_ref())
                        ),
                    }
                }
            }
        };
        flags
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if events.send(event).is_err() {
            return;
        }
    }
}

enum Outcome {
    Done(Vec<PathBuf>),
    Cancelled(Vec<PathBuf>),
}

fn render_job(
    config: &WorkerConfig,
    job: &Job,
    placement: Option<&Placement>,
    cancel: &AtomicBool,
    loaded: &mut Option<Loaded>,
    events: &Sender<Event>,
) -> Result<Outcome, String> {
    let model = job
        .patch
        .model
        .clone()
        .filter(|m| !m.trim().is_empty())
        .ok_or("no model: choose one with --model, or in the parameters panel")?;
    let prompt = job.patch.prompt.clone().unwrap_or_default();
    let mut loras: Vec<LoraSpec> = job
        .loras
        .iter()
        .map(|l| LoraSpec {
            path: PathBuf::from(&l.path),
            weight: l.weight,
        })
        .collect();
    loras.extend(resolve_loras(&prompt, config.lora_dir.as_deref())?);
    let sd = ensure_loaded(config, loaded, &model, loras, events)?;
    let seed = match job.patch.seed {
        Some(s) => s,
        None => u64::from(getrandom::u32().map_err(|e| format!("cannot draw a random seed: {e}"))?),
    };
    let _ = events.send(Event::Started { id: job.id, seed });
    let (device, dtype) = (device_name(sd.device()), kind_name(sd.kind()));
    let name = crate::models::display_name(&model).unwrap_or_else(|| sd.name());
    let target = match placement {
        Some(p) if job.count > 1 => {
            return Err(format!(
                "{} can hold one image, not {}: submit one job per image",
                p.path.display(),
                job.count
            ))
        }
        Some(p) => OutputTarget::File(p.path.clone()),
        None => OutputTarget::Dir(config.out_dir.clone()),
    };
    let stamp = naming::stamp(chrono::Local::now());
    let count = job.count.max(1);
    let mut paths = Vec::new();
    for image in 0..count {
        if cancel.load(Ordering::SeqCst) {
            return Ok(Outcome::Cancelled(paths));
        }
        let mut patch = job.patch.clone();
        patch.seed = Some(
            seed.checked_add(u64::from(image))
                .ok_or("the seed is too large for this many images: choose a smaller seed")?,
        );
        // An init image without a chosen size renders at its own, as in `easel generate`.
        let mut sized = reading(&patch, &job.read_from);
        crate::init_files::fill_size(&mut sized).map_err(|e| e.to_string())?;
        (patch.width, patch.height) = (sized.width, sized.height);
        let mut recipe = render::resolve_patch(&patch, &sd.defaults(), &device, dtype)
            .map_err(|e| e.to_string())?;
        recipe.loras = job.loras.clone();
        recipe.vae = config.vae.as_ref().map(|p| p.display().to_string());
        if let Some(p) = placement {
            recipe.prompt_template.clone_from(&p.prompt_template);
        }
        let mut note = |message| {
            let _ = events.send(Event::Note { message });
        };
        let request = TextToImage {
            embeddings: config.embeddings.clone(),
            preview_every: config.preview_every,
            ..recipe.to_request()
        };
        let request = render::with_init(&read_recipe(&recipe, &job.read_from), request, &mut note)
            .map_err(|e| e.to_string())?;
        let start = Instant::now();
        let id = job.id;
        let mut on_step = |p: &crate::engine::pipeline::Progress| {
            let _ = events.send(Event::Progress {
                id,
                image,
                images: count,
                step: p.step,
                steps: p.steps,
                preview: p.preview.as_ref().map(picture),
            });
        };
        let rendered = render::render_request(
            sd,
            &request,
            &recipe,
            &target,
            &stamp,
            &name,
            &mut on_step,
            cancel,
        )
        .map_err(|e| format!("the render failed: {e}"))?;
        let Some(rendered) = rendered else {
            return Ok(Outcome::Cancelled(paths));
        };
        for message in &rendered.output.notes {
            let _ = events.send(Event::Note {
                message: message.clone(),
            });
        }
        if let Some(history) = &config.history {
            // The image is written; a history that cannot be updated is worth a note, not a failure.
            if let Err(message) = render::record_history(history, &rendered.path, &recipe) {
                let _ = events.send(Event::Note { message });
            }
        }
        let _ = events.send(Event::Image {
            id,
            path: rendered.path.clone(),
            picture: picture(&rendered.image),
            seconds: start.elapsed().as_secs_f64(),
        });
        paths.push(rendered.path);
    }
    Ok(Outcome::Done(paths))
}

/// The patch as the files are read: uploads in place of the recorded paths.
fn reading(patch: &RecipePatch, from: &InitSources) -> RecipePatch {
    let mut patch = patch.clone();
    if let Some(p) = &from.init_image {
        patch.init_image = Some(p.display().to_string());
    }
    if let Some(p) = &from.mask {
        patch.mask = Some(p.display().to_string());
    }
    patch
}

/// The recipe whose init files are read: the one saved keeps the paths the client gave.
fn read_recipe(recipe: &crate::recipe::Recipe, from: &InitSources) -> crate::recipe::Recipe {
    let mut recipe = recipe.clone();
    if let Some(init) = &mut recipe.init {
        if let Some(p) = &from.init_image {
            init.image = p.display().to_string();
        }
        if let (Some(mask), Some(p)) = (&mut init.mask, &from.mask) {
            *mask = p.display().to_string();
        }
    }
    recipe
}

fn ensure_loaded<'a>(
    config: &WorkerConfig,
    loaded: &'a mut Option<Loaded>,
    model: &str,
    loras: Vec<LoraSpec>,
    events: &Sender<Event>,
) -> Result<&'a StableDiffusion, String> {
    let reuse = loaded
        .as_ref()
        .is_some_and(|l| l.model == model && l.loras == loras);
    if !reuse {
        // Free the old model first: two at once may not fit.
        *loaded = None;
        let _ = events.send(Event::Loading {
            model: model.to_string(),
        });
        let start = Instant::now();
        let device = config.device.resolve().map_err(|e| e.to_string())?;
        let kind = config.dtype.resolve(device);
        // Offload is decided here, where the device is known.
        let memory = config.memory.on(device);
        let options = LoadOptions {
            loras: loras.clone(),
            vae: config.vae.clone(),
            config: config.model_config.clone(),
            memory,
        };
        let path = crate::models::resolve(model).map_err(|e| e.to_string())?;
        let mut sd = StableDiffusion::load_with_progress(&path, device, kind, &options, &mut |p| {
            let _ = events.send(Event::LoadStage {
                component: p.component.to_string(),
                progress: p.fraction,
            });
        })
        .map_err(|e| format!("cannot load the model {model}: {e}"))?;
        sd.set_memory_options(memory);
        if let Some(dir) = &config.fast_decoder {
            sd.load_fast_decoder(dir)
                .map_err(|e| format!("cannot use the fast decoder {}: {e}", dir.display()))?;
        }
        if let Some(dir) = &config.preview_decoder {
            AutoencoderTiny::load(dir, device, kind)
                .and_then(|taesd| sd.set_preview_decoder(Some(taesd)))
                .map_err(|e| format!("cannot use the preview decoder {}: {e}", dir.display()))?;
        }
        let _ = events.send(Event::Loaded {
            model: model.to_string(),
            device: device_name(sd.device()),
            dtype: kind_name(sd.kind()).to_string(),
            seconds: start.elapsed().as_secs_f64(),
            native: (
                u32::try_from(sd.defaults().width).unwrap_or(0),
                u32::try_from(sd.defaults().height).unwrap_or(0),
            ),
        });
        *loaded = Some(Loaded {
            model: model.to_string(),
            loras,
            sd,
        });
    }
    loaded
        .as_ref()
        .map(|l| &l.sd)
        .ok_or_else(|| "the model is not loaded".to_string())
}

fn resolve_loras(prompt: &str, dir: Option<&Path>) -> Result<Vec<LoraSpec>, String> {
    prompt_tags(prompt)
        .into_iter()
        .map(|tag| {
            let dir = dir.ok_or_else(|| {
                format!(
                    "the prompt asks for <lora:{}>, but easel has no config folder to look in: set EASEL_HOME",
                    tag.name
                )
            })?;
            let path = dir.join(format!("{}.safetensors", tag.name));
            if path.is_file() {
                Ok(LoraSpec {
                    path,
                    weight: tag.weight,
                })
            } else {
                Err(format!(
                    "the prompt asks for <lora:{}>, but {} does not exist: put the LoRA there",
                    tag.name,
                    path.display()
                ))
            }
        })
        .collect()
}

fn picture(image: &Image) -> Picture {
    Picture {
        width: image.width,
        height: image.height,
        rgb: image.rgb.clone(),
    }
}
