//! The bad-input matrix (issue 9) on the real binary: damaged models, impossible settings,
//! unreadable images, broken presets and plans, output folders that cannot be written and full
//! disks. Every refusal exits non-zero with `error:`, says what is wrong and what to do, never
//! panics, leaves no new file (temporary ones included) and leaves earlier images byte for byte
//! as they were. docs/RELIABILITY.md lists each case with the message easel gives.
mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const EARLIER: &str = "earlier.png";

/// A PNG an earlier run saved (rendered once per test binary), planted in every output folder
/// so that each case proves it leaves finished work alone.
fn earlier_png() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let dir = common::scratch();
        let file = dir.path().join("first.png");
        let run = easel_in(&dir.path().join("home"))
            .arg("generate")
            .arg("--model")
            .arg(tiny())
            .args(tiny_args())
            .args(["--seed", "11", "--out"])
            .arg(&file)
            .arg("an earlier image")
            .output()
            .expect("easel runs");
        assert!(run.status.success(), "{}", text(&run.stderr));
        std::fs::read(&file).expect("the earlier image was written")
    })
}

/// The real binary with its user files in `home`, one compute thread (the tests run several
/// processes at once on a shared machine), no stdin and no inherited backtrace setting (so a
/// panic would show its RUST_BACKTRACE hint).
fn easel_in(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.stdin(Stdio::null())
        .env("EASEL_HOME", home)
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

fn tiny() -> PathBuf {
    common::tiny_sd1()
}

/// A one-step 32x32 render on the CPU: the cheapest that still runs the whole pipeline.
fn tiny_args() -> Vec<String> {
    [
        "--device", "cpu", "--steps", "1", "--width", "32", "--height", "32",
    ]
    .map(String::from)
    .to_vec()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One case's private folder: `home/` (EASEL_HOME), `out/` holding the earlier image, and
/// whatever the case puts there (a damaged model, a plan, images).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sandbox = Sandbox {
            dir: common::scratch(),
        };
        std::fs::create_dir_all(sandbox.home()).unwrap();
        std::fs::create_dir_all(sandbox.out()).unwrap();
        std::fs::write(sandbox.out().join(EARLIER), earlier_png()).unwrap();
        sandbox
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    fn out(&self) -> PathBuf {
        self.root().join("out")
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.root().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A private copy of the tiny model, to damage.
    fn model(&self) -> PathBuf {
        let dir = self.root().join("model");
        common::copy_dir(&tiny(), &dir);
        dir
    }

    fn easel(&self) -> Command {
        easel_in(&self.home())
    }

    /// `easel generate` on `model` into out/, with the tiny settings unless `args` sets them.
    fn generate(&self, model: &Path, args: &[&OsStr]) -> Command {
        let mut cmd = self.easel();
        cmd.arg("generate").arg("--model").arg(model);
        let given = |flag: &str| args.iter().any(|a| a.to_str() == Some(flag));
        for pair in tiny_args().chunks(2) {
            if !given(&pair[0]) {
                cmd.args(pair);
            }
        }
        if !given("--out") {
            cmd.arg("--out").arg(self.out());
        }
        cmd.args(["--seed", "5"]).args(args);
        cmd
    }

    fn batch(&self, plan_text: &str, out: &Path) -> Command {
        let plan = self.file("plan.toml", plan_text.as_bytes());
        let mut cmd = self.easel();
        cmd.arg("batch").arg(plan).arg("--out").arg(out);
        cmd
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

fn refs(args: &[OsString]) -> Vec<&OsStr> {
    args.iter().map(OsString::as_os_str).collect()
}

/// What a file or folder was: small files by content, big ones (model weights) by size and
/// modification time.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    Bytes(Vec<u8>),
    Big(u64, std::time::SystemTime),
}

/// Everything under `roots`, dot-files and temporary files included.
fn snapshot(roots: &[&Path]) -> BTreeMap<PathBuf, Entry> {
    fn walk(dir: &Path, into: &mut BTreeMap<PathBuf, Entry>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                into.insert(path.clone(), Entry::Dir);
                walk(&path, into);
            } else if meta.len() < 1 << 20 {
                into.insert(path.clone(), Entry::Bytes(std::fs::read(&path).unwrap()));
            } else {
                into.insert(path, Entry::Big(meta.len(), meta.modified().unwrap()));
            }
        }
    }
    let mut all = BTreeMap::new();
    for root in roots {
        walk(root, &mut all);
    }
    all
}

