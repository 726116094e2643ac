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
    Worker::spawn(WorkerConfig {
        device: DeviceChoice::Cpu,
        dtype: DtypeChoice::Auto,
        out_dir: out.to_path_buf(),
        history: Some(out.join("history.jsonl")),
        embeddings: Vec::new(),
        lora_dir: None,
        preview_every,
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
