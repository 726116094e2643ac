//! The real binary in tmux on the tiny model: type a prompt, render, watch progress and the
//! finished file's path, save a preset, load it back, quit, and find the terminal restored.
//! Skips (saying why) only when tmux is not installed.
mod tmux_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tmux_support::{tmux_present, Tmux};

fn write_session(home: &Path, model: &Path) {
    let data = home.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let session = serde_json::json!({
        "prompt": "",
        "negative_prompt": "",
        "params": { "model": model.display().to_string(), "steps": 4, "seed": 7, "seed_locked": true }
    });
    std::fs::write(data.join("session.json"), session.to_string()).unwrap();
}

/// After the studio exits, the pane's shell prints its exit code and the terminal's modes.
const REPORT: &str = "echo \"EASEL-EXIT $?\"; echo \"MODES $(stty -a | tr ';' '\\n' | grep -ow -e '-\\?icanon' -e '-\\?echo' | tr '\\n' ' ')END\"; sleep 300";

/// The studio on the tiny model in a fresh tmux session of `size`, started in a temporary
/// folder with its own easel home; `env` and `args` go before and after `tui`.
fn start_studio(name: &str, env: &str, args: &str, size: (u16, u16)) -> (Tmux, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    write_session(&home, &model);
    let script = format!(
        "cd '{}' && {env} EASEL_HOME='{}' '{}' tui {args}; {REPORT}",
        root.path().display(),
        home.display(),
        env!("CARGO_BIN_EXE_easel"),
    );
    let tmux = Tmux::start(&format!("e2e-{name}"), size, &script);
    (tmux, root)
}

/// The studio exited with `code`, and the terminal is back in cooked mode with echo, off the
/// alternate screen (whose prompt title `studio_text` is gone).
fn assert_restored(end: &str, code: i32, studio_text: &str) {
    assert!(end.contains(&format!("EASEL-EXIT {code}")), "{end}");
    let modes = end
        .lines()
        .find_map(|l| l.trim().strip_prefix("MODES "))
        .unwrap_or_default()
        .trim_end_matches("END");
    assert!(
        modes.split_whitespace().any(|m| m == "icanon")
            && modes.split_whitespace().any(|m| m == "echo"),
        "the terminal is back in cooked mode with echo: {modes:?}"
    );
    assert!(
        !end.contains(studio_text),
        "the alternate screen is gone:\n{end}"
    );
}

#[test]
fn studio_renders_saves_a_preset_and_restores_the_terminal() {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let (tmux, root) = start_studio("main", "", "--device cpu --graphics halfblocks", (100, 30));
    let home = root.path().join("home");
    let mut seen = Vec::new();
    tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    tmux.text("a red fox");
    tmux.wait_seen("Prompt 3/75", 10, &mut seen);
    tmux.keys(&["F5"]);
    let done = tmux.wait_seen("done: outputs/", 300, &mut seen);
    assert!(
        seen.iter()
            .any(|s| s.contains("step ") || s.contains("loading")),
        "progress was shown while rendering"
    );
    let line = done.lines().find(|l| l.contains("done: outputs/")).unwrap();
    let rel = line.trim().trim_start_matches("done: ").trim();
    let png = root.path().join(rel);
    assert!(png.is_file(), "{} exists", png.display());
    let recipe = easel::output::png::read_recipe(&png).unwrap().unwrap();
    assert_eq!(
        (recipe.prompt.as_str(), recipe.seed, recipe.steps),
        ("a red fox", 7, 4)
    );
    assert!(done.contains("#1 done seed 7"), "{done}");

    // Save the settings as a preset, then load it back from the presets panel.
    tmux.keys(&["C-s"]);
    tmux.wait_seen("Save preset as", 10, &mut seen);
    tmux.text("e2efox");
    tmux.keys(&["Enter"]);
    tmux.wait_seen("saved preset e2efox", 10, &mut seen);
    let preset = home.join("config/presets/e2efox.toml");
    let text = std::fs::read_to_string(&preset).unwrap();
    assert!(
        text.contains("steps = 4") && text.contains("a red fox"),
        "{text}"
    );
    tmux.keys(&["C-p"]);
    tmux.wait_seen("filter:", 10, &mut seen);
    tmux.text("e2e");
    tmux.wait_seen("sets: ", 10, &mut seen);
    tmux.keys(&["Enter"]);
    let stacked = tmux.wait_seen("loaded preset e2efox", 10, &mut seen);
    assert!(
        stacked.contains("a red fox, a red fox"),
        "presets stack onto the prompt:\n{stacked}"
    );

    // The gallery lists the render from the history: favourite it, load it, trash it.
    tmux.keys(&["C-g"]);
    tmux.wait_seen("seed 7 a red fox", 10, &mut seen);
    tmux.keys(&["C-f"]);
    let favourites = home.join("data/favourites.json");
    let start = Instant::now();
    while !std::fs::read_to_string(&favourites).is_ok_and(|t| t.contains(rel)) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the favourite was saved"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys(&["Enter"]);
    tmux.wait_seen("loaded the recipe of", 10, &mut seen);
    tmux.keys(&["C-g"]);
    tmux.wait_seen("seed 7 a red fox", 10, &mut seen);
    tmux.keys(&["DC"]);
    tmux.wait_seen("to the trash? y/n", 10, &mut seen);
    tmux.keys(&["y"]);
    tmux.wait_seen("data/trash/images", 10, &mut seen);
    assert!(!png.exists(), "the image left the outputs folder");
    assert!(home
        .join("data/trash/images")
        .join(png.file_name().unwrap())
        .is_file());
    tmux.keys(&["Escape"]);

    tmux.keys(&["C-q"]);
    let end = tmux.wait_seen("END", 30, &mut seen);
    assert_restored(&end, 0, "Prompt 3/75");
    let session = std::fs::read_to_string(home.join("data/session.json")).unwrap();
    assert!(
        session.contains("\"prompt\": \"a red fox\""),
        "the recipe loaded from the gallery is kept: {session}"
    );
}

