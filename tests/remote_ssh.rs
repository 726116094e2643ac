//! Remote rendering through a real OpenSSH server that the test starts on 127.0.0.1 (a
//! throwaway host key, user key and config): the handshake, a render saved here with
//! `easel generate`'s pixels, cancel, a dropped connection (ssh killed: the job fails saying so
//! and the host's worker ends), `easel generate --remote`, and the studio in tmux.
//! Skips, saying why, when sshd (or tmux, for the studio) is not installed.
mod remote_support;
mod tmux_support;

use easel::remote::RemoteWorker;
use easel::worker::{Event, Job};
use remote_support::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tmux_support::Tmux;

fn job(id: u64, steps: usize) -> Job {
    Job {
        id,
        patch: fox_patch(steps),
        count: 1,
        loras: Vec::new(),
        ..Default::default()
    }
}

/// Events until `stop` says so; panics after two minutes.
fn wait_for(w: &RemoteWorker, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let start = Instant::now();
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

fn ended(e: &Event) -> bool {
    matches!(
        e,
        Event::Done { .. } | Event::Failed { .. } | Event::Cancelled { .. }
    )
}

#[test]
fn renders_cancels_and_survives_a_dropped_connection_over_ssh() {
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("outputs");
    let history = root.path().join("history.jsonl");
    let options = remote_options(&sshd.host, &sshd.ssh_line(), &out, Some(history.clone()));
    let worker = RemoteWorker::connect(&options)
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    let welcome = worker.welcome().clone();
    assert_eq!(welcome.easel, env!("CARGO_PKG_VERSION"));
    assert!(welcome.devices.contains(&"cpu".to_string()));
    assert_ne!(welcome.pid, std::process::id());

    // A render: the PNG arrives here, with the pixels `easel generate` makes.
    worker.submit(job(1, 4)).unwrap();
    let events = wait_for(&worker, ended);
    let Some(Event::Done { paths, .. }) = events.last() else {
        panic!("{events:?}")
    };
    assert_eq!(paths.len(), 1);
    assert!(paths[0].starts_with(&out), "{paths:?}");
    let saved = std::fs::read(&paths[0]).unwrap();
    let reference = std::fs::read(local_render(root.path(), 4)).unwrap();
    assert_eq!(
        rgb(&saved),
        rgb(&reference),
        "the same pixels as easel generate"
    );
    let recipe = easel::output::png::read_recipe(&paths[0]).unwrap().unwrap();
    assert_eq!((recipe.prompt.as_str(), recipe.seed), ("a red fox", 7));
    assert!(std::fs::read_to_string(&history)
        .unwrap()
        .contains(&paths[0].display().to_string()));

    // Cancel: the job stops within a step or two and nothing is written.
    worker.submit(job(2, 500)).unwrap();
    wait_for(&worker, |e| {
        matches!(e, Event::Progress { id: 2, step: 2, .. })
    });
    worker.cancel(2);
    let events = wait_for(&worker, ended);
    assert_eq!(
        events.last(),
        Some(&Event::Cancelled {
            id: 2,
            paths: Vec::new()
        })
    );
    let after = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .count();
    assert!(after <= 3, "{after} steps ran after the cancel");

    // The connection drops (ssh killed mid-render): the job fails with a clear message, and
    // the worker on the host notices (stdin closed), stops its job and ends.
    worker.submit(job(3, 500)).unwrap();
    wait_for(&worker, |e| matches!(e, Event::Progress { id: 3, .. }));
    assert!(!process_ended(welcome.pid), "the host's worker runs");
    let ssh_pid = worker.transport_pid();
    assert_eq!(unsafe { libc::kill(ssh_pid as i32, libc::SIGKILL) }, 0);
    let events = wait_for(&worker, ended);
    match events.last() {
        Some(Event::Failed { id: 3, message }) => assert!(
            message.starts_with(&format!("the connection to {} was lost: ", sshd.host)),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    let start = Instant::now();
    while !process_ended(welcome.pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the host's worker (pid {}) still runs 10 s after the connection dropped",
            welcome.pid
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let err = worker.submit(job(4, 1)).unwrap_err();
    assert!(err.contains("was lost"), "{err}");
    drop(worker);

    // easel generate --remote: the file lands here, named as asked.
    let file = root.path().join("fox.png");
    let run = Command::new(easel_bin())
        .args(["generate", "a red fox", "--seed", "7", "--steps", "4"])
        .arg("--model")
        .arg(tiny_sd1())
        .arg("--out")
        .arg(&file)
        .args(["--remote", &sshd.host, "--remote-easel"])
        .arg(easel_bin())
        .env("EASEL_SSH", sshd.ssh_line())
        .env("EASEL_HOME", root.path().join("home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("step 4/4"), "progress is shown: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).trim(),
        file.display().to_string()
    );
    assert_eq!(rgb(&std::fs::read(&file).unwrap()), rgb(&reference));
}

#[test]
fn the_studio_renders_on_a_remote_host_in_tmux() {
    if !tmux_support::tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join("data")).unwrap();
    let session = serde_json::json!({
        "prompt": "",
        "negative_prompt": "",
        "params": { "model": tiny_sd1().display().to_string(), "steps": 4, "seed": 7, "seed_locked": true }
    });
    std::fs::write(home.join("data/session.json"), session.to_string()).unwrap();
    let bin = easel_bin();
    let script = format!(
        "cd '{}' && EASEL_HOME='{}' EASEL_SSH='{}' '{}' tui --remote '{}' --remote-easel '{}' \
         --device cpu --graphics halfblocks; echo \"EASEL-EXIT $?\"; sleep 300",
        root.path().display(),
        home.display(),
        sshd.ssh_line(),
        bin.display(),
        sshd.host,
        bin.display(),
    );
    let tmux = Tmux::start("remote", (110, 30), &script);
    tmux.wait_for("Prompt 0/75", 60);
    tmux.run(&["send-keys", "-t", &tmux.session, "-l", "a red fox"]);
    tmux.wait_for("Prompt 3/75", 10);
    tmux.run(&["send-keys", "-t", &tmux.session, "F5"]);
    let done = tmux.wait_for("done: outputs/", 300);
    assert!(
        done.contains("easel-test:cpu"),
        "the status names the remote device:\n{done}"
    );
    let line = done.lines().find(|l| l.contains("done: outputs/")).unwrap();
    let rel = line.trim().trim_start_matches("done: ").trim();
    let png = root.path().join(rel);
    assert!(png.is_file(), "{} was saved here", png.display());
    let recipe = easel::output::png::read_recipe(&png).unwrap().unwrap();
    assert_eq!(
        (recipe.prompt.as_str(), recipe.seed, recipe.steps),
        ("a red fox", 7, 4)
    );
    let reference = std::fs::read(local_render(root.path(), 4)).unwrap();
    assert_eq!(rgb(&std::fs::read(&png).unwrap()), rgb(&reference));
    assert!(done.contains("#1 done seed 7"), "{done}");
    tmux.run(&["send-keys", "-t", &tmux.session, "C-q"]);
    let end = tmux.wait_for("EASEL-EXIT", 30);
    assert!(end.contains("EASEL-EXIT 0"), "{end}");
    assert!(Path::new(&png).is_file());
}

/// The studio itself over SSH (as on a GPU server): `ssh -t HOST easel tui` in a terminal
/// renders, draws the picture inline (half-blocks), and quits leaving the session behind.
#[test]
fn the_studio_runs_over_ssh_with_its_image_inline() {
    if !tmux_support::tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir_all(home.join("data")).unwrap();
    let session = serde_json::json!({
        "prompt": "",
        "negative_prompt": "",
        "params": { "model": tiny_sd1().display().to_string(), "steps": 2, "seed": 7, "seed_locked": true }
    });
    std::fs::write(home.join("data/session.json"), session.to_string()).unwrap();
    let on_host = format!(
        "cd '{}' && EASEL_HOME='{}' '{}' tui --device cpu --graphics halfblocks",
        root.path().display(),
        home.display(),
        easel_bin().display(),
    );
    let script = format!(
        "{} -t {} \"{on_host}\"; echo \"EASEL-EXIT $?\"; sleep 300",
        sshd.ssh_line(),
        sshd.host,
    );
    let tmux = Tmux::start("over-ssh", (110, 30), &script);
    tmux.wait_for("Prompt 0/75", 60);
    tmux.text("a red fox");
    tmux.wait_for("Prompt 3/75", 10);
    tmux.keys(&["F5"]);
    tmux.wait_for("done: outputs/", 300);
    let start = Instant::now();
    while tmux.screen().matches(['▀', '▄']).count() <= 100 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the picture is drawn over ssh:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tmux.keys(&["C-q"]);
    let end = tmux.wait_for("EASEL-EXIT", 30);
    assert!(end.contains("EASEL-EXIT 0"), "{end}");
    let saved = std::fs::read_to_string(home.join("data/session.json")).unwrap();
    assert!(saved.contains("a red fox"), "{saved}");
}
