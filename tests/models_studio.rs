//! The studio takes model names too: with no model in its session it opens on the default set
//! by `easel models default`, and its worker loads that name and renders with it. The real
//! binary in tmux, as tests/tui_e2e.rs drives it; skips (saying why) only without tmux.
mod common;
mod tmux_support;

use std::path::Path;
use std::process::{Command, Stdio};
use tmux_support::Tmux;

fn easel(home: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .stdin(Stdio::null())
        .env("EASEL_HOME", home)
        .output()
        .expect("easel runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{args:?} failed:\n{all}");
    all
}

#[test]
fn the_studio_opens_on_the_default_model_and_renders_with_its_name() {
    if !tmux_support::tmux_present() {
        println!("skipped: tmux is not installed (apt-get install tmux)");
        return;
    }
    let root = common::scratch();
    let home = root.path().join("home");
    let fixture = common::tiny_sd1();
    easel(
        &home,
        &[
            "models",
            "add",
            fixture.to_str().unwrap(),
            "--name",
            "tinylocal",
        ],
    );
    easel(&home, &["models", "default", "tinylocal"]);
    easel(
        &home,
        &[
            "models",
            "add",
            fixture.to_str().unwrap(),
            "--name",
            "tinyother",
        ],
    );
    // A session with settings but no model: the default fills it.
    let data = home.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let session = serde_json::json!({
        "prompt": "",
        "negative_prompt": "",
        "params": { "steps": 2, "seed": 7, "seed_locked": true }
    });
    std::fs::write(data.join("session.json"), session.to_string()).unwrap();

    let script = format!(
        "cd '{}' && EASEL_HOME='{}' '{}' tui --device cpu --graphics halfblocks; echo \"EASEL-EXIT $?\"; sleep 300",
        root.path().display(),
        home.display(),
        env!("CARGO_BIN_EXE_easel"),
    );
    let tmux = Tmux::start("models-studio", (100, 30), &script);

    let first = tmux.wait_for("Prompt 0/75", 30);
    assert!(
        first.contains("tinylocal"),
        "the parameters show the default model:\n{first}"
    );
    assert!(
        !first.contains("demo model") && !first.contains("no model yet"),
        "{first}"
    );
    tmux.run(&["send-keys", "-t", &tmux.session, "-l", "a red fox"]);
    tmux.wait_for("Prompt 3/75", 10);
    tmux.run(&["send-keys", "-t", &tmux.session, "F5"]);
    let done = tmux.wait_for("done: outputs/", 300);
    let line = done.lines().find(|l| l.contains("done: outputs/")).unwrap();
    let png = root
        .path()
        .join(line.trim().trim_start_matches("done: ").trim());
    let recipe = easel::output::png::read_recipe(&png)
        .unwrap()
        .expect("easel's recipe chunk");
    assert_eq!(
        (recipe.model.as_str(), recipe.prompt.as_str(), recipe.steps),
        ("tinylocal", "a red fox", 2)
    );

    // The picker (Ctrl-K) lists the catalog and registered models; one not downloaded says
    // how to get it, a ready one becomes the model the next render uses.
    tmux.keys(&["C-k"]);
    let picker = tmux.wait_for("Models: filter", 10);
    for want in [
        "tinylocal",
        "tinyother",
        "sd15",
        "sdxl-turbo",
        "not pulled",
        "(default)",
    ] {
        assert!(picker.contains(want), "{want} is not listed:\n{picker}");
    }
    tmux.text("sdxl-tu");
    tmux.wait_for(
        "not ready: download it first with `easel models pull sdxl-turbo`",
        10,
    );
    tmux.keys(&["Enter"]);
    tmux.wait_for("sdxl-turbo is not ready", 10);
    tmux.keys(&[
        "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace",
    ]);
    tmux.text("other");
    tmux.wait_for("Enter renders with tinyother", 10);
    tmux.keys(&["Enter"]);
    tmux.wait_for("model set to tinyother", 10);
    tmux.keys(&["F5"]);
    let first_line = line.trim().to_string();
    let started = std::time::Instant::now();
    let line = loop {
        let screen = tmux.screen();
        if let Some(l) = screen
            .lines()
            .find(|l| l.contains("done: outputs/") && l.trim() != first_line)
        {
            break l.to_string();
        }
        assert!(
            started.elapsed().as_secs() < 300,
            "no second render:\n{screen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let png = root
        .path()
        .join(line.trim().trim_start_matches("done: ").trim());
    let recipe = easel::output::png::read_recipe(&png)
        .unwrap()
        .expect("easel's recipe chunk");
    assert_eq!(recipe.model, "tinyother");
    tmux.run(&["send-keys", "-t", &tmux.session, "C-q"]);
    tmux.wait_for("EASEL-EXIT 0", 30);
}
