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

/// The committed tiny SD 1.x model in diffusers' folder layout.
pub fn tiny_sd1() -> PathBuf {
    fixtures().join("tiny-sd1")
}

pub fn reference_path(name: &str) -> PathBuf {
    fixtures().join("reference").join(name)
}

/// A reference safetensors file, read on the CPU in the stored dtype.
pub struct Reference(Weights);

impl Reference {
    pub fn open(name: &str) -> Self {
        let path = reference_path(name);
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
