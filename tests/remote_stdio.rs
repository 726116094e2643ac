//! `easel worker --stdio` on the tiny model, driven through pipes (no ssh): the handshake, a
//! render whose PNG has `easel generate`'s pixels and recipe, cancel within a step, and the end
//! on EOF; then `RemoteWorker` and `easel generate --remote` through a stand-in for ssh that runs
//! the remote command here.
mod common;
mod remote_support;

use easel::remote::protocol::{self, Reply, Request};
use easel::remote::RemoteWorker;
use easel::worker::{Event, Job};
use remote_support::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn submit(id: u64, patch: easel::recipe::RecipePatch) -> Request {
    Request::Submit {
        job: Job {
            id,
            patch,
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        },
        uploads: Default::default(),
    }
}

fn recipe_of(bytes: &[u8], dir: &Path) -> easel::recipe::Recipe {
    let path = dir.join("recipe-probe.png");
    std::fs::write(&path, bytes).unwrap();
    easel::output::png::read_recipe(&path)
        .unwrap()
        .expect("the PNG carries its recipe")
}

#[test]
fn a_render_over_pipes_has_generates_pixels_and_recipe() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::os::unix::fs::symlink(tiny_sd1(), models.join("tiny-sd1")).unwrap();
    std::fs::write(models.join("notes.txt"), "not a model").unwrap();
    let mut pipe = Pipe::start(
        &["--models", &models.display().to_string()],
        &root.path().join("home"),
    );
    pipe.send(&hello(1));
    let Reply::Welcome(welcome) = pipe.recv(30) else {
        panic!("no welcome")
    };
    assert_eq!(welcome.models, vec!["tiny-sd1"]);
    assert_eq!(welcome.models_dir, Some(models.display().to_string()));
    assert_eq!(welcome.kept_in, None);
    // The model by its name in the models folder.
    let mut patch = fox_patch(4);
    patch.model = Some("tiny-sd1".into());
    pipe.send(&submit(1, patch));
    let replies = pipe.until(120, |r| {
        matches!(r, Reply::Done { .. } | Reply::Failed { .. })
    });
    let steps: Vec<usize> = replies
        .iter()
        .filter_map(|r| match r {
            Reply::Progress { step, preview, .. } => {
                let p = preview.as_ref().expect("a preview every step");
                let pic = protocol::decode_preview(p).unwrap();
                assert!(pic.width.max(pic.height) <= protocol::PREVIEW_MAX_SIDE);
                assert_eq!((pic.width, pic.height), (p.width, p.height));
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4], "{}", summary(&replies));
    assert!(replies.contains(&Reply::Started { id: 1, seed: 7 }));
    let (png, remote_path) = replies
        .iter()
        .find_map(|r| match r {
            Reply::Image {
                id: 1,
                png,
                remote_path,
                name,
                ..
            } => {
                assert!(remote_path.ends_with(name.as_str()));
                Some((protocol::base64_decode(png).unwrap(), remote_path.clone()))
            }
            _ => None,
        })
        .expect("the image came back");
    assert_eq!(
        replies.last(),
        Some(&Reply::Done {
            id: 1,
            paths: vec![remote_path.clone()]
        })
    );
    assert!(
        !Path::new(&remote_path).exists(),
        "without keep, the host's copy is gone"
    );
    let local = local_render(root.path(), 4);
    let reference = std::fs::read(&local).unwrap();
    assert_eq!(
        rgb(&png),
        rgb(&reference),
        "the same pixels as easel generate"
    );
    let mut remote_recipe = recipe_of(&png, root.path());
    let local_recipe = recipe_of(&reference, root.path());
    assert_eq!(
        remote_recipe.model,
        models.join("tiny-sd1").display().to_string()
    );
    remote_recipe.model = local_recipe.model.clone();
    assert_eq!(
        remote_recipe, local_recipe,
        "the same recipe as easel generate"
    );
    pipe.hang_up();
    assert_eq!(pipe.exit_within(20), Some(0));
}

