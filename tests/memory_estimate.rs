//! The memory estimate and `--low-memory`: a render that cannot fit is refused before anything
//! large is allocated, ordinary ones are not, the weight count matches the weights, and sliced
//! attention gives the unsliced images.
mod common;

use common::{assert_close, tiny_sd1};
use easel::engine::error::EngineError;
use easel::engine::memory_estimate::{available_ram, kind_bytes, safetensors_bytes};
use easel::engine::pipeline::{MemoryOptions, StableDiffusion, TextToImage};
use easel::engine::weights::{component_files, Weights};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tch::{Device, Kind};

fn request(width: i64, height: i64) -> TextToImage {
    TextToImage {
        prompt: "a lighthouse".into(),
        steps: 2,
        seed: 3,
        width,
        height,
        ..TextToImage::default()
    }
}

#[test]
fn a_render_bigger_than_the_ram_is_refused_quickly() {
    let _guard = tch::no_grad_guard();
    let sd = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).expect("loads");
    let free = available_ram().expect("/proc/meminfo is readable here");
    let huge = request(16384, 16384);
    let (_, estimate) = sd.estimate_memory(&huge);
    assert!(
        estimate.activations > free,
        "the test needs a render that cannot fit"
    );
    let started = Instant::now();
    let err = sd
        .generate(&huge, &mut |_| {}, &AtomicBool::new(false))
        .expect_err("refused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused before any work"
    );
    assert!(matches!(err, EngineError::WontFit(_)), "{err}");
    let message = err.to_string();
    for word in ["16384x16384", "GiB", "free", "smaller size", "--low-memory"] {
        assert!(message.contains(word), "{word:?} missing from: {message}");
    }
    let (_, small) = sd.estimate_memory(&request(64, 64));
    assert!(small.activations < free, "a 64x64 render fits");
}

#[test]
fn the_cli_refuses_and_writes_nothing() {
    let out_dir = common::scratch();
    let out = Command::new(env!("CARGO_BIN_EXE_easel"))
        .stdin(Stdio::null())
        .env("EASEL_HOME", out_dir.path().join("home"))
        .args(["generate", "a lighthouse", "--model"])
        .arg(tiny_sd1())
        .args([
            "--steps", "1", "--width", "16384", "--height", "16384", "--device", "cpu",
        ])
        .args(["--low-memory", "--out"])
        .arg(out_dir.path().join("out"))
        .output()
        .expect("easel runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs about"), "{stderr}");
    assert!(!out_dir.path().join("out").exists(), "nothing written");
}

#[test]
fn weights_are_counted_from_the_headers() {
    let files = component_files(&tiny_sd1().join("unet"), "diffusion_pytorch_model", None)
        .expect("weights found");
    let counted = safetensors_bytes(&files[0], Kind::Float).expect("header reads");
    let weights = Weights::open(&files, Device::Cpu, Kind::Float).expect("opens");
    let elements: i64 = weights
        .names()
        .map(|n| weights.shape_of(n).expect("listed").iter().product::<i64>())
        .sum();
    assert_eq!(counted, elements as u64 * kind_bytes(Kind::Float));
}

#[test]
fn sliced_attention_gives_the_unsliced_images() {
    let _guard = tch::no_grad_guard();
    let mut sd = StableDiffusion::load(&tiny_sd1(), Device::Cpu, Kind::Float).expect("loads");
    let r = request(32, 48);
    let plain = sd
        .generate(&r, &mut |_| {}, &AtomicBool::new(false))
        .expect("renders");
    sd.set_memory_options(MemoryOptions {
        low_memory: true,
        vae_tiling: false,
        ..MemoryOptions::default()
    });
    let sliced = sd
        .generate(&r, &mut |_| {}, &AtomicBool::new(false))
        .expect("renders");
    assert_close("sliced", &sliced.float_images, &plain.float_images, 1e-5);
}