/// The paths that differ between two snapshots (new, gone or changed).
fn changes(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) -> Vec<PathBuf> {
    let mut changed: Vec<PathBuf> = after
        .iter()
        .filter(|(p, e)| before.get(*p) != Some(*e))
        .map(|(p, _)| p.clone())
        .collect();
    changed.extend(before.keys().filter(|p| !after.contains_key(*p)).cloned());
    changed
}

/// Runs `cmd` and checks the refusal: non-zero exit, `error:` and every phrase in stderr (what
/// is wrong and what to do), no panic, nothing new, gone or changed under the sandbox or
/// `watched`, the earlier image intact. Returns stderr.
fn refused(case: &str, sandbox: &Sandbox, cmd: &mut Command, phrases: &[&str]) -> String {
    refused_watching(case, sandbox, cmd, &[&tiny()], phrases)
}

fn refused_watching(
    case: &str,
    sandbox: &Sandbox,
    cmd: &mut Command,
    watched: &[&Path],
    phrases: &[&str],
) -> String {
    let mut roots = vec![sandbox.root()];
    roots.extend_from_slice(watched);
    let before = snapshot(&roots);
    let run = cmd.output().expect("easel runs");
    let after = snapshot(&roots);
    let stderr = text(&run.stderr);
    // Shown with --nocapture: docs/RELIABILITY.md quotes these messages.
    eprintln!("[{case}]\n{stderr}");
    check_refusal(case, &run, phrases);
    assert_eq!(
        changes(&before, &after),
        Vec::<PathBuf>::new(),
        "{case}: files appeared, changed or went away\n{stderr}"
    );
    assert_eq!(
        std::fs::read(sandbox.out().join(EARLIER)).ok().as_deref(),
        Some(earlier_png()),
        "{case}: the earlier image changed"
    );
    stderr
}

fn check_refusal(case: &str, run: &Output, phrases: &[&str]) {
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{case}: succeeded\n{stderr}");
    assert!(stderr.contains("error:"), "{case}: no error line\n{stderr}");
    for phrase in phrases {
        assert!(
            stderr.contains(phrase),
            "{case}: expected {phrase:?} in\n{stderr}"
        );
    }
    for sign in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(sign), "{case}: panicked\n{stderr}");
    }
}

/// Runs `cmd`, which must succeed, and returns (stderr, the files it added under out/).
fn accepted(case: &str, sandbox: &Sandbox, cmd: &mut Command) -> (String, Vec<PathBuf>) {
    let before = snapshot(&[sandbox.root()]);
    let run = cmd.output().expect("easel runs");
    let after = snapshot(&[sandbox.root()]);
    let stderr = text(&run.stderr);
    eprintln!("[{case}]\n{stderr}");
    assert!(run.status.success(), "{case}: failed\n{stderr}");
    assert!(!stderr.contains("panicked"), "{case}: {stderr}");
    assert_eq!(
        std::fs::read(sandbox.out().join(EARLIER)).ok().as_deref(),
        Some(earlier_png()),
        "{case}: the earlier image changed"
    );
    let added: Vec<PathBuf> = changes(&before, &after)
        .into_iter()
        .filter(|p| !p.starts_with(sandbox.home()))
        .collect();
    (stderr, added)
}

// ---------------------------------------------------------------- damaged safetensors

/// A safetensors file taken apart: the JSON header and the data after it.
struct Parts {
    header: serde_json::Map<String, serde_json::Value>,
    data: Vec<u8>,
}

fn parts(path: &Path) -> Parts {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    Parts {
        header: serde_json::from_slice(&bytes[8..8 + len]).unwrap(),
        data: bytes[8 + len..].to_vec(),
    }
}

