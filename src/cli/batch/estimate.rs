//! How long a batch will take and how much disk it will use, for --dry-run.
//!
//! Time: from the manifest's past renders of the same model when there are some (seconds per
//! step per pixel, times each image's steps and pixels); otherwise a stated guess: SD 1.5's UNet
//! (860 M parameters) takes about 0.05 s per step at 512x512 with guidance on a current GPU in
//! fp16, and about 2.2 s at 256x256 on 2 CPU threads in fp32; other models scale by their UNet's
//! parameter count and latent pixels, half as much without guidance (cfg <= 1). Workers split
//! the images evenly; model loading is not counted.
//!
//! Disk: the past PNGs' bytes per pixel from the manifest, else 1.5 bytes per pixel (about half
//! of raw RGB, typical of PNG-compressed renders).
use super::expand::PlannedImage;
use super::manifest::{Manifest, Status};
use crate::engine::family::{ModelDefaults, ModelInfo};
use crate::engine::loader::ModelSource;
use crate::engine::models::unet_config::UNetConfig;
use crate::engine::models::vae_config::VaeConfig;
use crate::recipe::RecipePatch;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// SD 1.5's UNet, the reference of the guesses.
const SD15_UNET_PARAMS: f64 = 860e6;
/// Seconds per step and latent pixel per parameter, with guidance (two UNet passes).
const GPU_SECONDS: f64 = 0.05 / (SD15_UNET_PARAMS * 64.0 * 64.0);
const CPU_SECONDS: f64 = 2.2 / (SD15_UNET_PARAMS * 32.0 * 32.0);
const GUESS_BYTES_PER_PIXEL: f64 = 1.5;

/// What the estimate needs to know of a model, read from its configs and tensor headers only.
#[derive(Debug, Clone)]
pub struct ModelFacts {
    pub defaults: ModelDefaults,
    pub latent_factor: i64,
    /// The UNet's parameter count, when its weights' header could be read.
    pub unet_params: Option<u64>,
}

pub fn model_facts(model: &str) -> Result<ModelFacts, String> {
    let path = Path::new(model);
    let source = ModelSource::open(path, None).map_err(|e| e.to_string())?;
    let info = ModelInfo::from_source(&source).map_err(|e| e.to_string())?;
    let unet: UNetConfig = source
        .config("unet", "config.json", |_: &UNetConfig| Ok(()))
        .map_err(|e| e.to_string())?;
    let vae: VaeConfig = source
        .config("vae", "config.json", |_: &VaeConfig| Ok(()))
        .map_err(|e| e.to_string())?;
    let latent_factor = vae.latent_scale_factor();
    Ok(ModelFacts {
        defaults: info.defaults(&unet, latent_factor),
        latent_factor,
        unet_params: unet_params(path),
    })
}

/// Counts the UNet's parameters from safetensors headers (no weights are read).
fn unet_params(model: &Path) -> Option<u64> {
    if model.is_file() {
        return header_params(model, Some("model.diffusion_model."));
    }
    let dir = std::fs::read_dir(model.join("unet")).ok()?;
    let mut files: Vec<_> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    // A folder may hold fp32 and fp16 variants of the same weights: count one of them.
    files.first().and_then(|f| header_params(f, None))
}

fn header_params(file: &Path, prefix: Option<&str>) -> Option<u64> {
    let mut f = std::fs::File::open(file).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; usize::try_from(len).ok()?];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).ok()?;
    let total = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__" && prefix.is_none_or(|p| k.starts_with(p)))
        .filter_map(|(_, v)| v.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>())
        .sum();
    Some(total)
}

/// One image's render settings once the model's defaults fill the gaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub cfg: f64,
}