#[test]
fn cancel_stops_within_a_step_and_eof_ends_the_worker() {
    let root = tempfile::tempdir().unwrap();
    let mut pipe = Pipe::start(&[], root.path());
    pipe.send(&hello(0));
    assert!(matches!(pipe.recv(30), Reply::Welcome(_)));
    pipe.send(&submit(1, fox_patch(500)));
    pipe.until(120, |r| matches!(r, Reply::Progress { step: 2, .. }));
    pipe.send(&Request::Cancel { id: 1 });
    let replies = pipe.until(60, |r| {
        matches!(
            r,
            Reply::Cancelled { .. } | Reply::Done { .. } | Reply::Failed { .. }
        )
    });
    assert_eq!(
        replies.last(),
        Some(&Reply::Cancelled {
            id: 1,
            paths: Vec::new()
        }),
        "{}",
        summary(&replies)
    );
    let more = replies
        .iter()
        .filter(|r| matches!(r, Reply::Progress { .. }))
        .count();
    assert!(more <= 3, "{more} steps ran after the cancel");
    // The worker serves on: the next job renders.
    pipe.send(&submit(2, fox_patch(500)));
    pipe.until(120, |r| matches!(r, Reply::Progress { id: 2, step: 1, .. }));
    // The connection drops mid-render: the job stops and the process ends.
    pipe.hang_up();
    assert_eq!(
        pipe.exit_within(10),
        Some(0),
        "the worker ends within seconds of EOF"
    );
}

/// A stand-in host: its own home folder (the remote side's cwd and EASEL_HOME).
fn fake_host(root: &Path) -> String {
    let ssh = fake_ssh(root);
    let home = root.join("host-home");
    std::fs::create_dir_all(&home).unwrap();
    let script = std::fs::read_to_string(&ssh).unwrap().replace(
        "exec sh -c",
        &format!(
            "cd '{}' && EASEL_HOME='{}' exec sh -c",
            home.display(),
            home.display()
        ),
    );
    std::fs::write(&ssh, script).unwrap();
    ssh.display().to_string()
}