fn assemble(header_len: Option<u64>, header: &[u8], data: &[u8]) -> Vec<u8> {
    let len = header_len.unwrap_or(header.len() as u64);
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn unet_file(model: &Path) -> PathBuf {
    model.join("unet/diffusion_pytorch_model.safetensors")
}

/// One way to damage a model folder.
type Damage = fn(&Path);

fn damages() -> Vec<(&'static str, Damage, &'static [&'static str])> {
    const FETCH: &str = "fetch it again";
    vec![
        (
            "header length larger than the file",
            |m| {
                let f = unet_file(m);
                let mut bytes = std::fs::read(&f).unwrap();
                let len = bytes.len() as u64 + 100;
                bytes[..8].copy_from_slice(&len.to_le_bytes());
                std::fs::write(f, bytes).unwrap();
            },
            &[
                "diffusion_pytorch_model.safetensors",
                "header length",
                FETCH,
            ],
        ),
        (
            "header length 0",
            |m| {
                let f = unet_file(m);
                let mut bytes = std::fs::read(&f).unwrap();
                bytes[..8].copy_from_slice(&0u64.to_le_bytes());
                std::fs::write(f, bytes).unwrap();
            },
            &["diffusion_pytorch_model.safetensors", "header", FETCH],
        ),
        (
            "header length huge",
            |m| {
                let f = unet_file(m);
                let mut bytes = std::fs::read(&f).unwrap();
                bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
                std::fs::write(f, bytes).unwrap();
            },
            &["diffusion_pytorch_model.safetensors", "header", FETCH],
        ),
        (
            "header not JSON",
            |m| {
                let f = unet_file(m);
                let p = parts(&f);
                let len = serde_json::to_vec(&p.header).unwrap().len();
                let junk = vec![b'x'; len];
                std::fs::write(f, assemble(None, &junk, &p.data)).unwrap();
            },
            &[
                "diffusion_pytorch_model.safetensors",
                "not valid JSON",
                FETCH,
            ],
        ),
        (
            "data offsets beyond the file",
            |m| {
                let f = unet_file(m);
                let mut p = parts(&f);
                let end = p.data.len() as u64 + 1_000_000;
                p.header["conv_in.weight"]["data_offsets"][1] = end.into();
                let header = serde_json::to_vec(&p.header).unwrap();
                std::fs::write(f, assemble(None, &header, &p.data)).unwrap();
            },
            &["diffusion_pytorch_model.safetensors", "offsets", FETCH],
        ),
        (
            "dtype F64 claimed for F16 data",
            |m| {
                let f = unet_file(m);
                let mut p = parts(&f);
                p.header["conv_in.weight"]["dtype"] = "F64".into();
                let header = serde_json::to_vec(&p.header).unwrap();
                std::fs::write(f, assemble(None, &header, &p.data)).unwrap();
            },
            &["diffusion_pytorch_model.safetensors", "dtype", FETCH],
        ),
        (
            "dtype BOOL where F16 is expected",
            |m| {
                common::edit_safetensors(&unet_file(m), |tensors| {
                    for (name, t) in tensors.iter_mut() {
                        if name == "conv_in.weight" {
                            *t = t.gt(0.0);
                        }
                    }
                });
            },
            &["conv_in.weight", "Bool", "download it again"],
        ),
        (
            "a tensor with a wrong shape",
            |m| {
                common::edit_safetensors(&unet_file(m), |tensors| {
                    for (name, t) in tensors.iter_mut() {
                        if name == "conv_in.weight" {
                            *t = tch::Tensor::zeros([3, 3], (tch::Kind::Half, tch::Device::Cpu));
                        }
                    }
                });
            },
            &["conv_in.weight has shape [3, 3]", "download it again"],
        ),
        (
            "truncated in the middle of the data",
            |m| {
                let f = unet_file(m);
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
            },
            &["diffusion_pytorch_model.safetensors", "truncated", FETCH],
        ),
        (
            "truncated inside the header length",
            |m| std::fs::write(unet_file(m), b"\x10\x00\x00").unwrap(),
            &["diffusion_pytorch_model.safetensors", "truncated", FETCH],
        ),
        (
            "missing component folder (unet/)",
            |m| std::fs::remove_dir_all(m.join("unet")).unwrap(),
            &["unet", "download"],
        ),
        (
            "config.json not JSON",
            |m| std::fs::write(m.join("unet/config.json"), "{ \"in_channels\": 4,,").unwrap(),
            &["unet/config.json", "line 1"],
        ),
        (
            "config.json missing a needed key",
            |m| {
                let path = m.join("unet/config.json");
                let mut config: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                config.as_object_mut().unwrap().remove("block_out_channels");
                std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
            },
            &["unet/config.json", "block_out_channels"],
        ),
    ]
}

#[test]
fn damaged_models_are_refused_and_nothing_is_written() {
    let _guard = tch::no_grad_guard();
    for (case, damage, phrases) in damages() {
        let sandbox = Sandbox::new();
        let model = sandbox.model();
        damage(&model);
        let mut cmd = sandbox.generate(&model, &refs(&os(&["a fox"])));
        refused(case, &sandbox, &mut cmd, phrases);
    }
}

/// The tiny SD 1.x model as one file in the original layout (made by scripts/make-fixtures,
/// as tests/checkpoint.rs uses it).
fn single_file_checkpoint() -> PathBuf {
    let dir = common::cache_dir().join("fixtures").join("checkpoint-v1");
    if !dir.join("done").is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
        let status = Command::new(script)
            .args(["--only", "checkpoint_files", "--cache-dir"])
            .arg(&dir)
            .status()
            .expect("scripts/make-fixtures runs");
        assert!(status.success(), "making the checkpoint fixtures failed");
    }
    dir.join("sd1.safetensors")
}

#[test]
fn a_truncated_single_file_checkpoint_is_refused() {
    let sandbox = Sandbox::new();
    let whole = std::fs::read(single_file_checkpoint()).unwrap();
    let file = sandbox.file("tiny.safetensors", &whole[..whole.len() * 2 / 3]);
    let config = tiny();
    let mut cmd = sandbox.generate(
        &file,
        &refs(&[
            "--model-config".into(),
            config.into_os_string(),
            "a fox".into(),
        ]),
    );
    refused(
        "truncated single-file checkpoint",
        &sandbox,
        &mut cmd,
        &["tiny.safetensors", "truncated", "fetch it again"],
    );
}

#[test]
fn float64_weights_are_converted_as_diffusers_does() {
    let sandbox = Sandbox::new();
    let model = sandbox.model();
    common::edit_safetensors(&unet_file(&model), |tensors| {
        for (_, t) in tensors.iter_mut() {
            *t = t.to_kind(tch::Kind::Double);
        }
    });
    let mut cmd = sandbox.generate(&model, &refs(&os(&["a fox"])));
    let (_, added) = accepted("F64 weights", &sandbox, &mut cmd);
    assert_eq!(added.len(), 1, "{added:?}");
}

// ---------------------------------------------------------------- settings and prompts

#[test]
fn impossible_settings_are_refused_before_anything_is_written() {
    let model = tiny();
    let cases: Vec<(&str, Vec<OsString>, Vec<&str>)> = vec![
        (
            "prompt not UTF-8",
            vec![OsStr::from_bytes(b"a \xff\xfe fox").to_os_string()],
            vec!["not valid UTF-8", "a \u{FFFD}\u{FFFD} fox", "iconv"],
        ),
        (
            "negative prompt not UTF-8",
            vec![
                "--negative".into(),
                OsStr::from_bytes(b"blurry \xe9").to_os_string(),
                "a fox".into(),
            ],
            vec!["not valid UTF-8", "iconv"],
        ),
        (
            "width not a multiple of 8",
            os(&["--width", "100", "a fox"]),
            vec!["100x32 is not a multiple of 8", "try 104x32"],
        ),
        (
            "width far too large",
            os(&["--width", "65536", "--height", "65536", "a fox"]),
            vec!["width must be between 1 and 16384", "got 65536"],
        ),
        (
            "steps 0",
            os(&["--steps", "0", "a fox"]),
            vec!["steps must be between 1 and 1000", "got 0"],
        ),
        (
            "steps absurd",
            os(&["--steps", "100000", "a fox"]),
            vec!["steps must be between 1 and 1000", "got 100000"],
        ),
        (
            "guidance NaN",
            os(&["--cfg", "nan", "a fox"]),
            vec![
                "cfg must be a finite number >= 0",
                "7.5 is typical",
                "got NaN",
            ],
        ),
        (
            "guidance negative",
            os(&["--cfg", "-1", "a fox"]),
            vec![
                "cfg must be a finite number >= 0",
                "7.5 is typical",
                "got -1",
            ],
        ),
        (
            "guidance infinite",
            os(&["--cfg", "inf", "a fox"]),
            vec!["cfg must be a finite number >= 0", "got inf"],
        ),
        (
            "unknown sampler",
            os(&["--sampler", "dpm9", "a fox"]),
            vec!["unknown sampler \"dpm9\"", "choose one of", "euler_a"],
        ),
    ];
    for (case, args, phrases) in cases {
        let sandbox = Sandbox::new();
        let mut cmd = sandbox.generate(&model, &refs(&args));
        refused(case, &sandbox, &mut cmd, &phrases);
    }
}

#[test]
fn a_size_too_large_for_memory_is_refused_before_allocating_with_an_estimate() {
    let sandbox = Sandbox::new();
    let peak = sandbox.root().join("peak-rss");
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.is_file() {
        let inner = sandbox.generate(
            &tiny(),
            &refs(&os(&["--width", "16384", "--height", "16384", "a fox"])),
        );
        let mut cmd = Command::new(time);
        cmd.arg("-f").arg("%M").arg("-o").arg(&peak);
        cmd.arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        cmd
    } else {
        sandbox.generate(
            &tiny(),
            &refs(&os(&["--width", "16384", "--height", "16384", "a fox"])),
        )
    };
    let started = Instant::now();
    // The peak-RSS file is the measurement, not output: read it, then remove it before the
    // comparison of before and after.
    let before = snapshot(&[sandbox.root(), &tiny()]);
    let run = cmd.output().expect("easel runs");
    let elapsed = started.elapsed();
    let peak_kib: Option<u64> = std::fs::read_to_string(&peak)
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse().ok());
    let _ = std::fs::remove_file(&peak);
    eprintln!(
        "16384x16384 refused in {elapsed:?}, peak RSS {peak_kib:?} KiB\n{}",
        text(&run.stderr)
    );
    let after = snapshot(&[sandbox.root(), &tiny()]);
    check_refusal(
        "16384x16384",
        &run,
        &["16384x16384", "needs about", "GiB", "try a smaller size"],
    );
    assert_eq!(changes(&before, &after), Vec::<PathBuf>::new());
    assert!(
        elapsed < Duration::from_secs(30),
        "refusing took {elapsed:?}"
    );
    if time.is_file() {
        let kib = peak_kib.expect("/usr/bin/time wrote the peak RSS");
        // Loading the tiny model and libtorch takes a few hundred MiB; a 16384x16384 latent
        // alone would be 4 GiB.
        assert!(kib < 1_500_000, "peak RSS {kib} KiB");
    }
}

