//! The studio's worker on the tiny model: it renders what diffusers renders, keeps the model
//! loaded across jobs, runs jobs in order, and stops a cancelled job within one step.
mod common;

use common::{tiny_sd1, Reference};
use easel::engine::device::{DeviceChoice, DtypeChoice};
use easel::recipe::RecipePatch;
use easel::worker::{Event, Job, Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn worker(out: &Path, preview_every: usize) -> Worker {
    worker_with(out, preview_every, None)
}

fn worker_with(out: &Path, preview_every: usize, preview_decoder: Option<PathBuf>) -> Worker {
    Worker::spawn(WorkerConfig {
        device: DeviceChoice::Cpu,
        dtype: DtypeChoice::Auto,
        out_dir: out.to_path_buf(),
        history: Some(out.join("history.jsonl")),
        embeddings: Vec::new(),
        lora_dir: None,
        preview_every,
        preview_decoder,
        memory: Default::default(),
        fast_decoder: None,
        vae: None,
        model_config: None,
    })
    .unwrap()
}

fn fox(id: u64, steps: usize) -> Job {
    Job {
        id,
        patch: RecipePatch {
            model: Some(tiny_sd1().display().to_string()),
            prompt: Some("a red fox".into()),
            sampler: Some(easel::engine::schedulers::SamplerKind::EulerAncestral),
            steps: Some(steps),
            seed: Some(7),
            ..Default::default()
        },
        count: 1,
        loras: Vec::new(),
        ..Default::default()
    }
}

/// Events until `stop` says so (or a minute passes, which fails the test).
fn events_until(w: &Worker, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Some(e) = w.wait_event(Duration::from_secs(120)) {
        let done = stop(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
    panic!("the worker went quiet; events so far: {seen:?}");
}

fn decoded_rgb(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

#[test]
fn renders_the_diffusers_image_and_keeps_the_model_loaded() {
    let _guard = tch::no_grad_guard();
    let out = tempfile::tempdir().unwrap();
    let w = worker(out.path(), 1);
    w.submit(fox(1, 4)).unwrap();
    w.submit(fox(2, 1)).unwrap();
    let events = events_until(&w, |e| {
        matches!(e, Event::Done { id: 2, .. } | Event::Failed { .. })
    });
    let loads = events
        .iter()
        .filter(|e| matches!(e, Event::Loading { .. }))
        .count();
    assert_eq!(
        loads, 1,
        "the second job reuses the loaded model: {events:?}"
    );
    // The load reports each component as it starts, its share of the load rising.
    let stages: Vec<(String, f32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::LoadStage {
                component,
                progress,
            } => Some((component.clone(), *progress)),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["tokenizer", "text encoder", "unet", "vae"]);
    assert!(stages.windows(2).all(|w| w[0].1 < w[1].1) && stages[3].1 < 1.0);
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                id: 1,
                step,
                preview,
                ..
            } => {
                assert!(preview.is_some(), "a preview every step");
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4]);
    let paths: Vec<PathBuf> = events
        .iter()
        .filter_map(|e| match e {
            Event::Done { paths, .. } => Some(paths.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(paths.len(), 2);
    // Job 1 is `easel generate "a red fox" --seed 7 --steps 4 --sampler euler_a` on this
    // model: diffusers' image (8-bit rounding may move a pixel by one).
    let expected = Reference::open("pipeline.safetensors").get("cli-fox");
    let expected: Vec<u8> = Vec::try_from(
        &(expected * 255.0)
            .round()
            .to_kind(tch::Kind::Uint8)
            .contiguous()
            .view([-1]),
    )
    .unwrap();
    let pixels = decoded_rgb(&paths[0]);
    assert_eq!(pixels.len(), expected.len());
    let worst = pixels
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "pixels differ from diffusers by up to {worst}");
    let recipe = easel::output::png::read_recipe(&paths[0]).unwrap().unwrap();
    assert_eq!(
        (recipe.seed, recipe.steps, recipe.prompt.as_str()),
        (7, 4, "a red fox")
    );
    let native = events.iter().find_map(|e| match e {
        Event::Loaded { native, .. } => Some(*native),
        _ => None,
    });
    assert_eq!(
        native,
        Some((recipe.width, recipe.height)),
        "no size set: the native one"
    );
    let history = std::fs::read_to_string(out.path().join("history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2);
    w.shutdown();
}

#[test]
fn cancel_stops_within_a_step_and_queued_jobs_never_start() {
    let out = tempfile::tempdir().unwrap();
    let w = worker(out.path(), 0);
    w.submit(fox(1, 50)).unwrap();
    w.submit(fox(2, 50)).unwrap();
    w.cancel(2);
    let mut steps_after_cancel = None;
    let events = events_until(&w, |e| {
        if let Event::Progress { id: 1, step: 1, .. } = e {
            w.cancel(1);
            steps_after_cancel = Some(0);
        } else if let (Event::Progress { id: 1, .. }, Some(n)) = (e, steps_after_cancel.as_mut()) {
            *n += 1;
        }
        matches!(e, Event::Cancelled { id: 2, .. })
    });
    assert!(
        events.contains(&Event::Cancelled {
            id: 1,
            paths: vec![]
        }),
        "{events:?}"
    );
    assert!(
        steps_after_cancel.unwrap() <= 1,
        "the running job stops within one step: {events:?}"
    );
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::Started { id: 2, .. })));
    let pngs = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 0, "a cancelled render writes nothing");
    w.shutdown();
}

#[test]
fn a_missing_model_fails_the_job_with_what_to_do() {
    let out = tempfile::tempdir().unwrap();
    let w = worker(out.path(), 0);
    let mut job = fox(1, 1);
    job.patch.model = Some(out.path().join("nope").display().to_string());
    w.submit(job).unwrap();
    let events = events_until(&w, |e| {
        matches!(e, Event::Failed { .. } | Event::Done { .. })
    });
    let Some(Event::Failed { message, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert!(
        message.contains("cannot load the model") && message.contains("nope"),
        "{message}"
    );
    w.shutdown();
}

/// A 44x36 picture (the render takes 40x32 from it): smooth colours, so that img2img has
/// something to keep.
fn write_init(path: &Path) {
    let rgb: Vec<u8> = (0..36u32)
        .flat_map(|y| (0..44u32).flat_map(move |x| [(x * 5) as u8, (y * 7) as u8, 128]))
        .collect();
    image::save_buffer(path, &rgb, 44, 36, image::ColorType::Rgb8).unwrap();
}

/// White (repaint) in the middle, black (keep) around it, as 8-bit gray.
fn write_mask(path: &Path) {
    let gray: Vec<u8> = (0..36u32)
        .flat_map(|y| {
            (0..44u32).map(move |x| {
                if (12..32).contains(&x) && (8..28).contains(&y) {
                    255
                } else {
                    0
                }
            })
        })
        .collect();
    image::save_buffer(path, &gray, 44, 36, image::ColorType::L8).unwrap();
}

fn img2img_job(id: u64, model: &Path, init: &Path, mask: Option<&Path>) -> Job {
    let mut job = fox(id, 4);
    job.patch.model = Some(model.display().to_string());
    job.patch.init_image = Some(init.display().to_string());
    job.patch.strength = Some(0.5);
    if let Some(mask) = mask {
        job.patch.mask = Some(mask.display().to_string());
        job.patch.mask_blur = Some(2);
        job.patch.keep_unmasked = Some(true);
    }
    job
}

/// Renders `job` in the worker, then the PNG's recipe with `easel generate --from`: the same
/// pixels, byte for byte. Returns the worker's recipe.
fn worker_matches_generate(job: Job) -> easel::recipe::Recipe {
    let _guard = tch::no_grad_guard();
    let out = tempfile::tempdir().unwrap();
    let w = worker(out.path(), 0);
    w.submit(job).unwrap();
    let events = events_until(&w, |e| {
        matches!(e, Event::Done { .. } | Event::Failed { .. })
    });
    w.shutdown();
    let Some(Event::Done { paths, .. }) = events.last() else {
        panic!("{events:?}")
    };
    let recipe = easel::output::png::read_recipe(&paths[0]).unwrap().unwrap();
    let again = out.path().join("again.png");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .arg("generate")
        .arg("--from")
        .arg(&paths[0])
        .arg("--out")
        .arg(&again)
        .env("EASEL_HOME", out.path().join("home"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        easel::output::png::read_recipe(&again)
            .unwrap()
            .unwrap()
            .init,
        recipe.init
    );
    assert!(
        decoded_rgb(&paths[0]) == decoded_rgb(&again),
        "the worker's pixels differ from easel generate's"
    );
    recipe
}

#[test]
fn img2img_jobs_render_what_easel_generate_renders() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("photo.png");
    write_init(&init);
    let recipe = worker_matches_generate(img2img_job(1, &tiny_sd1(), &init, None));
    let got = recipe.init.unwrap();
    assert_eq!(
        (got.image, got.strength, got.mask),
        (init.display().to_string(), 0.5, None)
    );
    assert_eq!(
        (recipe.width, recipe.height),
        (40, 32),
        "no size set: the init image's, rounded down to multiples of 8"
    );
}

#[test]
fn inpainting_jobs_render_what_easel_generate_renders() {
    let dir = tempfile::tempdir().unwrap();
    let (init, mask) = (dir.path().join("photo.png"), dir.path().join("mask.png"));
    write_init(&init);
    write_mask(&mask);
    let model = common::cached_fixture("tiny-sd1-inpaint");
    let recipe = worker_matches_generate(img2img_job(1, &model, &init, Some(&mask)));
    assert_eq!(
        recipe.init,
        Some(easel::recipe::RecipeInit {
            image: init.display().to_string(),
            strength: 0.5,
            mask: Some(mask.display().to_string()),
            mask_blur: 2,
            keep_unmasked: true,
        })
    );
}

#[test]
fn a_missing_init_image_fails_its_job_and_the_next_one_renders() {
    let out = tempfile::tempdir().unwrap();
    let missing = out.path().join("gone.png");
    let w = worker(out.path(), 0);
    w.submit(img2img_job(1, &tiny_sd1(), &missing, None))
        .unwrap();
    w.submit(fox(2, 1)).unwrap();
    let events = events_until(&w, |e| {
        matches!(e, Event::Done { id: 2, .. } | Event::Failed { id: 2, .. })
    });
    w.shutdown();
    let message = events
        .iter()
        .find_map(|e| match e {
            Event::Failed { id: 1, message } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("job 1 fails: {events:?}"));
    assert!(
        message.contains("cannot read the init image")
            && message.contains(&missing.display().to_string())
            && message.contains("give a readable PNG file"),
        "{message}"
    );
    assert!(
        matches!(events.last(), Some(Event::Done { id: 2, paths }) if paths.len() == 1),
        "{events:?}"
    );
}

/// `easel tui --preview-decoder DIR`: the worker draws step previews with that TAESD, at the
/// image's size; a folder that is not a TAESD fails the job with what to do.
#[test]
fn a_preview_decoder_gives_full_size_previews_and_a_bad_one_fails_clearly() {
    let _guard = tch::no_grad_guard();
    let out = tempfile::tempdir().unwrap();
    let taesd = common::reference_path("taesd-x2");
    let w = worker_with(out.path(), 1, Some(taesd));
    let mut job = fox(1, 2);
    job.patch.width = Some(48);
    job.patch.height = Some(32);
    w.submit(job).unwrap();
    let events = events_until(&w, |e| {
        matches!(e, Event::Done { .. } | Event::Failed { .. })
    });
    let sizes: Vec<(u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                preview: Some(p), ..
            } => Some((p.width, p.height)),
            _ => None,
        })
        .collect();
    assert_eq!(sizes, [(48, 32), (48, 32)], "{events:?}");

    let bad = worker_with(out.path(), 1, Some(out.path().join("no-taesd")));
    bad.submit(fox(2, 1)).unwrap();
    let events = events_until(&bad, |e| {
        matches!(e, Event::Done { .. } | Event::Failed { .. })
    });
    let Some(Event::Failed { message, .. }) = events.last() else {
        panic!("the job should fail: {events:?}");
    };
    assert!(
        message.contains("cannot use the preview decoder") && message.contains("no-taesd"),
        "{message}"
    );
}
