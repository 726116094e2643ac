//! `easel batch --dry-run`: the images a plan makes, which are already done, and what the rest
//! will cost in time and disk. Writes nothing (random seeds not yet drawn are shown as such).
use super::estimate::{self, human_bytes, human_duration, ModelFacts, Resolved};
use super::expand::PlannedImage;
use super::manifest::{self, Manifest};
use super::shard::Shard;
use super::{state, LoadedPlan};
use crate::engine::device::DeviceChoice;
use crate::engine::schedulers::display_name;
use crate::recipe::DEFAULT_SAMPLER;
use anyhow::{anyhow, Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

pub fn run(
    loaded: &LoadedPlan,
    out_dir: &Path,
    shard: Option<Shard>,
    devices: &[DeviceChoice],
    json: bool,
) -> Result<ExitCode> {
    let state = state::read(out_dir)?;
    let expansion = loaded.expand(state.as_ref())?;
    let lora_dir = crate::paths::Paths::discover().ok().map(|p| p.loras());
    super::check_inputs(&expansion, lora_dir.as_deref())?;
    let mut facts: HashMap<String, ModelFacts> = HashMap::new();
    for image in &expansion.images {
        if !facts.contains_key(image.model()) {
            let f = estimate::model_facts(image.model()).map_err(|e| {
                anyhow!(
                    "job {} (line {}): cannot read the model {}: {e}",
                    image.job,
                    image.job_line,
                    image.model()
                )
            })?;
            facts.insert(image.model().to_string(), f);
        }
    }
    let mine: Vec<&PlannedImage> = expansion
        .images
        .iter()
        .filter(|i| shard.is_none_or(|s| s.contains(&i.id)))
        .collect();
    let manifest = Manifest::read(out_dir)
        .with_context(|| format!("cannot read {}", manifest::path(out_dir).display()))?;
    let latest = manifest.latest();
    let mut todo: Vec<(&PlannedImage, Resolved)> = Vec::new();
    let mut done = 0;
    for (n, image) in mine.iter().enumerate() {
        let r = match facts.get(image.model()) {
            Some(f) => estimate::resolve(&image.patch, &f.defaults),
            None => continue,
        };
        let is_done = manifest::is_done(&latest, out_dir, &image.path, &image.recipe_hash);
        let status = if is_done { "done" } else { "todo" };
        let sampler = display_name(
            image.patch.sampler.unwrap_or(DEFAULT_SAMPLER),
            image.patch.schedule.unwrap_or_default(),
        );
        if json {
            println!(
                "{}",
                json!({
                    "event": "image",
                    "id": image.id,
                    "job": image.job,
                    "index": image.index,
                    "seed": image.seed,
                    "model": image.model(),
                    "width": r.width,
                    "height": r.height,
                    "steps": r.steps,
                    "cfg": r.cfg,
                    "sampler": sampler,
                    "path": image.path,
                    "status": status,
                })
            );
        } else {
            println!(
                "{:>5}  {status}  job {} #{}  seed {}  {}x{}  {} steps  cfg {}  {sampler}  {}",
                n + 1,
                image.job,
                image.index,
                image.seed,
                r.width,
                r.height,
                r.steps,
                r.cfg,
                image.path
            );
        }
        if is_done {
            done += 1;
        } else {
            todo.push((image, r));
        }
    }
    let gpu = devices.iter().any(|d| match d {
        DeviceChoice::Cuda(_) => true,
        DeviceChoice::Auto => tch::Cuda::is_available(),
        DeviceChoice::Cpu => false,
    });
    let e = estimate::estimate(&todo, &facts, &manifest, gpu, devices.len());
    let unseeded: usize = expansion.unseeded.iter().map(|u| u.images).sum();
    if json {
        println!(
            "{}",
            json!({
                "event": "estimate",
                "images": mine.len(),
                "already_done": done,
                "to_render": todo.len(),
                "unseeded": unseeded,
                "seconds": e.seconds,
                "bytes": e.bytes,
                "time_basis": e.time_basis,
                "disk_basis": e.disk_basis,
                "shard": shard.map(|s| s.to_string()),
                "sheets": expansion.sheets.iter().map(|s| &s.path).collect::<Vec<_>>(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    let shard_note = shard.map(|s| format!(" in shard {s}")).unwrap_or_default();
    println!(
        "{} images{shard_note}: {done} done, {} to render into {}",
        mine.len(),
        todo.len(),
        out_dir.display()
    );
    for u in &expansion.unseeded {
        println!(
            "job {} (line {}): {} more image(s) with random seeds, drawn and recorded at the first run",
            u.job, u.job_line, u.images
        );
    }
    if !expansion.sheets.is_empty() {
        println!(
            "{} contact sheet(s), each drawn when its last cell is done: {}",
            expansion.sheets.len(),
            expansion
                .sheets
                .iter()
                .map(|s| s.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "estimate: about {} and {} for the {} image(s) to render",
        human_duration(e.seconds),
        human_bytes(e.bytes),
        todo.len()
    );
    println!("  time: {}", e.time_basis);
    println!("  disk: {}", e.disk_basis);
    Ok(ExitCode::SUCCESS)
}