#[test]
fn a_100k_character_prompt_renders_in_chunks_quickly() {
    let sandbox = Sandbox::new();
    let prompt = "a red fox in the snow, ".repeat(100_000 / 23 + 1);
    let prompt = &prompt[..100_000];
    let started = Instant::now();
    let mut cmd = sandbox.generate(&tiny(), &refs(&os(&[prompt])));
    let (_, added) = accepted("100k prompt", &sandbox, &mut cmd);
    let elapsed = started.elapsed();
    eprintln!("100k prompt rendered in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    assert_eq!(added.len(), 1, "{added:?}");
    let recipe = easel::output::png::read_recipe(&added[0])
        .unwrap()
        .expect("the PNG carries its recipe");
    assert_eq!(recipe.prompt, prompt);
}

// ---------------------------------------------------------------- init images and masks

#[test]
fn unreadable_init_images_and_masks_are_refused() {
    let model = tiny();
    type Setup = fn(&Sandbox) -> Vec<OsString>;
    let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
        (
            "init image not an image",
            |s| {
                let f = s.file("photo.png", b"hello, not a picture");
                vec!["--init-image".into(), f.into(), "a fox".into()]
            },
            vec![
                "cannot read the init image",
                "photo.png",
                "give a readable PNG",
            ],
        ),
        (
            "init image a folder",
            |s| {
                let d = s.root().join("photos");
                std::fs::create_dir(&d).unwrap();
                vec!["--init-image".into(), d.into(), "a fox".into()]
            },
            vec!["photos", "is a folder", "give a readable PNG"],
        ),
        (
            "init image missing",
            |s| {
                let f = s.root().join("nowhere.png");
                vec!["--init-image".into(), f.into(), "a fox".into()]
            },
            vec!["nowhere.png", "No such file", "give a readable PNG"],
        ),
        (
            "init image empty",
            |s| {
                let f = s.file("empty.png", b"");
                vec!["--init-image".into(), f.into(), "a fox".into()]
            },
            vec!["empty.png", "the file is empty", "give a readable PNG"],
        ),
        (
            "mask not an image",
            |s| {
                let init = s.file("init.png", earlier_png());
                let mask = s.file("mask.png", b"GIF89a");
                vec![
                    "--init-image".into(),
                    init.into(),
                    "--mask".into(),
                    mask.into(),
                    "--strength".into(),
                    "1".into(),
                    "a fox".into(),
                ]
            },
            vec!["cannot read the mask", "mask.png", "give a readable PNG"],
        ),
    ];
    for (case, setup, phrases) in cases {
        let sandbox = Sandbox::new();
        let args = setup(&sandbox);
        let mut cmd = sandbox.generate(&model, &refs(&args));
        refused(case, &sandbox, &mut cmd, &phrases);
    }
}

