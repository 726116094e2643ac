//! `easel generate --preview` in a real terminal (tmux): the finished image is drawn with
//! coloured half-blocks above its path; off a terminal, it says why nothing is drawn.
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

#[test]
fn preview_draws_the_image_above_its_path_in_a_terminal() {
    let tmux_there = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !tmux_there {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let socket = format!("easel-preview-{}", std::process::id());
    let tmux = |args: &[&str]| {
        let mut all = vec!["-L", socket.as_str()];
        all.extend_from_slice(args);
        Command::new("tmux").args(&all).output().expect("tmux runs")
    };
    let script = format!(
        "cd '{}' && EASEL_HOME='{}/home' '{}' generate 'a red fox' --model '{}' --steps 2 \
         --seed 7 --preview --graphics halfblocks; echo EASEL-EXIT $?; sleep 60",
        root.path().display(),
        root.path().display(),
        env!("CARGO_BIN_EXE_easel"),
        tiny_sd1().display()
    );
    assert!(tmux(&[
        "new-session",
        "-d",
        "-x",
        "100",
        "-y",
        "40",
        "sh",
        "-c",
        &script
    ])
    .status
    .success());
    let start = Instant::now();
    let screen = loop {
        let s = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-e"]).stdout).into_owned();
        if s.contains("EASEL-EXIT") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            tmux(&["kill-server"]);
            panic!("generate did not finish:\n{s}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    tmux(&["kill-server"]);
    assert!(screen.contains("EASEL-EXIT 0"), "{screen}");
    let lines: Vec<&str> = screen.lines().collect();
    let path_line = lines
        .iter()
        .position(|l| l.contains("outputs/") && l.contains(".png"))
        .expect("the path is printed");
    let blocks = lines[..path_line]
        .iter()
        .filter(|l| l.matches('▄').count() >= 16)
        .count();
    assert!(blocks >= 8, "rows of half-blocks above the path:\n{screen}");
    // Coloured: the cells carry RGB or palette colours (escape codes kept by capture-pane -e).
    assert!(
        screen.contains("\u{1b}[38;") || screen.contains("\u{1b}[48;"),
        "the blocks are coloured"
    );
    assert!(root.path().join("outputs").read_dir().unwrap().count() == 1);
}

#[test]
fn preview_off_a_terminal_says_why_and_conflicts_with_json() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args([
            "generate",
            "a red fox",
            "--steps",
            "1",
            "--preview",
            "--model",
        ])
        .arg(tiny_sd1())
        .current_dir(root.path())
        .env("EASEL_HOME", root.path().join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.trim().ends_with(".png") && !stdout.contains('▄'),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only when standard output is a terminal"),
        "{stderr}"
    );

    let both = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(["generate", "x", "--preview", "--json", "--model"])
        .arg(tiny_sd1())
        .current_dir(root.path())
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}
