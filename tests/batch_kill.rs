//! `kill -9` at random points (seeded, several times), then a rerun: the folder ends exactly as
//! a clean run leaves it (same files, same bytes), each image recorded once; and a manifest
//! line torn by a kill mid-write is ignored and its image made again.
mod batch_support;

use batch_support::*;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn plan_in(dir: &Path) -> PathBuf {
    write_plan(
        dir,
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 2\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a lighthouse\"\nseeds = \"0..4\"\n[[jobs]]\nprompt = \"a fox\"\ncount = 2\n",
            tiny()
        ),
    )
}

/// A clean run's files and how long it took.
fn clean_run() -> &'static (BTreeMap<String, Vec<u8>>, Duration, String) {
    static CLEAN: OnceLock<(BTreeMap<String, Vec<u8>>, Duration, String)> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let plan = plan_in(root.path());
        let start = Instant::now();
        let run = output(
            easel(&root.path().join("home"))
                .arg("batch")
                .arg(&plan)
                .arg("--out")
                .arg(&out),
        );
        assert!(run.status.success(), "{}", text(&run.stderr));
        let files = pngs(&out);
        assert_eq!(files.len(), 6);
        // The random seeds of `count`, so the killed runs draw the same ones.
        let state = std::fs::read_to_string(out.join("easel-batch.json")).unwrap();
        (files, start.elapsed(), state)
    })
}

/// A small seeded generator (64-bit LCG, Knuth's MMIX constants): the kill times are the same
/// on every run of the test.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Every done record's path with how many times it was recorded.
fn done_counts(out: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in manifest(out) {
        if r["status"] == "done" {
            *counts
                .entry(r["path"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    counts
}

#[test]
fn sigkill_at_random_points_neither_duplicates_nor_skips() {
    let (reference, clean_time, state) = clean_run();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = plan_in(root.path());
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("easel-batch.json"), state).unwrap();
    let mut rng = Lcg(20261128);
    let deadline = Instant::now() + Duration::from_secs(90);
    eprintln!("a clean run takes {clean_time:?}");
    let mut kills = 0;
    for _ in 0..5 {
        let mut child = easel(&home)
            .arg("batch")
            .arg(&plan)
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Somewhere within the first half of what a whole run takes: during a load, a step,
        // a PNG write or a manifest append.
        let wait = clean_time.mul_f64(0.05 + 0.45 * rng.unit());
        std::thread::sleep(wait);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let partial = pngs(&out);
        for (path, bytes) in &partial {
            assert_eq!(
                Some(bytes),
                reference.get(path),
                "{path} is whole and right"
            );
        }
        assert!(Instant::now() < deadline, "the test ran too long");
    }
    assert!(
        kills >= 3,
        "only {kills} runs were killed before they finished"
    );
    let last = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(last.status.success(), "{}", text(&last.stderr));
    assert_eq!(&pngs(&out), reference);
    let counts = done_counts(&out);
    assert_eq!(counts.len(), 6, "{counts:?}");
    assert!(
        counts.values().all(|&n| n == 1),
        "recorded twice: {counts:?}"
    );
    let status = batch_status(&home, &plan, &out);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}

#[test]
fn a_torn_manifest_line_is_ignored_and_its_image_made_again() {
    let (reference, _, state) = clean_run();
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = plan_in(root.path());
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("easel-batch.json"), state).unwrap();
    let run = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    assert!(run.status.success(), "{}", text(&run.stderr));
    // A kill in the middle of the last append: half a line, no newline.
    let path = out.join("easel-manifest.jsonl");
    let text_before = std::fs::read_to_string(&path).unwrap();
    let last_start = text_before.trim_end().rfind('\n').map_or(0, |i| i + 1);
    let last_line = &text_before[last_start..];
    let torn_path = serde_json::from_str::<serde_json::Value>(last_line).unwrap()["path"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&path, &text_before[..last_start + last_line.len() / 2]).unwrap();
    let status = batch_status(&home, &plan, &out);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        text(&status.stdout).contains(&format!("missing {torn_path}")),
        "{}",
        text(&status.stdout)
    );
    let again = output(easel(&home).arg("batch").arg(&plan).arg("--out").arg(&out));
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 rendered, 0 failed, 5 already done"),
        "{stderr}"
    );
    assert!(stderr.contains(&torn_path), "{stderr}");
    assert_eq!(&pngs(&out), reference);
    // The torn half stays as one unreadable line; the new record starts on a line of its own.
    let lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(
        lines
            .iter()
            .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
            .count(),
        1
    );
    assert_eq!(done_counts(&out).len(), 6);
}