#[test]
fn a_mask_of_another_size_is_scaled_like_the_init_image_as_diffusers_does() {
    let sandbox = Sandbox::new();
    let init = sandbox.file("init.png", earlier_png());
    let mask = sandbox.root().join("mask.png");
    image::GrayImage::from_pixel(48, 40, image::Luma([255]))
        .save(&mask)
        .unwrap();
    let mut cmd = sandbox.generate(
        &tiny(),
        &refs(&[
            "--init-image".into(),
            init.into(),
            "--mask".into(),
            mask.into(),
            "--strength".into(),
            "1".into(),
            "a fox".into(),
        ]),
    );
    let (stderr, added) = accepted("mask 48x40 on a 32x32 image", &sandbox, &mut cmd);
    assert!(
        stderr.contains("the mask is 48x40 and the init image 32x32"),
        "{stderr}"
    );
    assert_eq!(added.len(), 1, "{added:?}");
}

// ---------------------------------------------------------------- presets and plans

#[test]
fn invalid_presets_are_refused() {
    let model = tiny();
    let cases: Vec<(&str, &str, Option<&str>, Vec<&str>)> = vec![
        (
            "preset TOML syntax error",
            "broken",
            Some("schema_version = 1\nsteps = [\n"),
            vec!["broken.toml:2", "unclosed array", "fix the file"],
        ),
        (
            "preset field of the wrong type",
            "typed",
            Some("schema_version = 1\nsteps = \"many\"\n"),
            vec!["typed.toml:2", "expected a whole number", "fix the file"],
        ),
        (
            "preset that does not exist",
            "nosuch",
            None,
            vec!["no preset named \"nosuch\"", "easel preset list"],
        ),
        (
            "preset name that is a path",
            "../escape",
            None,
            vec!["not a usable preset name", "a preset is a name, not a path"],
        ),
    ];
    for (case, name, file, phrases) in cases {
        let sandbox = Sandbox::new();
        if let Some(text) = file {
            let dir = sandbox.home().join("config/presets");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
        }
        let mut cmd = sandbox.generate(&model, &refs(&os(&["--preset", name, "a fox"])));
        refused(case, &sandbox, &mut cmd, &phrases);
    }
}

