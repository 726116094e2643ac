//! Helpers shared by the integration tests: fixture paths and comparisons with the references
//! that scripts/make-fixtures computed with diffusers and transformers.
#![allow(dead_code)]
use easel::engine::weights::Weights;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// The device the parity tests that support it compute on: $EASEL_TEST_DEVICE (cpu, cuda,
/// cuda:N; scripts/device-check sets it on a GPU machine), else the CPU. References stay the
/// CPU's: on CUDA run with NVIDIA_TF32_OVERRIDE=0 so that fp32 is fp32.
pub fn test_device() -> Device {
    let Some(choice) = std::env::var_os("EASEL_TEST_DEVICE") else {
        return Device::Cpu;
    };
    let choice = choice.to_string_lossy();
    choice
        .parse::<easel::engine::device::DeviceChoice>()
        .and_then(|c| c.resolve())
        .unwrap_or_else(|e| panic!("EASEL_TEST_DEVICE={choice}: {e}"))
}

/// The committed tiny SD 1.x model in diffusers' folder layout.
pub fn tiny_sd1() -> PathBuf {
    fixtures().join("tiny-sd1")
}

/// The per-user cache: $EASEL_CACHE, else $XDG_CACHE_HOME/easel, else ~/.cache/easel (as
/// scripts/lib/common.sh finds it).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EASEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    base.join("easel")
}

/// The version suffix of the tiny family models' folder: scripts/fixtures/families.py's
/// `VERSION`, bumped whenever its builders change so that stale caches are not reused.
pub fn families_version() -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fixtures/families.py");
    let text = std::fs::read_to_string(&script).expect("scripts/fixtures/families.py is readable");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("VERSION = \"")?
                .strip_suffix('"')
                .map(String::from)
        })
        .expect("families.py sets VERSION")
}

/// The single-file checkpoints scripts/make-fixtures writes into the per-user cache (made on
/// first use): sd1.safetensors (tiny-sd1 as one file), vae2-ldm.safetensors and more.
pub fn cached_checkpoint() -> PathBuf {
    let cache = cache_dir().join("fixtures/checkpoint-v1");
    if !cache.join("done").is_file() {
        make_fixtures("checkpoint_files", "--cache-dir", &cache);
    }
    cache
}

/// `scripts/make-fixtures --only PART FLAG DIR`, which must succeed.
pub fn make_fixtures(part: &str, flag: &str, dir: &std::path::Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
    let status = std::process::Command::new(script)
        .args(["--only", part, flag])
        .arg(dir)
        .status()
        .expect("scripts/make-fixtures runs (scripts/test sets up its Python environment)");
    assert!(status.success(), "making the {part} fixtures failed");
}

/// A generated model that is too big to commit, made on first use into the per-user cache by
/// scripts/make-fixtures from fixed seeds (scripts/test makes them before cargo test):
/// "sd15-shapes", "sdxl-shapes", or one of the tiny family models "tiny-sd2", "tiny-sdxl",
/// "tiny-sdxl-turbo", "tiny-sd1-inpaint", "tiny-sdxl-inpaint", "tiny-sd2-inpaint". An environment variable EASEL_<NAME>_DIR (upper case,
/// dashes as underscores; EASEL_REAL_SHAPES_DIR for sd15-shapes) overrides the folder.
pub fn cached_fixture(name: &str) -> PathBuf {
    // Tests of one binary run in parallel threads: make each folder once.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let fixtures = cache_dir().join("fixtures");
    let (env, part, flag, make_dir, dir) = match name {
        "sd15-shapes" => {
            let dir = fixtures.join(name);
            (
                "EASEL_REAL_SHAPES_DIR".to_string(),
                "real_shapes",
                "--real-shapes-dir",
                dir.clone(),
                dir,
            )
        }
        "sdxl-shapes" => {
            let dir = fixtures.join(name);
            (
                "EASEL_SDXL_SHAPES_DIR".to_string(),
                "sdxl_shapes",
                "--sdxl-shapes-dir",
                dir.clone(),
                dir,
            )
        }
        "tiny-sd2" | "tiny-sdxl" | "tiny-sdxl-turbo" | "tiny-sd1-inpaint" | "tiny-sdxl-inpaint"
        | "tiny-sd2-inpaint" => {
            let root = fixtures.join(format!("families-{}", families_version()));
            let env = format!("EASEL_{}_DIR", name.to_uppercase().replace('-', "_"));
            (
                env,
                "families",
                "--families-dir",
                root.clone(),
                root.join(name),
            )
        }
        other => panic!("no cached fixture named {other}"),
    };
    if let Some(dir) = std::env::var_os(&env) {
        return PathBuf::from(dir);
    }
    let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("model_index.json").is_file() {
        make_fixtures(part, flag, &make_dir);
    }
    dir
}

