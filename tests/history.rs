//! The history index on the real binary: two `easel generate` processes at once record every
//! image; `easel history` lists them newest first, searches, limits, prints JSON, and skips a
//! corrupt line with a warning without touching the file.
use easel::output::png::read_recipe;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

fn easel(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.env("EASEL_HOME", home).stdin(Stdio::null());
    cmd
}

fn history(home: &Path, args: &[&str]) -> Output {
    easel(home)
        .arg("history")
        .args(args)
        .output()
        .expect("easel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn parallel_generators_are_all_recorded_and_searchable() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let model = tiny_sd1();
    let out_dir = root.path().join("out");
    let children: Vec<_> = [("a Red Fox", "100"), ("a grey owl", "200")]
        .into_iter()
        .map(|(prompt, seed)| {
            easel(&home)
                .args([
                    "generate",
                    prompt,
                    "--model",
                    model.to_str().unwrap(),
                    "--seed",
                    seed,
                    "--batch",
                    "2",
                    "--steps",
                    "1",
                    "-W",
                    "32",
                    "-H",
                    "32",
                    "--device",
                    "cpu",
                    "--out",
                    out_dir.to_str().unwrap(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut written = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        written.extend(text(&out.stdout).lines().map(PathBuf::from));
    }
    assert_eq!(written.len(), 4);

    let file = home.join("data/history.jsonl");
    let raw = std::fs::read_to_string(&file).unwrap();
    assert_eq!(raw.lines().count(), 4, "{raw}");

    let all = history(&home, &["--json"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let entries = json_lines(&all);
    assert_eq!(entries.len(), 4);
    let mut recorded: Vec<PathBuf> = entries
        .iter()
        .map(|e| PathBuf::from(e["path"].as_str().unwrap()))
        .collect();
    let mut expected = written.clone();
    recorded.sort();
    expected.sort();
    assert_eq!(recorded, expected);
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = entries
        .iter()
        .map(|e| chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    for e in &entries {
        // The recorded recipe is the one inside the PNG.
        let in_png = read_recipe(Path::new(e["path"].as_str().unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(e["recipe"], serde_json::to_value(&in_png).unwrap());
    }

    let foxes = json_lines(&history(&home, &["--search", "RED FOX", "--json"]));
    let seeds: Vec<u64> = foxes
        .iter()
        .map(|e| e["recipe"]["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds, [101, 100]);
    assert_eq!(
        json_lines(&history(&home, &["--search", "tiny-SD1", "--json"])).len(),
        4
    );
    assert_eq!(
        json_lines(&history(&home, &["--limit", "1", "--json"])),
        entries[..1]
    );

    let human = history(&home, &["--search", "owl"]);
    let lines: Vec<String> = text(&human.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for line in &lines {
        assert!(
            line.contains("a grey owl") && line.contains("32x32") && line.contains("euler_a"),
            "{line}"
        );
    }
    assert!(lines[0].contains("seed 201") && lines[1].contains("seed 200"));
    let none = history(&home, &["--search", "zebra"]);
    assert!(none.status.success() && none.stdout.is_empty());
    assert!(text(&none.stderr).contains("no image matches"));

    // A corrupt line: skipped with a warning, the file left byte for byte.
    let mut damaged = raw.clone();
    damaged.push_str("{\"time\": \"2026-01-01T00:00:00Z\", \"path\": 3\n");
    std::fs::write(&file, &damaged).unwrap();
    let out = history(&home, &["--json"]);
    assert!(out.status.success());
    assert_eq!(json_lines(&out).len(), 4);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("line 5") && stderr.contains("skipped"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), damaged);
}

#[test]
fn an_empty_history_says_so() {
    let root = tempfile::tempdir().unwrap();
    let out = history(root.path(), &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        text(&out.stderr).contains("no images yet"),
        "{}",
        text(&out.stderr)
    );
    let out = history(root.path(), &["--json"]);
    assert!(out.status.success() && out.stdout.is_empty());
}