#[test]
fn a_preset_with_an_unknown_field_is_kept_with_a_warning() {
    let sandbox = Sandbox::new();
    let dir = sandbox.home().join("config/presets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("newer.toml"), "schema_version = 1\nstpes = 3\n").unwrap();
    let mut cmd = sandbox.generate(&tiny(), &refs(&os(&["--preset", "newer", "a fox"])));
    let (stderr, added) = accepted("unknown preset key", &sandbox, &mut cmd);
    assert!(
        stderr.contains("kept but not used by this easel: stpes (did you mean steps?)"),
        "{stderr}"
    );
    assert_eq!(added.len(), 1, "{added:?}");
}

#[test]
fn invalid_plans_are_refused() {
    let model = tiny().display().to_string();
    let head = format!("[defaults]\nmodel = \"{model}\"\nsteps = 1\nwidth = 32\nheight = 32\n");
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "plan TOML syntax error",
            format!("{head}[[jobs]]\nprompt = \"a fox\n"),
            vec!["plan.toml:7", "fix the plan"],
        ),
        (
            "plan unknown field",
            format!("{head}[[jobs]]\nprompt = \"a\"\nstpes = 3\n"),
            vec![
                "plan.toml:8: job 1: unknown key `stpes`",
                "did you mean `steps`",
            ],
        ),
        (
            "plan seeds range backwards",
            format!("{head}[[jobs]]\nprompt = \"a\"\nseeds = \"5..1\"\n"),
            vec!["seeds = \"5..1\" is empty", "must be above the start"],
        ),
        (
            "plan count 0",
            format!("{head}[[jobs]]\nprompt = \"a\"\ncount = 0\n"),
            vec!["count must be between 1 and 10000", "got 0"],
        ),
        (
            "plan template with ..",
            format!("out = \"x/../../{{seed}}.png\"\n{head}[[jobs]]\nprompt = \"a\"\n"),
            vec!["climbs out of the output folder", "plan.toml:1"],
        ),
        (
            "plan template absolute",
            format!("out = \"/tmp/{{seed}}.png\"\n{head}[[jobs]]\nprompt = \"a\"\n"),
            vec!["is absolute", "start it without /"],
        ),
        (
            "plan value of the wrong type",
            format!("{head}cfg = \"high\"\n[[jobs]]\nprompt = \"a\"\n"),
            vec!["plan.toml:6", "cfg must be a number"],
        ),
    ];
    for (case, plan, phrases) in cases {
        let sandbox = Sandbox::new();
        let out = sandbox.out();
        let mut cmd = sandbox.batch(&plan, &out);
        refused(case, &sandbox, &mut cmd, &phrases);
    }
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.easel();
    cmd.arg("batch")
        .arg(sandbox.root().join("missing.toml"))
        .arg("--out")
        .arg(sandbox.out());
    refused(
        "plan file missing",
        &sandbox,
        &mut cmd,
        &[
            "cannot read the plan",
            "missing.toml",
            "check the path",
            "No such file",
        ],
    );
}

