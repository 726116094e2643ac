//! Sharding and several workers: `--shard K/N` parts are disjoint and together make exactly
//! what one unsharded run makes (several shards writing into one folder at once), adding jobs
//! moves no image to another shard, and `--devices cpu,cpu` splits the work between two
//! workers with the same result as one.
mod batch_support;

use batch_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const JOBS: &str = r#"
[[jobs]]
prompt = "a lighthouse at dusk"
seeds = "0..4"

[[jobs]]
name = "fox"
prompt = "a fox in the snow"
seeds = [7, 8]
"#;

fn plan_in(dir: &Path, extra: &str) -> PathBuf {
    write_plan(
        dir,
        &format!(
            "out = \"{{job}}/{{seed}}.png\"\n[defaults]\nmodel = \"{}\"\nsteps = 2\nwidth = 32\nheight = 32\n{JOBS}{extra}",
            tiny()
        ),
    )
}

/// What one worker renders for the plan, unsharded: the reference every split must equal.
fn reference() -> &'static BTreeMap<String, Vec<u8>> {
    static REFERENCE: OnceLock<BTreeMap<String, Vec<u8>>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        let plan = plan_in(root.path(), "");
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
        files
    })
}

/// The paths a shard would render, from --dry-run --json.
fn shard_paths(home: &Path, plan: &Path, shard: &str) -> BTreeSet<String> {
    let dry = output(
        easel(home)
            .args(["batch", "--dry-run", "--json", "--shard", shard])
            .arg(plan)
            .arg("--out")
            .arg(plan.with_file_name("never-written")),
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    events(&dry)
        .iter()
        .filter(|e| e["event"] == "image")
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn shards_are_disjoint_run_together_and_equal_one_run() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = plan_in(root.path(), "");
    let parts: Vec<BTreeSet<String>> = (1..=3)
        .map(|k| shard_paths(&home, &plan, &format!("{k}/3")))
        .collect();
    let all: BTreeSet<String> = reference().keys().cloned().collect();
    assert_eq!(
        parts.iter().map(BTreeSet::len).sum::<usize>(),
        all.len(),
        "{parts:?}"
    );
    assert_eq!(
        parts.iter().flatten().cloned().collect::<BTreeSet<_>>(),
        all
    );

    let first = output(
        easel(&home)
            .args(["batch", "--shard", "1/3"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(
        pngs(&out).keys().cloned().collect::<BTreeSet<_>>(),
        parts[0]
    );
    let status = batch_status(&home, &plan, &out);
    let report = text(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("{} of 6 images done", parts[0].len())),
        "{report}"
    );

    // The other two shards at once, into the same folder and manifest.
    let children: Vec<_> = ["2/3", "3/3"]
        .iter()
        .map(|shard| {
            easel(&home)
                .args(["batch", "--shard", shard])
                .arg(&plan)
                .arg("--out")
                .arg(&out)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{}", text(&done.stderr));
    }
    assert_eq!(&pngs(&out), reference());
    let records = manifest(&out);
    assert_eq!(records.len(), 6, "{records:?}");
    for (k, part) in parts.iter().enumerate() {
        let by_shard: BTreeSet<String> = records
            .iter()
            .filter(|r| r["shard"] == format!("{}/3", k + 1))
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(&by_shard, part, "shard {}/3", k + 1);
    }
    let status = batch_status(&home, &plan, &out);
    let report = text(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{report}");
    assert!(
        report.contains("6 of 6 images done, 0 missing, 0 failed"),
        "{report}"
    );
    assert!(report.contains("done by shard:"), "{report}");
}

#[test]
fn adding_jobs_moves_no_image_to_another_shard() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let before_plan = plan_in(root.path(), "");
    let before: Vec<BTreeSet<String>> = (1..=4)
        .map(|k| shard_paths(&home, &before_plan, &format!("{k}/4")))
        .collect();
    let more = "\n[[jobs]]\nname = \"more\"\nprompt = \"a boat\"\nseeds = \"0..6\"\n";
    let after_plan = plan_in(root.path(), more);
    for (k, part) in before.iter().enumerate() {
        let after = shard_paths(&home, &after_plan, &format!("{}/4", k + 1));
        assert!(
            part.is_subset(&after),
            "shard {}: {part:?} -> {after:?}",
            k + 1
        );
    }
}

#[test]
fn two_cpu_workers_split_the_work_and_match_one_worker() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = plan_in(root.path(), "");
    let run = output(
        easel(&home)
            .args(["batch", "--json", "--devices", "cpu,cpu"])
            .arg(&plan)
            .arg("--out")
            .arg(&out),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let events = events(&run);
    let workers: BTreeSet<u64> = of_kind(&events, "started")
        .iter()
        .map(|e| e["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(workers, BTreeSet::from([0, 1]), "both workers rendered");
    // One model: each worker loads it once.
    let loads: Vec<u64> = of_kind(&events, "loading")
        .iter()
        .map(|e| e["worker"].as_u64().unwrap())
        .collect();
    assert_eq!(loads.len(), 2, "{loads:?}");
    assert_eq!(of_kind(&events, "done").len(), 6);
    assert_eq!(&pngs(&out), reference());
}