#[test]
fn sigterm_quits_cleanly_and_restores_the_terminal() {
    signal_quits_cleanly("-TERM");
}

/// What a dropped SSH connection sends.
#[test]
fn sighup_quits_cleanly_and_restores_the_terminal() {
    signal_quits_cleanly("-HUP");
}

fn signal_quits_cleanly(signal: &str) {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    // A unique --out names this process for pgrep.
    let out = format!("outputs{signal}-{}", std::process::id());
    let (tmux, root) = start_studio(
        signal,
        "",
        &format!("--graphics halfblocks --out {out} --preset sd15-draft"),
        (80, 24),
    );
    let home = root.path().join("home");
    let mut seen = Vec::new();
    // --preset applies at start: the built-in draft preset's steps, size and negative prompt.
    let first = tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    assert!(
        first.contains("steps 12") && first.contains("512x512") && first.contains("lowres"),
        "{first}"
    );
    tmux.text("kept across a kill");
    tmux.wait_seen("kept across a kill", 10, &mut seen);
    let killed = Command::new("pkill")
        // The shell's command line quotes the path, so this matches the studio alone.
        .args([
            signal,
            "-f",
            &format!("easel tui --graphics halfblocks --out {out}"),
        ])
        .status()
        .unwrap();
    assert!(killed.success(), "the studio process was found");
    let end = tmux.wait_seen("END", 30, &mut seen);
    assert_restored(&end, 0, "kept across a kill");
    let session = std::fs::read_to_string(home.join("data/session.json")).unwrap();
    assert!(session.contains("kept across a kill"), "{session}");
}