// ---------------------------------------------------------------- output that cannot be written

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Makes `cmd` obey file permissions: root keeps its uid but loses the capabilities that
/// override them (libtorch lives in root's home, which `nobody` could not read).
fn without_override(cmd: &Command) -> Command {
    let mut wrapped = if is_root() {
        let mut w = Command::new("setpriv");
        w.arg("--bounding-set=-dac_override,-dac_read_search")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        w
    } else {
        let mut w = Command::new(cmd.get_program());
        w.args(cmd.get_args());
        w
    };
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped.stdin(Stdio::null());
    wrapped
}

/// Whether a process started through `without_override` is really refused writing in `dir`.
fn permissions_hold(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let mut touch = Command::new("touch");
    touch.arg(&probe);
    let ok = without_override(&touch)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| !s.success());
    let _ = std::fs::remove_file(probe);
    ok
}

#[test]
fn an_unwritable_output_folder_is_refused_and_left_alone() {
    let sandbox = Sandbox::new();
    let out = sandbox.out();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let restore = || std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755));
    if !permissions_hold(&out) {
        // Root in a container without CAP_SETPCAP: nothing here can make a folder unwritable
        // to this process's children (docs/RELIABILITY.md says so).
        restore().unwrap();
        eprintln!("skipped: permissions cannot be enforced for root here");
        return;
    }
    let cases: Vec<(&str, Command, Vec<&str>)> = vec![
        (
            "generate into an unwritable folder",
            sandbox.generate(&tiny(), &refs(&os(&["a fox"]))),
            vec!["Permission denied", "choose another --out folder"],
        ),
        (
            "generate a new subfolder of an unwritable folder",
            sandbox.generate(
                &tiny(),
                &refs(&["--out".into(), out.join("sub/").into(), "a fox".into()]),
            ),
            vec!["Permission denied", "choose another --out folder"],
        ),
        (
            "generate a named file in an unwritable folder",
            sandbox.generate(
                &tiny(),
                &refs(&["--out".into(), out.join("fox.png").into(), "a fox".into()]),
            ),
            vec!["Permission denied", "choose another --out folder"],
        ),
        (
            "batch into an unwritable folder",
            sandbox.batch(
                &format!(
                    "[defaults]\nmodel = \"{}\"\nsteps = 1\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a\"\nseed = 3\n",
                    tiny().display()
                ),
                &out,
            ),
            vec!["Permission denied", "choose another --out folder"],
        ),
    ];
    let mut results = Vec::new();
    for (case, cmd, phrases) in cases {
        let mut cmd = without_override(&cmd);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let stderr = refused(case, &sandbox, &mut cmd, &phrases);
            // Refused before the model loads: no render is wasted.
            assert!(!stderr.contains("loading"), "{case}: {stderr}");
        }));
        results.push(result);
    }
    restore().unwrap();
    for r in results {
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// A `size`-byte tmpfs at `dir`; None where mounting is not permitted.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the rest of `dir`'s filesystem with one file.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
}