/// Where a reference lives: tests/fixtures/reference/, or, for the references too big to commit,
/// the per-user cache folder that scripts/make-fixtures --cached-references fills (scripts/test
/// sets EASEL_REFERENCES_DIR; without it the first test that needs one makes them).
pub fn reference_path(name: &str) -> PathBuf {
    const CACHED: &[&str] = &[
        "samplers_a",
        "samplers_b",
        "prompt",
        "checkpoint",
        "families",
        "sdxl",
        "img2img",
        "scheduler_img2img",
        "vae_tiling",
        "taesd",
    ];
    let stem = name.split(['/', '.']).next().unwrap_or(name);
    let cached = CACHED.iter().any(|c| {
        stem == *c || stem.starts_with(&format!("{c}_")) || stem.starts_with(&format!("{c}-"))
    });
    if cached {
        cached_references().join(name)
    } else {
        fixtures().join("reference").join(name)
    }
}

/// A path as the references' JSON names it, relative to tests/fixtures ("reference/..." or
/// "tiny-sd1/...").
pub fn fixture_path(rel: &str) -> PathBuf {
    match rel.strip_prefix("reference/") {
        Some(name) => reference_path(name),
        None => fixtures().join(rel),
    }
}

fn cached_references() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("EASEL_REFERENCES_DIR") {
            return PathBuf::from(dir);
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
        let out = std::process::Command::new(script)
            .arg("--cached-references")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/make-fixtures runs (scripts/test sets up its Python environment)");
        assert!(out.status.success(), "making the cached references failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("make-fixtures prints the folder")
                .trim(),
        )
    })
    .clone()
}

/// A reference safetensors file, read on the CPU in the stored dtype.
pub struct Reference(Weights);

impl Reference {
    pub fn open(name: &str) -> Self {
        Self::at(reference_path(name))
    }

    /// A reference file outside the references folder.
    pub fn at(path: PathBuf) -> Self {
        assert!(
            path.is_file(),
            "{} is missing: run scripts/make-fixtures",
            path.display()
        );
        Reference(Weights::open(&[path], Device::Cpu, Kind::Float).expect("reference file reads"))
    }

    pub fn get(&self, name: &str) -> Tensor {
        self.0
            .read_raw(name)
            .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"))
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.names().map(String::from).collect();
        v.sort();
        v
    }
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = b.to_device(Device::Cpu).to_kind(Kind::Double);
    (a - b).abs().max().double_value(&[])
}

/// Asserts that `actual` matches the reference within `tol` (max absolute difference).
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f64) {
    let diff = max_abs_diff(actual, expected);
    assert!(diff <= tol, "{what}: max abs diff {diff:e} > {tol:e}");
    // A reference that is all zeros would make the comparison meaningless.
    let scale = expected.to_kind(Kind::Double).abs().max().double_value(&[]);
    assert!(scale > 0.0, "{what}: the reference is all zeros");
}

/// A fresh temporary folder, removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("easel-test-")
        .tempdir()
        .expect("a temporary folder")
}

/// Copies a folder tree (fixtures into scratch folders).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Rewrites a safetensors file through `edit`, which may change, add or drop tensors.
pub fn edit_safetensors(path: &std::path::Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let mut tensors = Tensor::read_safetensors(path).expect("readable safetensors");
    edit(&mut tensors);
    Tensor::write_safetensors(&tensors, path).expect("writable safetensors");
}

/// A UNet folder (config.json and weights) loaded alone, every tensor used.
pub fn load_unet(
    dir: &std::path::Path,
    device: Device,
    kind: Kind,
) -> easel::engine::models::unet::UNet2DConditionModel {
    use easel::engine::models::{unet::UNet2DConditionModel, unet_config::UNetConfig};
    let config = UNetConfig::from_file(&dir.join("config.json")).expect("config reads");
    let files = easel::engine::weights::component_files(dir, "diffusion_pytorch_model", None)
        .expect("weights found");
    let weights = Weights::open(&files, device, kind).expect("weights open");
    let unet = UNet2DConditionModel::new(&weights.root(), &config).expect("unet builds");
    weights.finish().expect("every tensor used and present");
    unet
}
