//! Several easel processes at once lose nothing (presets, the model registry, the history,
//! favourites), and Ctrl-C at any moment of a render leaves no partial file. The batch
//! runner's kill -9 loop is tests/batch_kill.rs.
mod batch_support;

use batch_support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

fn spawn(cmd: &mut std::process::Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("easel starts")
}

fn wait_ok(children: Vec<Child>) {
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn steps_of(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    value["steps"].as_integer().unwrap() as u64
}

/// 20 `easel preset save` at once: 10 new names, and 10 replacing one name with --force, each
/// with its own step count. Every new preset is there, and every version of the replaced one
/// is either the file or a copy in the trash: none is lost.
#[test]
fn presets_saved_by_twenty_processes_at_once_are_all_kept() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let mut children = Vec::new();
    for i in 0..10u64 {
        let steps = (i + 1).to_string();
        children.push(spawn(easel(&home).args([
            "preset",
            "save",
            &format!("mine-{i}"),
            "--steps",
            &steps,
        ])));
        children.push(spawn(
            easel(&home).args(["preset", "save", "shared", "--force", "--steps", &steps]),
        ));
    }
    wait_ok(children);
    let dir = home.join("config/presets");
    for i in 0..10u64 {
        assert_eq!(steps_of(&dir.join(format!("mine-{i}.toml"))), i + 1);
    }
    let trash = home.join("data/trash/presets");
    let mut versions: Vec<u64> = files_in(&trash)
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("shared.")
        })
        .map(|p| steps_of(p))
        .collect();
    versions.push(steps_of(&dir.join("shared.toml")));
    versions.sort();
    assert_eq!(versions, (1..=10).collect::<Vec<u64>>());
    let list = output(easel(&home).args(["preset", "list"]));
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        !text(&list.stderr).contains("skipped"),
        "{}",
        text(&list.stderr)
    );
}

#[test]
fn models_added_by_processes_at_once_are_all_registered() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let children = (0..8)
        .map(|i| {
            spawn(
                easel(&home)
                    .args(["models", "add"])
                    .arg(tiny())
                    .args(["--name", &format!("tiny-{i}")]),
            )
        })
        .collect();
    wait_ok(children);
    let text = std::fs::read_to_string(home.join("config/models.toml")).unwrap();
    let registry: toml::Value = toml::from_str(&text).unwrap();
    let mut names: Vec<&str> = registry["model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        (0..8).map(|i| format!("tiny-{i}")).collect::<Vec<_>>()
    );
}

/// Two `easel generate` processes of 3 images each into one history: 6 whole records.
#[test]
fn two_processes_rendering_at_once_record_every_image_in_the_history() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let children = (0..2)
        .map(|i| {
            spawn(
                easel(&home)
                    .args(["generate", &format!("process {i}"), "--batch", "3"])
                    .args(["--steps", "1", "--width", "32", "--height", "32", "--model"])
                    .arg(tiny())
                    .arg("--out")
                    .arg(root.path().join(format!("out-{i}"))),
            )
        })
        .collect();
    wait_ok(children);
    let history = output(easel(&home).args(["history", "--json"]));
    assert!(history.status.success(), "{}", text(&history.stderr));
    let mut paths: Vec<String> = text(&history.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["path"].as_str().unwrap().to_string()
        })
        .collect();
    paths.sort();
    let mut written: Vec<String> = (0..2)
        .flat_map(|i| files_in(&root.path().join(format!("out-{i}"))))
        .map(|p| p.display().to_string())
        .collect();
    written.sort();
    assert_eq!(written.len(), 6);
    assert_eq!(paths, written, "every image is in the history, once");
}

/// Favourites are the studio's; two studios at once are threads here (each takes the lock
/// through its own open file, as two processes do).
#[test]
fn favourites_set_at_once_are_all_kept() {
    let root = tempfile::tempdir().unwrap();
    let paths = easel::paths::Paths {
        config: root.path().join("config"),
        data: root.path().join("data"),
    };
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let paths = paths.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let image = PathBuf::from(format!("/images/{t}-{i}.png"));
                    easel::tui::gallery::set_favourite(&paths, &image, true).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(easel::tui::gallery::favourites(&paths).len(), 80);
}

/// A small seeded generator: the same delays every run.
struct Draws(u64);

impl Draws {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn sigint(child: &Child) {
    // SAFETY: a signal to our own child, which has not been waited for yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
}

/// The moments a signal may land, by what easel has said on stderr so far (machine load moves
/// wall-clock times, not these): starting up, loading the model, after a sampling step, and
/// decoding and saving after the last step; each plus a seeded delay.
const MOMENTS: &[(Option<&str>, u64)] = &[
    (None, 60),
    (Some("loading "), 300),
    (Some("step 1/4"), 100),
    (Some("step 3/4"), 100),
    (Some("step 4/4"), 10),
    (Some("step 4/4"), 150),
    (Some("step 4/4"), 400),
];

/// SIGINT (once, or twice: "quit at once") at seeded moments across a whole render (start,
/// load, sampling, decode, save): afterwards there is no temporary file, and either no PNG or
/// one complete PNG with its recipe.
#[test]
fn ctrl_c_at_any_moment_leaves_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let mut draws = Draws(0x5eed_cafe);
    let mut outcomes = Vec::new();
    for trial in 0..10 {
        let out = root.path().join(format!("out-{trial}"));
        let (after, most) = MOMENTS[draws.below(MOMENTS.len() as u64) as usize];
        let delay = Duration::from_millis(draws.below(most));
        let twice = draws.below(3) == 0;
        let mut child = easel(&home)
            .args(["generate", "a red fox", "--steps", "4", "--seed", "5"])
            .args(["--width", "64", "--height", "64", "--model"])
            .arg(tiny())
            .arg("--out")
            .arg(out.join("fox.png"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in
                std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        if let Some(mark) = after {
            while let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) {
                if line.starts_with(mark) {
                    break;
                }
            }
        }
        std::thread::sleep(delay);
        sigint(&child);
        if twice {
            std::thread::sleep(Duration::from_millis(draws.below(300)));
            sigint(&child);
        }
        let status = child.wait().unwrap();
        let files = files_in(&out);
        outcomes.push(format!(
            "after {after:?} + {delay:?}, twice={twice}: {status} {files:?}"
        ));
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            assert_eq!(name, "fox.png", "a stray file: {}", outcomes.join("\n"));
            let recipe = easel::output::png::read_recipe(f)
                .unwrap_or_else(|e| panic!("{name}: {e}: {}", outcomes.join("\n")));
            assert!(recipe.is_some(), "a whole PNG carries its recipe");
            assert!(image::open(f).is_ok(), "a whole PNG decodes");
        }
        if status.success() {
            assert_eq!(files.len(), 1, "{}", outcomes.join("\n"));
        } else {
            assert!(files.is_empty(), "{}", outcomes.join("\n"));
        }
    }
    eprintln!("{}", outcomes.join("\n"));
    // A signal during sampling always cancels: the moments reached that at least once.
    assert!(
        outcomes.iter().any(|o| o.contains("130")),
        "{}",
        outcomes.join("\n")
    );
}