pub fn resolve(patch: &RecipePatch, defaults: &ModelDefaults) -> Resolved {
    let mut patch = patch.clone();
    // An init image without a size renders at its own (as the worker does); unreadable: default.
    let _ = crate::init_files::fill_size(&mut patch);
    let side = |v: Option<u32>, d: i64| v.unwrap_or_else(|| u32::try_from(d).unwrap_or(0));
    Resolved {
        width: side(patch.width, defaults.width),
        height: side(patch.height, defaults.height),
        steps: patch.steps.unwrap_or(defaults.steps),
        cfg: patch.cfg.unwrap_or(defaults.cfg),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub seconds: f64,
    pub bytes: f64,
    /// How the time was estimated, in words.
    pub time_basis: String,
    pub disk_basis: String,
}

/// `images` with their resolved settings; `gpu`: whether the workers are GPUs.
pub fn estimate(
    images: &[(&PlannedImage, Resolved)],
    facts: &HashMap<String, ModelFacts>,
    manifest: &Manifest,
    gpu: bool,
    workers: usize,
) -> Estimate {
    // Past pace per model: seconds per (step x pixel); bytes per pixel.
    let mut pace: HashMap<&str, (f64, usize)> = HashMap::new();
    let (mut bytes, mut pixels) = (0.0, 0.0);
    for r in manifest.records.iter().filter(|r| r.status == Status::Done) {
        let px = f64::from(r.width) * f64::from(r.height);
        if px > 0.0 && r.steps > 0 && r.render_s > 0.0 {
            let e = pace.entry(r.model.as_str()).or_default();
            e.0 += r.render_s / (r.steps as f64 * px);
            e.1 += 1;
        }
        if px > 0.0 && r.bytes > 0 {
            bytes += r.bytes as f64;
            pixels += px;
        }
    }
    let per_worker = if gpu { GPU_SECONDS } else { CPU_SECONDS };
    let (mut seconds, mut total_pixels) = (0.0, 0.0);
    let (mut measured, mut guessed) = (0usize, 0usize);
    for (image, r) in images {
        let px = f64::from(r.width) * f64::from(r.height);
        total_pixels += px;
        if let Some((sum, n)) = pace.get(image.model()) {
            seconds += sum / *n as f64 * r.steps as f64 * px;
            measured += 1;
            continue;
        }
        guessed += 1;
        let f = facts.get(image.model());
        let factor = f.map_or(8.0, |f| f.latent_factor as f64);
        let params = f
            .and_then(|f| f.unet_params)
            .map_or(SD15_UNET_PARAMS, |p| p as f64);
        let passes = if r.cfg > 1.0 { 1.0 } else { 0.5 };
        seconds += per_worker * params * (px / (factor * factor)) * r.steps as f64 * passes;
    }
    let workers = workers.max(1);
    let mut time_basis = Vec::new();
    if measured > 0 {
        time_basis.push(format!(
            "{measured} image(s) at the pace of past renders of their model in the manifest"
        ));
    }
    if guessed > 0 {
        time_basis.push(format!(
            "{guessed} image(s) from a guess: an SD 1.5 UNet step with guidance takes about {}, \
             scaled by each model's UNet parameters and latent pixels (half without guidance)",
            if gpu {
                "0.05 s at 512x512 on a GPU (fp16)"
            } else {
                "2.2 s at 256x256 on 2 CPU threads (fp32)"
            }
        ));
    }
    let mut time_basis = time_basis.join("; ");
    time_basis.push_str(&format!(
        "; split over {workers} worker(s); model loading not counted"
    ));
    let (per_pixel, disk_basis) = if pixels > 0.0 {
        (
            bytes / pixels,
            format!(
                "{:.2} bytes per pixel, as the PNGs already in the manifest",
                bytes / pixels
            ),
        )
    } else {
        (
            GUESS_BYTES_PER_PIXEL,
            format!("a guess of {GUESS_BYTES_PER_PIXEL} bytes per pixel (PNG-compressed RGB)"),
        )
    };
    Estimate {
        seconds: seconds / workers as f64,
        bytes: per_pixel * total_pixels,
        time_basis,
        disk_basis,
    }
}

/// `1.2 MB`, `350 KB`.
pub fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} KB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

/// `3h05m`, `4m10s`, `12s`, `< 1s`.
pub fn human_duration(s: f64) -> String {
    let whole = s.round() as u64;
    match whole {
        0 => "< 1s".into(),
        1..=59 => format!("{whole}s"),
        60..=3599 => format!("{}m{:02}s", whole / 60, whole % 60),
        _ => format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::super::manifest::Record;
    use super::*;

    fn image(model: &str) -> PlannedImage {
        PlannedImage {
            id: "x".into(),
            recipe_hash: "x".into(),
            job: "1".into(),
            job_line: 1,
            index: 0,
            cell: 0,
            seed: 0,
            patch: RecipePatch {
                model: Some(model.into()),
                ..Default::default()
            },
            prompt_template: None,
            loras: Vec::new(),
            presets: Vec::new(),
            path: "x.png".into(),
        }
    }

    fn resolved(width: u32, steps: usize, cfg: f64) -> Resolved {
        Resolved {
            width,
            height: width,
            steps,
            cfg,
        }
    }

    #[test]
    fn guesses_scale_with_steps_pixels_guidance_and_workers() {
        let img = image("m");
        let none = HashMap::new();
        let empty = Manifest::default();
        let one = estimate(&[(&img, resolved(512, 20, 7.0))], &none, &empty, true, 1);
        // SD 1.5 at 512x512, 20 steps on a GPU: the stated 0.05 s per step.
        assert!((one.seconds - 1.0).abs() < 1e-9, "{one:?}");
        assert!(one.time_basis.contains("guess"), "{}", one.time_basis);
        let more = estimate(&[(&img, resolved(1024, 40, 1.0))], &none, &empty, true, 2);
        assert!(
            (more.seconds - 1.0 * 4.0 * 2.0 * 0.5 / 2.0).abs() < 1e-9,
            "{more:?}"
        );
        assert!((one.bytes - 1.5 * 512.0 * 512.0).abs() < 1e-6);
        let cpu = estimate(&[(&img, resolved(256, 1, 7.0))], &none, &empty, false, 1);
        assert!((cpu.seconds - 2.2).abs() < 1e-9, "{cpu:?}");
    }

    #[test]
    fn past_renders_set_the_pace_and_the_bytes() {
        let img = image("m");
        let manifest = Manifest {
            records: vec![Record {
                id: "a".into(),
                job: "1".into(),
                recipe_hash: "a".into(),
                path: "a.png".into(),
                seed: 1,
                status: Status::Done,
                message: None,
                model: "m".into(),
                width: 10,
                height: 10,
                steps: 2,
                render_s: 4.0,
                load_s: 0.0,
                bytes: 300,
                device: "cpu".into(),
                shard: None,
                host: String::new(),
                pid: 0,
                time: String::new(),
            }],
            torn: 0,
        };
        let e = estimate(
            &[(&img, resolved(20, 4, 7.0))],
            &HashMap::new(),
            &manifest,
            false,
            1,
        );
        // 4 s for 2 steps of 100 pixels: 0.02 s per step-pixel; 4 steps of 400 pixels: 32 s.
        assert!((e.seconds - 32.0).abs() < 1e-9, "{e:?}");
        assert!((e.bytes - 1200.0).abs() < 1e-9, "{e:?}");
        assert!(e.time_basis.contains("past renders"), "{}", e.time_basis);
        assert!(
            e.disk_basis.contains("3.00 bytes per pixel"),
            "{}",
            e.disk_basis
        );
        assert_eq!(human_duration(3725.0), "1h02m");
        assert_eq!(human_bytes(1_234_567.0), "1.2 MB");
    }
}
