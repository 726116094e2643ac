//! Helpers for the `easel batch` tests: the real binary on the tiny model, plans in scratch
//! folders, and the PNGs a run leaves behind.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The real binary, with its user files (history, presets) in `home`. One compute thread:
/// these tests run several easel processes at once on a shared machine, where libtorch's
/// spinning thread pools slow each other down many times over.
pub fn easel(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.stdin(Stdio::null())
        .env("EASEL_HOME", home)
        .env("OMP_NUM_THREADS", "1");
    cmd
}

pub fn tiny() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny-sd1")
        .display()
        .to_string()
}

pub fn write_plan(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("plan.toml");
    std::fs::write(&path, text).expect("the plan is written");
    path
}

/// `easel batch status PLAN --out OUT`, run to its end.
pub fn batch_status(home: &Path, plan: &Path, out: &Path) -> Output {
    output(
        easel(home)
            .args(["batch", "status"])
            .arg(plan)
            .arg("--out")
            .arg(out),
    )
}

/// `easel batch --json PLAN --out OUT` started, its JSON events readable on stdout.
pub fn spawn_json(home: &Path, plan: &Path, out: &Path, stderr: Stdio) -> std::process::Child {
    easel(home)
        .args(["batch", "--json"])
        .arg(plan)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("easel starts")
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("easel runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir` whose name ends in .png, by path relative to `dir`, with its bytes.
pub fn pngs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    collect(dir, dir, &mut out);
    out
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "png") {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// The manifest's records (lines that parse), as JSON.
pub fn manifest(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("easel-manifest.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// JSON-line events printed on stdout.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

pub fn of_kind<'a>(events: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}
