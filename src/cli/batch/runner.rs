//! Renders the images a run has to make: one worker (engine thread) per device, one image in
//! flight per worker, the queue choosing which (grouped by model). Each finished image is
//! recorded in the manifest after its PNG is in place; each failure too, with its reason.
use super::display::{Counts, Display};
use super::expand::PlannedImage;
use super::manifest::{self, Record, Status};
use super::queue::Queue;
use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::engine::lora::prompt_tags;
use crate::worker::{Event, Job, Placement, Worker, WorkerConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

pub struct RunConfig {
    pub out_dir: PathBuf,
    pub devices: Vec<DeviceChoice>,
    pub dtype: DtypeChoice,
    pub embeddings: Vec<PathBuf>,
    pub lora_dir: Option<PathBuf>,
    pub history: Option<PathBuf>,
    /// `K/N`, recorded with each image.
    pub shard: Option<String>,
    pub memory: crate::cli::memory_flags::MemoryArgs,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub rendered: usize,
    /// Path and reason of each failed image.
    pub failed: Vec<(String, String)>,
    /// Images not started because of a stop request.
    pub left: usize,
}

struct Slot {
    worker: Worker,
    /// What it has loaded (or is loading): the group key of its last image.
    group: Option<String>,
    /// The image in flight.
    busy: Option<usize>,
    steps: usize,
    load_s: f64,
    device: String,
}

/// What a worker must load for an image: the model and its LoRAs (flags and prompt tags).
pub fn group_key(image: &PlannedImage) -> String {
    let tags: Vec<String> = prompt_tags(image.patch.prompt.as_deref().unwrap_or_default())
        .into_iter()
        .map(|t| format!("{}:{}", t.name, t.weight))
        .collect();
    let loras: Vec<String> = image
        .loras
        .iter()
        .map(|l| format!("{}:{}", l.path, l.weight))
        .collect();
    format!("{}\n{}\n{}", image.model(), loras.join(","), tags.join(","))
}

pub fn render(
    images: &[PlannedImage],
    config: &RunConfig,
    display: &mut Display,
    stop: &AtomicI32,
) -> Result<Outcome> {
    let mut slots = Vec::new();
    for device in &config.devices {
        let worker = Worker::spawn(WorkerConfig {
            device: *device,
            dtype: config.dtype,
            out_dir: config.out_dir.clone(),
            history: config.history.clone(),
            embeddings: config.embeddings.clone(),
            lora_dir: config.lora_dir.clone(),
            preview_every: 0,
            preview_decoder: None,
            memory: config.memory.requested(),
            fast_decoder: config.memory.fast_decoder.clone(),
            vae: None,
            model_config: None,
        })
        .context("cannot start a render worker")?;
        slots.push(Slot {
            worker,
            group: None,
            busy: None,
            steps: 0,
            load_s: 0.0,
            device: device.to_string(),
        });
    }
    let mut queue = Queue::new(
        images
            .iter()
            .enumerate()
            .map(|(i, img)| (i, group_key(img))),
    );
    let mut outcome = Outcome::default();
    let host = manifest::host_name();
    loop {
        if stop.load(Ordering::SeqCst) == 0 {
            for w in 0..slots.len() {
                if slots[w].busy.is_some() {
                    continue;
                }
                let others: Vec<&str> = slots
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != w)
                    .filter_map(|(_, s)| s.group.as_deref())
                    .collect();
                let Some((index, key)) = queue.next(slots[w].group.as_deref(), &others) else {
                    break;
                };
                let image = &images[index];
                let job = Job {
                    id: index as u64,
                    patch: image.patch.clone(),
                    count: 1,
                    loras: image.loras.clone(),
                    ..Default::default()
                };
                let placement = Placement {
                    path: config.out_dir.join(&image.path),
                    prompt_template: image.prompt_template.clone(),
                };
                let slot = &mut slots[w];
                slot.worker
                    .submit_placed(job, placement)
                    .map_err(anyhow::Error::msg)?;
                slot.group = Some(key);
                slot.busy = Some(index);
                slot.steps = 0;
            }
        }
        if slots.iter().all(|s| s.busy.is_none()) {
            break;
        }
        let mut heard = false;
        for (w, slot) in slots.iter_mut().enumerate() {
            while let Some(event) = slot.worker.try_event() {
                heard = true;
                handle(event, w, slot, images, config, &host, display, &mut outcome);
            }
        }
        if !heard {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    outcome.left = queue.len();
    for slot in slots {
        slot.worker.shutdown();
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
fn handle(
    event: Event,
    w: usize,
    slot: &mut Slot,
    images: &[PlannedImage],
    config: &RunConfig,
    host: &str,
    display: &mut Display,
    outcome: &mut Outcome,
) {
    let image = |id: u64| images.get(usize::try_from(id).unwrap_or(usize::MAX));
    match event {
        Event::Loading { model } => display.loading(w, &model),
        Event::Loaded {
            seconds, device, ..
        } => {
            slot.load_s = seconds;
            slot.device = device;
        }
        Event::Started { id, .. } => {
            if let Some(img) = image(id) {
                display.started(w, img);
            }
        }
        Event::Progress {
            id, step, steps, ..
        } => {
            slot.steps = step;
            if let Some(img) = image(id) {
                display.progress(w, img, step, steps);
            }
        }
        Event::Image {
            id,
            path,
            picture,
            seconds,
        } => {
            let Some(img) = image(id) else { return };
            let mut record = record(img, Status::Done, config, host, slot);
            record.width = picture.width;
            record.height = picture.height;
            record.render_s = seconds;
            record.bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            slot.load_s = 0.0;
            match manifest::append(&config.out_dir, &record) {
                Ok(()) => {
                    outcome.rendered += 1;
                    display.done(img, &record);
                }
                Err(e) => {
                    let message = format!(
                        "the image was written but cannot be recorded in {}: {e} (it renders again next run)",
                        manifest::path(&config.out_dir).display()
                    );
                    outcome.failed.push((img.path.clone(), message.clone()));
                    display.failed(img, &message);
                }
            }
        }
        Event::Note { message } => display.note(&message),
        Event::Done { .. } | Event::Cancelled { .. } => slot.busy = None,
        Event::Failed { id, message } => {
            slot.busy = None;
            let Some(img) = image(id) else { return };
            let mut record = record(img, Status::Failed, config, host, slot);
            record.message = Some(message.clone());
            if let Err(e) = manifest::append(&config.out_dir, &record) {
                display.note(&format!(
                    "cannot record the failure in {}: {e}",
                    manifest::path(&config.out_dir).display()
                ));
            }
            outcome.failed.push((img.path.clone(), message.clone()));
            display.failed(img, &message);
        }
        Event::LoadStage { .. } => {}
    }
}

fn record(
    img: &PlannedImage,
    status: Status,
    config: &RunConfig,
    host: &str,
    slot: &Slot,
) -> Record {
    Record {
        id: img.id.clone(),
        job: img.job.clone(),
        recipe_hash: img.recipe_hash.clone(),
        path: img.path.clone(),
        seed: img.seed,
        status,
        message: None,
        model: img.model().to_string(),
        width: 0,
        height: 0,
        steps: slot.steps,
        render_s: 0.0,
        load_s: slot.load_s,
        bytes: 0,
        device: slot.device.clone(),
        shard: config.shard.clone(),
        host: host.to_string(),
        pid: std::process::id(),
        time: chrono::Local::now().to_rfc3339(),
    }
}

/// The counts the display ends with.
pub fn counts(images: usize, already_done: usize, to_render: usize, outcome: &Outcome) -> Counts {
    Counts {
        images,
        already_done,
        to_render,
        rendered: outcome.rendered,
        failed: outcome.failed.len(),
    }
}
