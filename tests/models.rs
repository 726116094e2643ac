//! `easel models` against a hub on 127.0.0.1 (tests/models_hub) that serves the tiny fixture
//! models, reached through HF_ENDPOINT as a mirror would be: full pulls, a pull interrupted in
//! flight and one killed half way that resume, damaged files found and fetched again, the
//! disk check, no network, "did you mean", add / list / info / default / rm, and a pulled
//! model rendering the same pixels as the fixture folder.
mod common;
mod models_hub;

use models_hub::{sha256, Fault, Hub};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY: &str = "easel-test/tiny-sd1";
const UNET: &str = "unet/diffusion_pytorch_model.safetensors";

/// A user: their own easel home and Hugging Face cache, and a hub to pull from.
struct User {
    home: tempfile::TempDir,
    endpoint: String,
}

impl User {
    fn new(endpoint: &str) -> Self {
        Self {
            home: common::scratch(),
            endpoint: endpoint.to_string(),
        }
    }

    fn hf_home(&self) -> PathBuf {
        self.home.path().join("hf")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
        cmd.args(args)
            .stdin(Stdio::null())
            .env("EASEL_HOME", self.home.path().join("easel"))
            .env("HF_HOME", self.hf_home())
            .env("HF_ENDPOINT", &self.endpoint)
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("EASEL_TEST_FREE_BYTES");
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("easel runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded:\n{}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// A user catalog (<config>/catalog.toml) with entries for fixture folders served by the hub.
    fn catalog(&self, entries: &[(&str, &str, &Path, &str)]) {
        let mut toml = String::new();
        for (name, repo, dir, revision) in entries {
            toml.push_str(&format!(
                "[[model]]\nname = \"{name}\"\nrepo = \"{repo}\"\nrevision = \"{revision}\"\nversion = \"test\"\nresolution = 64\nfiles = [\n"
            ));
            for f in files(dir) {
                toml.push_str(&format!("  \"{f}\",\n"));
            }
            toml.push_str("]\n\n");
        }
        let path = self.home.path().join("easel/config/catalog.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, toml).unwrap();
    }

    fn repo_cache(&self, repo: &str) -> PathBuf {
        self.hf_home()
            .join("hub")
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    fn snapshot(&self, repo: &str, commit: &str) -> PathBuf {
        self.repo_cache(repo).join("snapshots").join(commit)
    }

    fn list_json(&self) -> Vec<serde_json::Value> {
        self.ok(&["models", "list", "--json"])
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn status_of(&self, name: &str) -> String {
        self.list_json()
            .into_iter()
            .find(|r| r["name"] == name)
            .map(|r| r["status"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{name} not listed"))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fixture's files, relative and sorted.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(
                    p.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Every file of the pulled snapshot has the fixture's bytes (through the cache's links).
fn assert_same_files(fixture: &Path, snapshot: &Path) {
    for f in files(fixture) {
        let want = std::fs::read(fixture.join(&f)).unwrap();
        let got = std::fs::read(snapshot.join(&f))
            .unwrap_or_else(|e| panic!("{f} missing from {}: {e}", snapshot.display()));
        assert!(want == got, "{f} differs from the fixture");
    }
}

fn served(hub: &Hub, user: &User, commit_pin: bool) -> String {
    let commit = hub.add_repo(TINY, &common::tiny_sd1());
    let rev = if commit_pin {
        commit.clone()
    } else {
        "main".into()
    };
    user.catalog(&[("tiny", TINY, &common::tiny_sd1(), &rev)]);
    commit
}

#[test]
fn a_full_pull_lands_in_the_hub_cache_and_is_listed_ready() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = served(&hub, &user, true);
    assert_eq!(user.status_of("tiny"), "not_pulled");
    let err = user.fails(&["generate", "a fox", "--model", "tiny"]);
    assert!(err.contains("easel models pull tiny"), "{err}");

    let out = user.ok(&["models", "pull", "tiny"]);
    assert!(out.contains("tiny is ready"), "{out}");
    // Not a terminal: one line per file.
    assert_eq!(
        out.matches("fetched  ").count(),
        files(&common::tiny_sd1()).len(),
        "{out}"
    );
    let snapshot = user.snapshot(TINY, &commit);
    assert_same_files(&common::tiny_sd1(), &snapshot);
    // hf-hub's layout: snapshot entries are links into blobs/ named by the hub's etag.
    let unet = snapshot.join(UNET);
    assert!(std::fs::symlink_metadata(&unet)
        .unwrap()
        .file_type()
        .is_symlink());
    let blob = unet.canonicalize().unwrap();
    assert_eq!(
        blob.file_name().unwrap().to_string_lossy(),
        sha256(&std::fs::read(common::tiny_sd1().join(UNET)).unwrap())
    );
    assert_eq!(user.status_of("tiny"), "ready");
    let info = user.ok(&["models", "info", "tiny"]);
    assert!(info.contains(&snapshot.display().to_string()), "{info}");
    assert!(info.contains(TINY), "{info}");

    // A second pull finds everything and transfers nothing.
    let before = hub.log().len();
    let again = user.ok(&["models", "pull", "tiny"]);
    assert!(again.contains("have     unet/"), "{again}");
    let transfers = hub.log()[before..]
        .iter()
        .filter(|r| r.range.as_deref() != Some("bytes=0-0"))
        .count();
    assert_eq!(transfers, 0, "{:?}", &hub.log()[before..]);
}

#[test]
fn the_sdxl_family_pulls_with_both_text_encoders() {
    let sdxl = common::cached_fixture("tiny-sdxl");
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = hub.add_repo("easel-test/tiny-sdxl", &sdxl);
    // A branch name resolves to the commit the hub reports.
    user.catalog(&[("tiny-xl", "easel-test/tiny-sdxl", &sdxl, "main")]);
    user.ok(&["models", "pull", "tiny-xl"]);
    assert_same_files(&sdxl, &user.snapshot("easel-test/tiny-sdxl", &commit));
    let row = user
        .list_json()
        .into_iter()
        .find(|r| r["name"] == "tiny-xl")
        .unwrap();
    assert_eq!(row["status"], "ready");
    assert_eq!(row["commit"], commit.as_str());
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = served(&hub, &user, true);
    let unet = std::fs::read(common::tiny_sd1().join(UNET)).unwrap();
    let after = 1_500_000;
    hub.fault(UNET, Fault::Drop { after });
    user.ok(&["models", "pull", "tiny"]);
    assert_same_files(&common::tiny_sd1(), &user.snapshot(TINY, &commit));
    let ranges: Vec<Option<String>> = hub
        .transfers(&sha256(&unet))
        .into_iter()
        .map(|r| r.range)
        .collect();
    assert_eq!(
        ranges,
        vec![
            Some("bytes=0-".to_string()),
            Some(format!("bytes={after}-"))
        ],
        "the second request continues where the connection dropped"
    );
}

#[test]
fn a_killed_pull_is_partial_then_resumes_where_it_stopped() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = served(&hub, &user, true);
    let unet = std::fs::read(common::tiny_sd1().join(UNET)).unwrap();
    let sha = sha256(&unet);
    let after = 2_000_000;
    hub.fault(UNET, Fault::Stall { after });
    let mut child = user
        .cmd(&["models", "pull", "tiny"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let part = user
        .repo_cache(TINY)
        .join("blobs")
        .join(format!("{sha}.part"));
    let start = Instant::now();
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < after as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pull never got half way"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Half a model is never usable.
    assert_eq!(user.status_of("tiny"), "partial");
    let err = user.fails(&["generate", "a fox", "--model", "tiny"]);
    assert!(err.contains("only partly downloaded"), "{err}");

    let out = user.ok(&["models", "pull", "tiny"]);
    assert!(out.contains(&format!("resumed  {UNET}")), "{out}");
    let last = hub.transfers(&sha).pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={after}-")));
    assert_same_files(&common::tiny_sd1(), &user.snapshot(TINY, &commit));
    assert_eq!(user.status_of("tiny"), "ready");
}

#[test]
fn damaged_files_are_detected_and_fetched_again() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = served(&hub, &user, true);
    let vae = "vae/diffusion_pytorch_model.safetensors";
    // In transit: the first copy has a flipped byte.
    hub.fault(vae, Fault::Corrupt);
    let out = user.ok(&["models", "pull", "tiny"]);
    assert!(out.contains("does not match the hub's hash"), "{out}");
    let vae_sha = sha256(&std::fs::read(common::tiny_sd1().join(vae)).unwrap());
    assert_eq!(hub.transfers(&vae_sha).len(), 2);
    let snapshot = user.snapshot(TINY, &commit);
    assert_same_files(&common::tiny_sd1(), &snapshot);

    // On disk afterwards: `pull --verify` hashes everything and replaces the bad file.
    let config = "unet/config.json";
    let blob = snapshot.join(config).canonicalize().unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let out = user.ok(&["models", "pull", "tiny", "--verify"]);
    assert!(
        out.contains(&format!("{config} in the cache does not match")),
        "{out}"
    );
    assert_same_files(&common::tiny_sd1(), &snapshot);
}

#[test]
fn a_mirror_serving_bad_bytes_twice_is_refused_and_leaves_nothing_usable() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    served(&hub, &user, true);
    let vae = "vae/diffusion_pytorch_model.safetensors";
    hub.fault_times(vae, Fault::Corrupt, 2);
    let err = user.fails(&["models", "pull", "tiny"]);
    assert!(
        err.contains("does not match the hub's hash even after"),
        "{err}"
    );
    assert_ne!(user.status_of("tiny"), "ready");
}

#[test]
fn no_network_says_so_and_what_to_do() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let user = User::new(&format!("http://127.0.0.1:{closed}"));
    user.catalog(&[("tiny", TINY, &common::tiny_sd1(), "main")]);
    for name in ["tiny", "sdxl-turbo"] {
        let err = user.fails(&["models", "pull", name]);
        assert!(err.contains("cannot reach http://127.0.0.1"), "{err}");
        assert!(err.contains("HF_ENDPOINT"), "{err}");
        assert!(err.contains("easel models add"), "{err}");
    }
    let out = user
        .cmd(&["models", "pull", "tiny"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains("HF_HUB_OFFLINE is set"));
    // Everything else works offline.
    assert!(user.ok(&["models", "list"]).contains("sdxl-turbo"));
    assert!(user
        .ok(&["models", "info", "sd15"])
        .contains("stable-diffusion-v1-5"));
}

#[test]
fn the_disk_is_checked_before_anything_is_downloaded() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    served(&hub, &user, true);
    let out = user
        .cmd(&["models", "pull", "tiny"])
        .env("EASEL_TEST_FREE_BYTES", "1000000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("1.0 MB free") && err.contains("HF_HOME"),
        "{err}"
    );
    assert!(hub
        .log()
        .iter()
        .all(|r| r.range.as_deref() == Some("bytes=0-0")));
    assert!(!user.repo_cache(TINY).join("snapshots").exists());
}

#[test]
fn unknown_names_get_did_you_mean_and_the_list() {
    let user = User::new("http://127.0.0.1:9");
    user.catalog(&[("tiny", TINY, &common::tiny_sd1(), "main")]);
    let err = user.fails(&["generate", "a fox", "--model", "sdxl-trubo", "--steps", "1"]);
    assert!(err.contains("did you mean sdxl-turbo?"), "{err}");
    assert!(err.contains("known models: sd15,"), "{err}");
    assert!(err.contains("tiny"), "{err}");
    let err = user.fails(&["models", "pull", "tinny"]);
    assert!(err.contains("did you mean tiny?"), "{err}");
    let err = user.fails(&["models", "info", "sd-15"]);
    assert!(err.contains("did you mean sd15"), "{err}");
}

#[test]
fn add_list_default_and_rm_of_a_local_model() {
    let user = User::new("http://127.0.0.1:9");
    let dir = user.home.path().join("My Model");
    common::copy_dir(&common::tiny_sd1(), &dir);
    let out = user.ok(&["models", "add", dir.to_str().unwrap()]);
    assert!(out.contains("added my-model (SD 1.x"), "{out}");
    let err = user.fails(&["models", "add", dir.to_str().unwrap(), "--name", "my-model"]);
    assert!(err.contains("already registered"), "{err}");
    let err = user.fails(&["models", "add", dir.to_str().unwrap(), "--name", "sdxl"]);
    assert!(err.contains("catalog model"), "{err}");

    let row = user
        .list_json()
        .into_iter()
        .find(|r| r["name"] == "my-model")
        .unwrap();
    assert_eq!(row["version"], "SD 1.x");
    assert_eq!(row["resolution"], 64);
    assert_eq!(row["status"], "ready");
    assert_eq!(
        row["size"].as_u64().unwrap(),
        files(&dir)
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
            .sum::<u64>()
    );

    user.ok(&["models", "default", "my-model"]);
    assert_eq!(user.ok(&["models", "default"]).trim(), "my-model");
    let listing = user.ok(&["models", "list"]);
    assert!(
        listing.lines().any(|l| l.starts_with("* my-model")),
        "{listing}"
    );

    // Removing a model easel did not download only forgets it.
    user.ok(&["models", "rm", "my-model"]);
    assert!(dir.join("unet").join("config.json").is_file());
    assert!(!user.list_json().iter().any(|r| r["name"] == "my-model"));
    assert!(user.ok(&["models", "default"]).contains("no default model"));
}

#[test]
fn rm_asks_and_deletes_only_what_easel_downloaded() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    let commit = served(&hub, &user, true);
    user.ok(&["models", "pull", "tiny"]);
    let snapshot = user.snapshot(TINY, &commit);
    let blobs = user.repo_cache(TINY).join("blobs");
    let err = user.fails(&["models", "rm", "tiny"]);
    assert!(err.contains("--yes"), "{err}");
    assert!(snapshot.join(UNET).is_file());

    user.ok(&["models", "rm", "tiny", "--yes"]);
    assert!(!snapshot.exists());
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(user.status_of("tiny"), "not_pulled");

    // Files already in the cache (put there by another tool) are used, and never deleted.
    user.ok(&["models", "pull", "tiny"]);
    std::fs::remove_file(user.home.path().join("easel/data/models/tiny.json")).unwrap();
    let out = user.ok(&["models", "pull", "tiny"]);
    assert!(out.contains("have     unet/"), "{out}");
    user.ok(&["models", "rm", "tiny", "--yes"]);
    assert_same_files(&common::tiny_sd1(), &snapshot);
}

#[test]
fn a_pulled_model_renders_what_its_folder_renders() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    served(&hub, &user, false);
    user.ok(&["models", "pull", "tiny"]);
    let out = user.home.path().join("out");
    let render = |name: &str, model: Option<&str>| {
        let png = out.join(name);
        let mut args = vec![
            "generate",
            "a red fox",
            "--seed",
            "7",
            "--steps",
            "2",
            "--width",
            "64",
            "--height",
            "64",
            "--device",
            "cpu",
            "--out",
        ];
        args.push(png.to_str().unwrap());
        if let Some(m) = model {
            args.extend(["--model", m]);
        }
        user.ok(&args);
        let img = image::open(&png).unwrap().to_rgb8();
        (img.dimensions(), img.into_raw())
    };
    let fixture = common::tiny_sd1();
    let by_path = render("path.png", Some(fixture.to_str().unwrap()));
    let by_name = render("name.png", Some("tiny"));
    assert!(
        by_path == by_name,
        "the pulled model renders different pixels"
    );
    // The recipe keeps the name, so the image can be made again on another machine.
    let recipe = easel::output::png::read_recipe(&out.join("name.png"))
        .unwrap()
        .expect("easel's recipe chunk");
    assert_eq!(recipe.model, "tiny");
    // No --model: the default.
    user.ok(&["models", "default", "tiny"]);
    assert!(render("default.png", None) == by_path);
}

#[test]
fn gated_repositories_and_stale_entries_say_what_to_do() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    hub.add_repo(TINY, &common::tiny_sd1());
    // The hub answers 401 for a repository it will not show (gated, private or gone).
    let toml = format!(
        "[[model]]\nname = \"gated\"\nrepo = \"easel-test/gated\"\nfiles = [\"model_index.json\"]\n\n\
         [[model]]\nname = \"stale\"\nrepo = \"{TINY}\"\nfiles = [\"model_index.json\", \"unet/gone.safetensors\"]\n\n\
         [[model]]\nname = \"pickles\"\nrepo = \"{TINY}\"\nfiles = [\"model_index.json\", \"unet/x.bin\"]\n"
    );
    let path = user.home.path().join("easel/config/catalog.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, toml).unwrap();
    let err = user.fails(&["models", "info", "sd15"]);
    assert!(err.contains("only .safetensors weights"), "{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        &text[..text.find("[[model]]\nname = \"pickles\"").unwrap()],
    )
    .unwrap();

    let err = user.fails(&["models", "pull", "gated"]);
    assert!(
        err.contains("HTTP 401") && err.contains("HF_TOKEN"),
        "{err}"
    );
    let err = user.fails(&["models", "pull", "stale"]);
    assert!(err.contains("has no unet/gone.safetensors"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn plans_and_presets_take_model_names() {
    let hub = Hub::start();
    let user = User::new(&hub.endpoint());
    served(&hub, &user, true);
    user.ok(&["models", "pull", "tiny"]);
    let root = user.home.path();
    let plan = root.join("plan.toml");
    std::fs::write(
        &plan,
        "[defaults]\nmodel = \"tiny\"\nsteps = 1\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a fox\"\nseed = 1\n",
    )
    .unwrap();
    let out = root.join("batch-out");
    let (plan_s, out_s) = (plan.to_str().unwrap(), out.to_str().unwrap());
    user.ok(&["batch", "--dry-run", plan_s, "--out", out_s]);
    user.ok(&["batch", plan_s, "--out", out_s, "--devices", "cpu"]);
    assert_eq!(
        files(&out).iter().filter(|f| f.ends_with(".png")).count(),
        1
    );

    let presets = root.join("easel/config/presets");
    std::fs::create_dir_all(&presets).unwrap();
    std::fs::write(
        presets.join("tiny-look.toml"),
        "model = \"tiny\"\nsteps = 1\n",
    )
    .unwrap();
    let png = root.join("preset.png");
    user.ok(&[
        "generate",
        "a fox",
        "--preset",
        "tiny-look",
        "--width",
        "32",
        "--height",
        "32",
        "--device",
        "cpu",
        "--out",
        png.to_str().unwrap(),
    ]);
    // An unknown name in a plan is refused before anything renders, with the closest names.
    std::fs::write(
        &plan,
        "[defaults]\nmodel = \"tinyy\"\n[[jobs]]\nprompt = \"a fox\"\nseed = 1\n",
    )
    .unwrap();
    let err = user.fails(&["batch", plan_s, "--out", out_s]);
    assert!(err.contains("did you mean tiny?"), "{err}");
}