/// Events until `stop` says so; panics after two minutes.
fn wait_for(w: &RemoteWorker, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let start = std::time::Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(120) {
        let Some(e) = w.wait_event(Duration::from_millis(100)) else {
            continue;
        };
        let done = stop(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
    panic!("no end in two minutes; events so far: {seen:?}");
}

#[test]
fn remote_worker_saves_pngs_here_and_reports_a_lost_connection() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let out = root.path().join("local-out");
    let history = root.path().join("history.jsonl");
    let mut options = remote_options("me@gpu-box", &ssh, &out, Some(history.clone()));
    options.keep = true;
    let worker = RemoteWorker::connect(&options).unwrap();
    assert!(
        worker
            .summary()
            .starts_with("connected to me@gpu-box: easel "),
        "{}",
        worker.summary()
    );
    let kept_in = worker.welcome().kept_in.clone().expect("kept");
    worker
        .submit(Job {
            id: 1,
            patch: fox_patch(4),
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        })
        .unwrap();
    let events = wait_for(&worker, |e| {
        matches!(e, Event::Done { .. } | Event::Failed { .. })
    });
    let loaded = events.iter().find_map(|e| match e {
        Event::Loaded { device, .. } => Some(device.clone()),
        _ => None,
    });
    assert_eq!(loaded.as_deref(), Some("gpu-box:cpu"));
    let previews = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Progress {
                    preview: Some(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(previews, 4, "{events:?}");
    let Some(Event::Image { path, picture, .. }) =
        events.iter().find(|e| matches!(e, Event::Image { .. }))
    else {
        panic!("no image: {events:?}")
    };
    assert_eq!(
        path.parent(),
        Some(out.as_path()),
        "saved in the local folder"
    );
    assert_eq!(
        events.last(),
        Some(&Event::Done {
            id: 1,
            paths: vec![path.clone()]
        })
    );
    let reference = std::fs::read(local_render(root.path(), 4)).unwrap();
    let saved = std::fs::read(path).unwrap();
    assert_eq!(rgb(&saved), rgb(&reference));
    assert_eq!(
        (picture.width, picture.height, &picture.rgb),
        (rgb(&saved).0, rgb(&saved).1, &rgb(&saved).2)
    );
    let recipe = easel::output::png::read_recipe(path).unwrap().unwrap();
    assert_eq!((recipe.seed, recipe.steps), (7, 4));
    let recorded = std::fs::read_to_string(&history).unwrap();
    assert!(recorded.contains(&path.display().to_string()), "{recorded}");
    // Kept on the host too, under the same name, in the worker's --out (its cwd's outputs/).
    let host_copy = root
        .path()
        .join("host-home")
        .join(&kept_in)
        .join(path.file_name().unwrap());
    assert_eq!(std::fs::read(&host_copy).unwrap(), saved);

    // A job's image to a given file; the same name in the folder again gets a suffix.
    let file = root.path().join("exact/fox.png");
    worker.set_file(2, file.clone());
    for id in [2, 3] {
        worker
            .submit(Job {
                id,
                patch: fox_patch(1),
                count: 1,
                loras: Vec::new(),
                ..Default::default()
            })
            .unwrap();
        let events = wait_for(&worker, |e| {
            matches!(e, Event::Done { .. } | Event::Failed { .. })
        });
        match events.last() {
            Some(Event::Done { paths, .. }) if id == 2 => assert_eq!(paths, &vec![file.clone()]),
            Some(Event::Done { paths, .. }) => assert_eq!(paths[0].parent(), Some(out.as_path())),
            other => panic!("{other:?}"),
        }
    }
    assert!(file.is_file());

    // The connection drops mid-render (the transport killed): the job fails, saying so.
    worker
        .submit(Job {
            id: 4,
            patch: fox_patch(500),
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        })
        .unwrap();
    wait_for(&worker, |e| matches!(e, Event::Progress { id: 4, .. }));
    let pid = worker.transport_pid();
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let events = wait_for(&worker, |e| {
        matches!(e, Event::Failed { .. } | Event::Done { .. })
    });
    match events.last() {
        Some(Event::Failed { id: 4, message }) => assert!(
            message.starts_with("the connection to me@gpu-box was lost: "),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let err = worker
        .submit(Job {
            id: 5,
            patch: fox_patch(1),
            count: 1,
            loras: Vec::new(),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.contains("was lost"), "{err}");
    assert!(worker.shutdown_within(Duration::from_secs(5)));
}

#[test]
fn generate_remote_saves_here_with_generates_pixels() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let out = root.path().join("shots");
    let run = Command::new(easel_bin())
        .args([
            "generate",
            "a red fox",
            "--seed",
            "7",
            "--steps",
            "4",
            "--batch",
            "2",
        ])
        .arg("--model")
        .arg(tiny_sd1())
        .arg("--out")
        .arg(format!("{}/", out.display()))
        .args(["--remote", "gpu-box", "--remote-easel"])
        .arg(easel_bin())
        .env("EASEL_SSH", &ssh)
        .env("EASEL_HOME", root.path().join("local-home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("connected to gpu-box"), "{stderr}");
    assert!(stderr.contains("[2/2] seed 8 on gpu-box"), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let paths: Vec<&str> = stdout.lines().collect();
    assert_eq!(paths.len(), 2, "{stdout}");
    let first = std::fs::read(paths[0]).unwrap();
    let reference = std::fs::read(local_render(root.path(), 4)).unwrap();
    assert_eq!(rgb(&first), rgb(&reference));
    let second = easel::output::png::read_recipe(Path::new(paths[1]))
        .unwrap()
        .unwrap();
    assert_eq!(second.seed, 8);
    assert!(Path::new(paths[1]).starts_with(&out));
}

/// `--vae-tiling` (and `--low-memory`) reach the host: a remote render decoded in tiles equals
/// the local tiled render, which differs from a whole decode at this size.
#[test]
fn generate_remote_takes_the_memory_flags_to_the_host() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let render = |out: &Path, extra: &[&str], remote: bool| {
        let mut cmd = Command::new(easel_bin());
        cmd.args([
            "generate",
            "a red fox",
            "--seed",
            "5",
            "--steps",
            "2",
            "--width",
            "96",
            "--height",
            "96",
            "--device",
            "cpu",
        ])
        .args(extra)
        .arg("--model")
        .arg(tiny_sd1())
        .arg("--out")
        .arg(out)
        .env("EASEL_HOME", root.path().join("local-home"));
        if remote {
            cmd.args(["--remote", "gpu-box", "--remote-easel"])
                .arg(easel_bin())
                .env("EASEL_SSH", &ssh);
        }
        let run = cmd.output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        rgb(&std::fs::read(out).unwrap()).2
    };
    let whole = render(&root.path().join("whole.png"), &[], false);
    let tiled = render(&root.path().join("tiled.png"), &["--vae-tiling"], false);
    assert_ne!(whole, tiled, "tiling shows at 96x96 on the tiny VAE");
    let there = render(&root.path().join("there.png"), &["--vae-tiling"], true);
    assert_eq!(there, tiled);
    let low = render(&root.path().join("low.png"), &["--low-memory"], true);
    assert_eq!(
        low,
        render(&root.path().join("low-here.png"), &["--low-memory"], false)
    );
}

/// img2img and inpainting over --remote: the init image and mask travel with the job (the host
/// reads neither from its own disk), the render equals `easel generate` here, and the recipe
/// keeps the paths as given here.
#[test]
fn generate_remote_sends_the_init_image_and_mask_with_the_job() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let pictures = root.path().join("pictures");
    std::fs::create_dir_all(&pictures).unwrap();
    let init = pictures.join("street.png");
    let mask = pictures.join("street-mask.png");
    let (w, h) = (48u32, 32u32);
    let mut init_rgb = Vec::new();
    let mut mask_l = Vec::new();
    for y in 0..h {
        for x in 0..w {
            init_rgb.extend([(x * 5) as u8, (y * 7) as u8, ((x * y) % 251) as u8]);
            mask_l.push(if x > w / 3 && y > h / 4 { 255 } else { 0 });
        }
    }
    image::save_buffer(&init, &init_rgb, w, h, image::ColorType::Rgb8).unwrap();
    image::save_buffer(&mask, &mask_l, w, h, image::ColorType::L8).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "generate",
            "a red fox",
            "--seed",
            "3",
            "--steps",
            "3",
            "--strength",
            "0.6",
            "--init-image",
            init.to_str().unwrap(),
            "--mask",
            mask.to_str().unwrap(),
            "--model",
            tiny_sd1().to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let here = root.path().join("here.png");
    let local = Command::new(easel_bin())
        .args(args(&here))
        .env("EASEL_HOME", root.path().join("local-home"))
        .output()
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    let there = root.path().join("there.png");
    let remote = Command::new(easel_bin())
        .args(args(&there))
        .args(["--remote", "gpu-box", "--remote-easel"])
        .arg(easel_bin())
        .env("EASEL_SSH", &ssh)
        .env("EASEL_HOME", root.path().join("local-home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&remote.stderr);
    assert!(remote.status.success(), "{stderr}");
    assert!(stderr.contains("connected to gpu-box"), "{stderr}");
    let (a, b) = (
        std::fs::read(&here).unwrap(),
        std::fs::read(&there).unwrap(),
    );
    assert_eq!(rgb(&a).2, rgb(&b).2, "the host renders what renders here");
    let recipe = easel::output::png::read_recipe(&there).unwrap().unwrap();
    let init_recipe = recipe.init.expect("an img2img recipe");
    assert_eq!(init_recipe.image, init.to_str().unwrap());
    assert_eq!(init_recipe.mask.as_deref(), mask.to_str());
    assert_eq!(init_recipe.strength, 0.6);
    // The host kept nothing of them: its inputs folder went with the session.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("easel-inputs-"))
        .filter(|e| {
            std::fs::read_dir(e.path())
                .map(|d| {
                    d.flatten()
                        .any(|f| std::fs::read(f.path()).ok() == std::fs::read(&init).ok())
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// `--model-config`, `--vae`, `--embeddings` and `--fast-decoder` name files on the host: each
/// remote render equals the same flags here (and differs from a render without them), the
/// recipe records the VAE, and a path the host lacks fails at connection with the flag named.
#[test]
fn generate_remote_reads_vae_config_embeddings_and_decoder_on_the_host() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let checkpoint = common::cached_checkpoint();
    let run = |name: &str, prompt: &str, extra: &[&str], remote: bool| {
        let out = root.path().join(format!("{name}.png"));
        let mut cmd = Command::new(easel_bin());
        cmd.args(["generate", prompt, "--seed", "3", "--steps", "2"])
            .args(["--device", "cpu"])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .env("EASEL_HOME", root.path().join("local-home"));
        if remote {
            cmd.args(["--remote", "gpu-box", "--remote-easel"])
                .arg(easel_bin())
                .env("EASEL_SSH", &ssh);
        }
        let done = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr).to_string();
        (done.status.success().then_some(out), stderr)
    };
    let pixels = |out: &Option<PathBuf>, stderr: &str| {
        let out = out.as_ref().unwrap_or_else(|| panic!("{stderr}"));
        rgb(&std::fs::read(out).unwrap()).2
    };
    let same_here_and_there = |name: &str, prompt: &str, extra: &[&str]| {
        let (here, log) = run(&format!("{name}-here"), prompt, extra, false);
        let (there, remote_log) = run(&format!("{name}-there"), prompt, extra, true);
        assert_eq!(
            pixels(&here, &log),
            pixels(&there, &remote_log),
            "{name}: the host renders as here"
        );
        (pixels(&here, &log), there.unwrap())
    };
    let single_file = checkpoint.join("sd1.safetensors");
    let config = tiny_sd1();
    let vae = checkpoint.join("vae2-ldm.safetensors");
    let base = [
        "--model",
        single_file.to_str().unwrap(),
        "--model-config",
        config.to_str().unwrap(),
    ];
    let (plain, _) = same_here_and_there("checkpoint", "a red fox", &base);
    let with_vae = [&base[..], &["--vae", vae.to_str().unwrap()]].concat();
    let (swapped, png) = same_here_and_there("vae", "a red fox", &with_vae);
    assert_ne!(plain, swapped, "the VAE changes the image");
    let recipe = easel::output::png::read_recipe(&png).unwrap().unwrap();
    assert_eq!(
        recipe.vae.as_deref(),
        vae.to_str(),
        "the recipe names the VAE"
    );

    let tiny = tiny_sd1();
    let model = ["--model", tiny.to_str().unwrap()];
    let embeddings = common::reference_path("prompt-embeddings");
    let with_embeddings = [&model[..], &["--embeddings", embeddings.to_str().unwrap()]].concat();
    let (styled, _) = same_here_and_there("embeddings", "a red fox, my-style", &with_embeddings);
    let (unstyled, _) = same_here_and_there("no-embeddings", "a red fox, my-style", &model);
    assert_ne!(styled, unstyled, "the embedding changes the image");
    // A relative path is the host's, from the login folder (host-home), not this cwd.
    let on_host = root.path().join("host-home/styles");
    std::fs::create_dir_all(&on_host).unwrap();
    for entry in std::fs::read_dir(&embeddings).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), on_host.join(entry.file_name())).unwrap();
    }
    assert!(!Path::new("styles").exists());
    let relative = [&model[..], &["--embeddings", "styles"]].concat();
    let (there, log) = run("relative", "a red fox, my-style", &relative, true);
    assert_eq!(
        pixels(&there, &log),
        styled,
        "--embeddings styles is the host's folder"
    );
    let taesd = common::reference_path("taesd-x2");
    let with_decoder = [&model[..], &["--fast-decoder", taesd.to_str().unwrap()]].concat();
    let (fast, _) = same_here_and_there("fast", "a red fox", &with_decoder);
    let (full, _) = same_here_and_there("full", "a red fox", &model);
    assert_ne!(fast, full, "TAESD decodes differently from the VAE");

    for flag in ["--vae", "--model-config", "--embeddings", "--fast-decoder"] {
        let missing = root.path().join("not-on-the-host");
        let extra = [&model[..], &[flag, missing.to_str().unwrap()]].concat();
        let (out, stderr) = run("missing", "a red fox", &extra, true);
        assert!(out.is_none(), "{flag}: a missing host path fails");
        assert!(
            stderr.contains(&format!("{flag} {}: there is no such", missing.display()))
                && stderr.contains("on the host"),
            "{flag}: {stderr}"
        );
    }
}

/// The studio's `--preview-decoder` with `--remote`: TAESD on the host draws the step previews,
/// full size (the latent map would be a quarter of it on the tiny model).
#[test]
fn remote_previews_come_from_the_hosts_preview_decoder() {
    let root = tempfile::tempdir().unwrap();
    let ssh = fake_host(root.path());
    let preview_sides = |decoder: Option<PathBuf>| {
        let mut options = remote_options("gpu-box", &ssh, &root.path().join("out"), None);
        options.host_files.preview_decoder = decoder.map(|d| d.display().to_string());
        let worker = RemoteWorker::connect(&options).unwrap();
        worker
            .submit(Job {
                id: 1,
                patch: fox_patch(2),
                count: 1,
                ..Default::default()
            })
            .unwrap();
        let events = wait_for(&worker, |e| {
            matches!(e, Event::Done { .. } | Event::Failed { .. })
        });
        assert!(
            matches!(events.last(), Some(Event::Done { .. })),
            "{events:?}"
        );
        assert!(worker.shutdown_within(Duration::from_secs(5)));
        events
            .into_iter()
            .filter_map(|e| match e {
                Event::Progress {
                    preview: Some(p), ..
                } => Some((p.width, p.height)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let latent = preview_sides(None);
    let taesd = preview_sides(Some(common::reference_path("taesd-x2")));
    assert_eq!(latent.len(), 2);
    assert_eq!(taesd.len(), 2);
    assert_eq!(taesd[0], (64, 64), "TAESD previews are the image's size");
    assert!(latent[0].0 < 64, "the latent map is smaller: {latent:?}");
}
