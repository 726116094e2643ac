//! Inputs the fuzzers (scripts/fuzz) found or grew, fed to the same drivers the fuzz targets
//! use (fuzz/drivers.rs): every one must end in Ok or an error, never a panic; the inputs that
//! once crashed a parser must give the error that explains them.
use std::path::{Path, PathBuf};

#[path = "../fuzz/drivers.rs"]
mod drivers;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

fn run(target: &str, name: &str) -> Vec<String> {
    let driver = drivers::TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, d)| *d)
        .expect("a known target");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target)
        .join(name);
    driver(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

#[test]
fn every_kept_input_gives_ok_or_an_error_without_panicking() {
    let mut panicked = Vec::new();
    let mut empty = Vec::new();
    for (target, driver) in drivers::TARGETS {
        let files = inputs(target);
        if files.is_empty() {
            empty.push(*target);
        }
        for file in files {
            let data = std::fs::read(&file).expect("reading a regression input");
            if std::panic::catch_unwind(|| driver(&data)).is_err() {
                panicked.push(file.display().to_string());
            }
        }
    }
    assert!(panicked.is_empty(), "these inputs panic: {panicked:#?}");
    assert!(empty.is_empty(), "no regression inputs for {empty:?}");
}

fn assert_mentions(errors: &[String], want: &str) {
    assert!(
        errors.iter().any(|e| e.contains(want)),
        "no error says {want:?}; the errors were {errors:#?}"
    );
}

// Crashes fixed, found by reading the load paths while writing the safetensors and
// worker_protocol targets: each input now gives the error that explains it. Before the fixes,
// dim-past-i64, strides-past-i64 (libtorch refused the sizes: tch panicked),
// checkpoint-conv-in-1d (an index out of bounds), lora-alpha-not-scalar (tch's double_value
// panicked) and lora-down-scalar (an index out of bounds) panicked as they loaded;
// lora-rank-zero and lora-up-scalar loaded, then panicked when the LoRA was fused (a division
// by the rank, an index into the up projection's shape); and the preview allocated for the
// pixels its header claimed (up to the image crate's 512 MiB limit) from a 100-byte PNG.

#[test]
fn a_dimension_past_i64_is_an_impossible_shape_not_a_libtorch_abort() {
    for name in ["dim-past-i64.safetensors", "strides-past-i64.safetensors"] {
        let errors = run("safetensors", name);
        assert_mentions(&errors, "has the impossible shape");
    }
}

#[test]
fn a_checkpoint_whose_conv_in_is_not_4d_reads_on_to_the_next_component() {
    let errors = run("safetensors", "checkpoint-conv-in-1d.safetensors");
    // The UNet's config was made (it indexed conv_in's second dimension before) and the
    // components after it were reached.
    assert_mentions(&errors, "has no vae weights");
}

#[test]
fn lora_tensors_of_the_wrong_rank_are_explained() {
    let cases = [
        (
            "lora-alpha-not-scalar.safetensors",
            "a LoRA alpha is one number",
        ),
        (
            "lora-down-scalar.safetensors",
            "a LoRA down projection is a matrix",
        ),
        (
            "lora-rank-zero.safetensors",
            "a LoRA down projection is a matrix",
        ),
        (
            "lora-up-scalar.safetensors",
            "a LoRA up projection is a matrix",
        ),
    ];
    for (name, want) in cases {
        assert_mentions(&run("safetensors", name), want);
    }
}

#[test]
fn a_preview_png_claiming_more_pixels_than_its_bytes_hold_is_refused_before_allocating() {
    let errors = run("worker_protocol", "preview-claims-30000px.jsonl");
    assert_mentions(&errors, "claims 30000x30000 pixels, more than its");
}

#[test]
fn a_weight_that_is_not_a_number_says_how_to_write_one() {
    let errors = run("prompt_weighting", "corpus-weight-not-a-number.txt");
    assert_mentions(&errors, "is not a number: write it like (word:1.2)");
}
