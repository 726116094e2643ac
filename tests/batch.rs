//! `easel batch` on the tiny model through the real binary: the same bytes as `easel generate`,
//! resume from the manifest, --dry-run, --json events, failures, refusals, and SIGTERM.
mod batch_support;

use batch_support::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

fn plan_text(model: &str) -> String {
    format!(
        r#"
out = "{{preset}}/{{job}}-{{seed}}-{{index}}.png"
[defaults]
model = "{model}"
steps = 2
width = 32
height = 32

[[jobs]]
name = "light"
prompt = "a lighthouse at dusk"
seeds = [1, 2]

[[jobs]]
preset = "watercolor"
prompt = "a fox in the snow"
seeds = "10..11"
steps = 1
width = 32
height = 32

[[jobs]]
name = "cat"
prompt = "a {{red|blue}} cat"
count = 1
"#
    )
}

#[test]
fn batch_writes_what_generate_writes_and_resumes_from_the_manifest() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let model = tiny();
    let plan = write_plan(root.path(), &plan_text(&model));
    let run = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("4 rendered, 0 failed, 0 already done"),
        "{stderr}"
    );
    // No terminal: one line per image with the count, it/s and ETA.
    assert!(stderr.contains("[1/4] none/light-1-0.png"), "{stderr}");
    assert!(
        stderr.contains("it/s") && stderr.contains("eta"),
        "{stderr}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("easel-batch.json")).unwrap())
            .unwrap();
    let cat_seed = state["seeds"]["name:cat"][0].as_u64().unwrap();
    let files = pngs(&out);
    let expected: Vec<String> = vec![
        format!("none/cat-{cat_seed}-0.png"),
        "none/light-1-0.png".into(),
        "none/light-2-1.png".into(),
        "watercolor/2-10-0.png".into(),
    ];
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(files.keys().cloned().collect::<Vec<_>>(), expected_sorted);

    // Each PNG is byte for byte what `easel generate` writes for the same recipe.
    let cat_seed = cat_seed.to_string();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "none/light-2-1.png",
            vec!["a lighthouse at dusk", "--steps", "2", "--seed", "2"],
        ),
        (
            "watercolor/2-10-0.png",
            vec![
                "a fox in the snow",
                "--preset",
                "watercolor",
                "--steps",
                "1",
                "--seed",
                "10",
            ],
        ),
        (
            expected[0].as_str(),
            vec!["a {red|blue} cat", "--steps", "2", "--seed", &cat_seed],
        ),
    ];
    for (path, args) in cases {
        let single = root.path().join("single.png");
        let gen = output(
            easel(&home)
                .arg("generate")
                .args(&args)
                .args(["--model", &model, "-W", "32", "-H", "32", "--out"])
                .arg(&single),
        );
        assert!(gen.status.success(), "{}", text(&gen.stderr));
        assert!(
            std::fs::read(&single).unwrap() == files[path],
            "{path} differs from easel generate {args:?}"
        );
    }

    // The same plan again renders nothing; a deleted image is rendered again, alone.
    let again = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("0 rendered, 0 failed, 4 already done, 0 left"),
        "{}",
        text(&again.stderr)
    );
    std::fs::remove_file(out.join("none/light-2-1.png")).unwrap();
    let status = batch_status(&home, &plan, &out);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status.stdout));
    assert!(text(&status.stdout).contains("3 of 4 images done, 1 missing, 0 failed"));
    assert!(text(&status.stdout).contains("missing none/light-2-1.png"));
    let redo = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(
        text(&redo.stderr).contains("1 rendered, 0 failed, 3 already done"),
        "{}",
        text(&redo.stderr)
    );
    assert_eq!(pngs(&out), files);
    let records = manifest(&out);
    assert_eq!(records.len(), 5);
    for key in [
        "id",
        "job",
        "recipe_hash",
        "path",
        "seed",
        "render_s",
        "steps",
    ] {
        assert!(
            records.iter().all(|r| !r[key].is_null()),
            "{key}: {records:?}"
        );
    }
    let status = output(
        easel(&home)
            .args(["batch", "status", "--json"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(status.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        (report["done"].as_u64(), report["complete"].as_bool()),
        (Some(4), Some(true))
    );
}

#[test]
fn dry_run_lists_counts_and_estimates_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = write_plan(root.path(), &plan_text(&tiny()));
    let dry = output(
        easel(&home)
            .args(["batch", "--dry-run"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    let stdout = text(&dry.stdout);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    for line in [
        "todo  job light #0  seed 1  32x32  2 steps  cfg 7.5  Euler a  none/light-1-0.png",
        "none/light-2-1.png",
        "watercolor/2-10-0.png",
        "3 images: 0 done, 3 to render",
        "job cat (line 22): 1 more image(s) with random seeds, drawn and recorded at the first run",
        "estimate: about",
        "  time: 3 image(s) from a guess",
        "  disk: a guess of 1.5 bytes per pixel",
    ] {
        assert!(stdout.contains(line), "{line:?} not in:\n{stdout}");
    }
    assert!(!out.exists(), "a dry run wrote {}", out.display());
    let json = output(
        easel(&home)
            .args(["batch", "--dry-run", "--json", "--shard", "1/1"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    let events = events(&json);
    assert_eq!(of_kind(&events, "image").len(), 3);
    let estimate = of_kind(&events, "estimate")[0];
    assert_eq!(estimate["unseeded"], 1);
    assert!(estimate["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(estimate["bytes"].as_f64().unwrap(), 1.5 * 32.0 * 32.0 * 3.0);
}

#[test]
fn failures_exit_nonzero_with_a_summary_and_json_events_tell_everything() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    // 36 is not a multiple of 8: the engine refuses that image at render time.
    let plan = write_plan(
        root.path(),
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 1\nheight = 32\n[[jobs]]\nprompt = \"ok\"\nwidth = 32\nseed = 1\n[[jobs]]\nname = \"odd\"\nprompt = \"bad\"\nwidth = 36\nseed = 2\n",
            tiny()
        ),
    );
    let run = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 rendered, 1 failed, 0 already done"),
        "{stderr}"
    );
    assert!(stderr.contains("failed:\n  odd-0-2.png: "), "{stderr}");
    assert!(stderr.contains("not a multiple of 8"), "{stderr}");
    let status = batch_status(&home, &plan, &out);
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status.stdout).contains("1 of 2 images done, 0 missing, 1 failed"));

    // A rerun retries only the failed image; --json tells it as events on stdout.
    let json = output(
        easel(&home)
            .args(["batch", "--json"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(json.status.code(), Some(1));
    let events = events(&json);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(kinds.last(), Some(&"summary"));
    assert_eq!(events[0]["already_done"], 1);
    assert_eq!(events[0]["to_render"], 1);
    assert_eq!(of_kind(&events, "started").len(), 1);
    let failed = of_kind(&events, "failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["path"], "odd-0-2.png");
    assert!(of_kind(&events, "done").is_empty());
    let summary = events.last().unwrap();
    assert_eq!(
        (summary["rendered"].as_u64(), summary["failed"].as_u64()),
        (Some(0), Some(1))
    );

    // Fixed, the plan completes and every event kind shows up once for the image.
    std::fs::write(
        &plan,
        std::fs::read_to_string(&plan).unwrap().replace("36", "40"),
    )
    .unwrap();
    let json = output(
        easel(&home)
            .args(["batch", "--json"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    assert!(json.status.success(), "{}", text(&json.stderr));
    let events = batch_support::events(&json);
    assert_eq!(of_kind(&events, "progress").len(), 1, "one step");
    let done = of_kind(&events, "done");
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0]["path"].as_str(), done[0]["seed"].as_u64()),
        (Some("odd-0-2.png"), Some(2))
    );
    let png = easel::output::png::read_recipe(&out.join("odd-0-2.png"))
        .unwrap()
        .unwrap();
    assert_eq!((png.width, png.height, png.seed), (40, 32, 2));
}

#[test]
fn plan_mistakes_are_refused_with_their_line_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let model = tiny();
    let cases = [
        (
            format!("[defaults]\nmodel = \"{model}\"\n[[jobs]]\nprompt = \"a\"\n[[jobs]]\nprompt = \"b\"\nstpes = 3\n"),
            "plan.toml:7: job 2: unknown key `stpes` (did you mean `steps`?)",
        ),
        (
            format!("out = \"{{seed}}.png\"\n[defaults]\nmodel = \"{model}\"\n[[jobs]]\nprompt = \"a\"\nseed = 1\n[[jobs]]\nprompt = \"b\"\nseed = 1\n"),
            "would both be written to 1.png",
        ),
        (
            format!("out = \"../{{seed}}.png\"\n[defaults]\nmodel = \"{model}\"\n[[jobs]]\nprompt = \"a\"\n"),
            "plan.toml:1: out = \"../{seed}.png\" climbs out of the output folder",
        ),
        (
            "[[jobs]]\nprompt = \"a\"\nmodel = \"no/such/model\"\n".to_string(),
            "model no/such/model does not exist",
        ),
        (
            format!("[defaults]\nmodel = \"{model}\"\n[[jobs]]\nprompt = \"a\"\npreset = \"no-such-preset\"\n"),
            "plan.toml:3: job 1: ",
        ),
    ];
    for (plan_text, message) in cases {
        let plan = write_plan(root.path(), &plan_text);
        let run = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{plan_text}: {stderr}");
        assert!(stderr.contains(message), "expected {message:?} in {stderr}");
        assert!(!out.exists(), "{plan_text} wrote {}", out.display());
    }
    let usage = output(easel(&home).args(["batch", "--shard", "3/2", "p.toml"]));
    assert_eq!(usage.status.code(), Some(2));
    assert!(text(&usage.stderr).contains("K/N"));
}

#[test]
fn sigterm_stops_after_the_current_image_and_a_rerun_finishes() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = write_plan(
        root.path(),
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 2\nwidth = 64\nheight = 64\n[[jobs]]\nprompt = \"a\"\nseeds = \"0..8\"\n",
            tiny()
        ),
    );
    let mut child = spawn_json(&home, &plan, &out, Stdio::piped());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("\"event\":\"done\"") {
            // SAFETY: signalling the child this test started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "{seen:?}");
    let done = seen
        .iter()
        .filter(|l| l.contains("\"event\":\"done\""))
        .count();
    let started = seen
        .iter()
        .filter(|l| l.contains("\"event\":\"started\""))
        .count();
    assert!(done < 8, "it stopped early: {seen:?}");
    assert_eq!(done, started, "every image started was finished: {seen:?}");
    assert_eq!(pngs(&out).len(), done);
    assert_eq!(manifest(&out).len(), done);
    let summary: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(summary["stopped_by"], "SIGTERM");
    assert_eq!(summary["left"].as_u64(), Some(8 - done as u64));
    let rest = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(rest.status.success(), "{}", text(&rest.stderr));
    assert_eq!(pngs(&out).len(), 8);
    assert_eq!(manifest(&out).len(), 8);
}

#[test]
fn a_second_signal_quits_at_once_and_leaves_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = write_plan(
        root.path(),
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 40\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a\"\nseeds = \"0..2\"\n",
            tiny()
        ),
    );
    let mut child = spawn_json(&home, &plan, &out, Stdio::null());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        // The first step of 40 is done: the image is far from finished.
        if line.contains("\"event\":\"progress\"") {
            for _ in 0..2 {
                // SAFETY: signalling the child this test started.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            break;
        }
    }
    seen.extend(lines.map_while(Result::ok));
    assert_eq!(child.wait().unwrap().code(), Some(143), "{seen:?}");
    assert!(
        !seen.iter().any(|l| l.contains("\"event\":\"summary\"")),
        "it quit without finishing the image: {seen:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let rest = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(rest.status.success(), "{}", text(&rest.stderr));
    assert_eq!(pngs(&out).len(), 2);
}

#[test]
fn help_documents_every_placeholder_and_key() {
    let root = tempfile::tempdir().unwrap();
    let help = output(easel(root.path()).args(["batch", "--help"]));
    assert!(help.status.success());
    let help = text(&help.stdout);
    for (name, _) in easel::cli::batch::template::PLACEHOLDERS {
        assert!(
            help.contains(&format!("{{{name}}}")),
            "{{{name}}} not in:\n{help}"
        );
    }
    for key in easel::cli::batch::plan_file::RECIPE_KEYS
        .iter()
        .chain(easel::cli::batch::plan_file::PLAN_KEYS)
    {
        assert!(help.contains(key), "{key} not in:\n{help}");
    }
    for word in [
        "--shard",
        "--devices",
        "--dry-run",
        "--json",
        "status",
        "Exit status",
    ] {
        assert!(help.contains(word), "{word} not in:\n{help}");
    }
}

/// `--vae-tiling` and `--low-memory` apply to every image of a batch, as to `easel generate`.
#[test]
fn memory_flags_apply_to_every_image() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let plan = write_plan(
        root.path(),
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 2\nwidth = 96\nheight = 96\n[[jobs]]\nprompt = \"a red fox\"\nseed = 5\n",
            tiny()
        ),
    );
    let rgb = |path: &Path| image::open(path).unwrap().to_rgb8().into_raw();
    let generate = |name: &str, flag: &str| {
        let out = root.path().join(name);
        let run = output(
            easel(&home)
                .args(["generate", "a red fox", "--seed", "5", "--steps", "2"])
                .args(["--width", "96", "--height", "96", flag, "--model"])
                .arg(tiny())
                .arg("--out")
                .arg(&out),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        rgb(&out)
    };
    for flag in ["--vae-tiling", "--low-memory"] {
        let out = root.path().join(flag.trim_start_matches('-'));
        let run = output(
            easel(&home)
                .arg("batch")
                .arg(&plan)
                .arg(flag)
                .arg("--out")
                .arg(&out),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let made = pngs(&out);
        assert_eq!(made.len(), 1, "{made:?}");
        let path = out.join(made.keys().next().unwrap());
        assert_eq!(rgb(&path), generate(&format!("{flag}.png"), flag), "{flag}");
    }
    // At this size tiling changes the decode, so the comparison above could fail.
    assert_ne!(
        generate("plain.png", "--device=cpu"),
        generate("tiled.png", "--vae-tiling")
    );
}