#[test]
fn a_full_disk_fails_clearly_and_leaves_no_partial_file() {
    let sandbox = Sandbox::new();
    let disk = sandbox.root().join("disk");
    let Some(_mount) = Tmpfs::mount(&disk, "200k") else {
        eprintln!("no tmpfs (mounting needs root): the RLIMIT_FSIZE test covers the full disk");
        return;
    };
    std::fs::write(disk.join(EARLIER), earlier_png()).unwrap();
    fill(&disk);
    let plan = format!(
        "[defaults]\nmodel = \"{}\"\nsteps = 1\nwidth = 32\nheight = 32\n[[jobs]]\nprompt = \"a\"\nseed = 3\n",
        tiny().display()
    );
    let cases: Vec<(&str, Command)> = vec![
        (
            "generate onto a full disk",
            sandbox.generate(
                &tiny(),
                &refs(&["--out".into(), disk.clone().into(), "a fox".into()]),
            ),
        ),
        (
            "generate a named file onto a full disk",
            sandbox.generate(
                &tiny(),
                &refs(&["--out".into(), disk.join("fox.png").into(), "a fox".into()]),
            ),
        ),
        ("batch onto a full disk", sandbox.batch(&plan, &disk)),
    ];
    for (case, mut cmd) in cases {
        refused_watching(
            case,
            &sandbox,
            &mut cmd,
            &[&tiny()],
            &["the disk is full", "free some space"],
        );
        assert_eq!(
            std::fs::read(disk.join(EARLIER)).ok().as_deref(),
            Some(earlier_png())
        );
    }
}

/// `cmd` limited to files of at most `bytes` (as `ulimit -f`), with SIGXFSZ ignored so that a
/// write past the limit fails with EFBIG instead of killing the process.
fn with_file_size_limit(cmd: &mut Command, bytes: u64) {
    // SAFETY: between fork and exec only async-signal-safe calls are made (setrlimit, signal).
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

#[test]
fn a_file_size_limit_fails_clearly_and_leaves_no_partial_file() {
    // A 64x64 PNG of the tiny model is about 12 KB: more than the 4 KB allowed.
    let big = ["--width", "64", "--height", "64", "a fox"];
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.generate(&tiny(), &refs(&os(&big)));
    with_file_size_limit(&mut cmd, 4096);
    refused(
        "generate past ulimit -f",
        &sandbox,
        &mut cmd,
        &["file is larger than this system allows", "ulimit -f"],
    );

    // A batch keeps its bookkeeping (the seeds file and the manifest, which records the
    // failure so a rerun retries it) but no image or temporary file.
    let sandbox = Sandbox::new();
    let out = sandbox.out();
    let plan = format!(
        "[defaults]\nmodel = \"{}\"\nsteps = 1\nwidth = 64\nheight = 64\n[[jobs]]\nprompt = \"a\"\nseed = 3\n",
        tiny().display()
    );
    let mut cmd = sandbox.batch(&plan, &out);
    with_file_size_limit(&mut cmd, 4096);
    let before = snapshot(&[&out]);
    let run = cmd.output().expect("easel runs");
    // A batch reports an image that failed on a FAILED line and goes on to the next one; the
    // exit status says that not all were made.
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    for phrase in [
        "FAILED 1-0-3.png",
        "file is larger than this system allows",
        "ulimit -f",
        "1 failed",
        "run the same command again to retry",
    ] {
        assert!(stderr.contains(phrase), "expected {phrase:?} in\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    let after = snapshot(&[&out]);
    let mut added: Vec<String> = changes(&before, &after)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    added.sort();
    assert_eq!(
        added,
        [
            "easel-batch.json",
            "easel-batch.json.lock",
            "easel-manifest.jsonl",
            "easel-manifest.jsonl.lock"
        ]
    );
    assert_eq!(
        std::fs::read(out.join(EARLIER)).ok().as_deref(),
        Some(earlier_png())
    );
}