/// A terminal that vanishes without a signal reaching the studio first (the tmux server killed,
/// a dropped connection): the studio notices, saves what was typed and exits instead of spinning.
#[test]
fn a_vanished_terminal_ends_the_studio_and_keeps_the_session() {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    write_session(&home, &model);
    let out = root.path().join("hangup-outputs");
    // Its own tmux server, so killing it touches no other test's panes.
    let socket = format!("easel-hangup-{}", std::process::id());
    let pattern = format!("easel tui --graphics halfblocks --out {}", out.display());
    let tmux = |args: &[&str]| {
        let mut all = vec!["-L", socket.as_str()];
        all.extend_from_slice(args);
        Command::new("tmux").args(&all).output().expect("tmux runs")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "80",
        "-y",
        "24",
        &format!(
            "EASEL_HOME='{}' '{}' tui --graphics halfblocks --out '{}'",
            home.display(),
            env!("CARGO_BIN_EXE_easel"),
            out.display()
        ),
    ]);
    assert!(started.status.success());
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
    let wait = |want: &str| {
        let start = Instant::now();
        while !screen().contains(want) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "\"{want}\" did not appear: {}",
                screen()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("Prompt 0/75");
    tmux(&["send-keys", "-l", "typed just before the end"]);
    wait("typed just before the end");
    let alive = || {
        Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(alive(), "the studio is running");
    tmux(&["kill-server"]);
    let start = Instant::now();
    while alive() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let still = alive();
    if still {
        let _ = Command::new("pkill").args(["-9", "-f", &pattern]).status();
    }
    assert!(
        !still,
        "the studio is still running 15 s after its terminal went away"
    );
    let session = std::fs::read_to_string(home.join("data/session.json")).unwrap();
    assert!(session.contains("typed just before the end"), "{session}");
}

/// A panic in the render worker fails that job only (the next one renders); a panic on the UI
/// thread restores the terminal, prints what happened, exits non-zero and keeps the session.
#[test]
fn panics_fail_a_job_or_end_the_studio_with_the_terminal_restored() {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let (tmux, root) = start_studio(
        "panic",
        "RUST_BACKTRACE=0 EASEL_INJECT_PANIC=worker-once,ui-f12",
        "--device cpu --graphics halfblocks",
        (120, 30),
    );
    let home = root.path().join("home");
    let mut seen = Vec::new();
    tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    tmux.text("a crash test");
    tmux.wait_seen("Prompt 3/75", 10, &mut seen);
    tmux.keys(&["F5"]);
    let failed = tmux.wait_seen("the engine failed", 60, &mut seen);
    assert!(failed.contains("injected worker panic"), "{failed}");
    assert!(
        failed.contains("Prompt 3/75"),
        "the studio is still up:\n{failed}"
    );
    tmux.keys(&["F5"]);
    tmux.wait_seen("done: outputs/", 300, &mut seen);

    tmux.keys(&["F12"]);
    let end = tmux.wait_seen("END", 30, &mut seen);
    assert_restored(&end, 1, "Prompt 3/75");
    assert!(
        end.contains("injected UI panic"),
        "the panic is shown:\n{end}"
    );
    assert!(end.contains("the studio crashed"), "{end}");
    let session = std::fs::read_to_string(home.join("data/session.json")).unwrap();
    assert!(session.contains("a crash test"), "{session}");
}

/// The finished image stays drawn when the terminal is resized, re-fitted to the new size.
#[test]
fn the_image_survives_a_terminal_resize() {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let (tmux, _root) = start_studio(
        "resize",
        "",
        "--device cpu --graphics halfblocks",
        (120, 40),
    );
    let mut seen = Vec::new();
    tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    tmux.text("a red fox");
    tmux.keys(&["F5"]);
    tmux.wait_seen("done: outputs/", 300, &mut seen);
    // Half-blocks draw the picture as coloured upper/lower half-block cells.
    let blocks = |s: &str| s.matches(['▀', '▄']).count();
    let start = Instant::now();
    while blocks(&tmux.screen()) <= 100 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the picture is drawn:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (w, h) in [(80, 24), (160, 48)] {
        tmux.run(&[
            "resize-window",
            "-t",
            &tmux.session,
            "-x",
            &w.to_string(),
            "-y",
            &h.to_string(),
        ]);
        let start = Instant::now();
        let after = loop {
            let s = tmux.screen();
            let width = s.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            if width == w && blocks(&s) > 50 {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "after resizing to {w}x{h} the picture is drawn again:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(after.contains("Result 1/1"), "{after}");
    }
}

/// A first run with no model explains what to do; scripts/run's demo model is offered;
/// NO_COLOR draws without colours; Ctrl-C quits with the terminal restored.
#[test]
fn first_run_demo_no_color_and_ctrl_c() {
    if !tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    let run = |name: &str, env: &str, args: &str| {
        let root = tempfile::tempdir().unwrap();
        let script = format!(
            "cd '{}' && {env} EASEL_HOME='{}' '{}' tui --graphics halfblocks {args}; {REPORT}",
            root.path().display(),
            root.path().join("fresh-home").display(),
            env!("CARGO_BIN_EXE_easel"),
        );
        let tmux = Tmux::start(&format!("e2e-{name}"), (120, 30), &script);
        (tmux, root)
    };
    let coloured = |tmux: &Tmux| {
        let s = tmux.run(&["capture-pane", "-p", "-e", "-t", &tmux.session]);
        // A foreground colour: an SGR sequence with a parameter 30-38 or 90-97 (39 resets).
        s.split("\u{1b}[").skip(1).any(|seq| {
            let Some((params, _)) = seq.split_once('m') else {
                return false;
            };
            params
                .split(';')
                .filter_map(|p| p.parse::<u32>().ok())
                .any(|p| (30..=38).contains(&p) || (90..=97).contains(&p))
        })
    };
    let mut seen = Vec::new();

    let (tmux, _root) = run("first", "", "");
    let first = tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    assert!(first.contains("No model yet"), "{first}");
    assert!(coloured(&tmux), "colours by default");
    tmux.keys(&["C-c"]);
    let end = tmux.wait_seen("END", 30, &mut seen);
    assert_restored(&end, 0, "Prompt 0/75");

    let (tmux, _root) = run(
        "demo",
        "NO_COLOR=1",
        &format!("--demo-model '{}'", model.display()),
    );
    let demo = tmux.wait_seen("Prompt 0/75", 30, &mut seen);
    assert!(demo.contains("demo model"), "{demo}");
    assert!(!coloured(&tmux), "NO_COLOR: no colours");
    tmux.keys(&["C-c"]);
    let end = tmux.wait_seen("END", 30, &mut seen);
    assert_restored(&end, 0, "Prompt 0/75");
}
