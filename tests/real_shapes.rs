//! A random-weight pipeline with the real SD 1.5 shapes loads with no missing, unexpected or
//! misshapen tensor. scripts/test makes it (once) in the per-user cache; it is not committed.
use easel::engine::pipeline::StableDiffusion;
use std::path::PathBuf;
use tch::{Device, Kind};

fn real_shapes_dir() -> PathBuf {
    let dir = std::env::var_os("EASEL_REAL_SHAPES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("EASEL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let base = std::env::var_os("XDG_CACHE_HOME")
                        .map(PathBuf::from)
                        .unwrap_or_else(|| {
                            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache")
                        });
                    base.join("easel")
                });
            cache.join("fixtures").join("sd15-shapes")
        });
    if !dir.join("model_index.json").is_file() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/make-fixtures");
        let status = std::process::Command::new(script)
            .args(["--only", "real_shapes", "--real-shapes-dir"])
            .arg(&dir)
            .status()
            .expect("scripts/make-fixtures runs (scripts/test sets up its Python environment)");
        assert!(status.success(), "making the SD 1.5-shaped model failed");
    }
    dir
}

#[test]
fn sd15_shaped_weights_load_by_name() {
    let model = StableDiffusion::load(&real_shapes_dir(), Device::Cpu, Kind::BFloat16)
        .unwrap_or_else(|e| panic!("SD 1.5 shapes must load cleanly: {e}"));
    assert_eq!(model.latent_scale_factor(), 8);
    assert_eq!(
        (model.defaults().width, model.defaults().height),
        (512, 512)
    );
}
