//! Running out of memory, through the real binary with `EASEL_INJECT_OOM`: libtorch is asked
//! for an allocation no machine can make at the named stage, so its real error travels the
//! real path. A whole-image decode that runs out retries in tiles and gives the `--vae-tiling`
//! image; a UNet step that runs out fails with advice, the same words from `easel generate`
//! and from `easel batch` (whose worker is the studio's).
mod batch_support;

use batch_support::*;
use std::path::Path;

/// 96x96: the tiny VAE's tiles are 32 latent pixels, so a tiled decode of the 48x48 latents
/// really is tiled (and differs from a whole one).
fn generate(home: &Path, out: &Path, extra: &[&str], inject: Option<&str>) -> std::process::Output {
    let mut cmd = easel(home);
    cmd.args(["generate", "a lighthouse at dusk", "--model"])
        .arg(tiny())
        .args([
            "--steps", "1", "--seed", "7", "--width", "96", "--height", "96",
        ])
        .arg("--out")
        .arg(out)
        .args(extra);
    match inject {
        Some(point) => cmd.env("EASEL_INJECT_OOM", point),
        None => cmd.env_remove("EASEL_INJECT_OOM"),
    };
    output(&mut cmd)
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path)
        .expect("a readable PNG")
        .to_rgb8()
        .into_raw()
}

fn assert_advice(message: &str) {
    for advice in [
        "out of memory while",
        "smaller size",
        "--low-memory",
        "--vae-tiling",
    ] {
        assert!(
            message.contains(advice),
            "{advice:?} missing from:\n{message}"
        );
    }
}

#[test]
fn a_decode_that_runs_out_of_memory_retries_in_tiles() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let retried = root.path().join("retried.png");
    let run = generate(&home, &retried, &[], Some("decode-once"));
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("the VAE decode ran out of memory")
            && stderr.contains("decoded again in tiles"),
        "{stderr}"
    );
    // libtorch's own words are quoted, and no panic or backtrace is printed.
    assert!(stderr.contains("DefaultCPUAllocator"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let tiled = root.path().join("tiled.png");
    let run = generate(&home, &tiled, &["--vae-tiling"], None);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let whole = root.path().join("whole.png");
    let run = generate(&home, &whole, &[], None);
    assert!(run.status.success(), "{}", text(&run.stderr));

    assert_eq!(
        pixels(&retried),
        pixels(&tiled),
        "the retry is the tiled decode"
    );
    assert_ne!(
        pixels(&retried),
        pixels(&whole),
        "tiles at 96x96 differ from a whole decode"
    );
}

#[test]
fn a_unet_step_that_runs_out_of_memory_fails_with_advice_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let run = generate(&home, &out.join("x.png"), &[], Some("unet-once"));
    let stderr = text(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert_advice(&stderr);
    assert!(stderr.contains("out of memory while denoising"), "{stderr}");
    // What was tried: the size and its estimate.
    assert!(stderr.contains("a 96x96 render, estimated at"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists() || pngs(&out).is_empty(), "nothing is written");

    // The batch runner (the studio's worker) says the same.
    let plan = write_plan(
        root.path(),
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 1\nwidth = 96\nheight = 96\n\n[[jobs]]\n\
             name = \"one\"\nprompt = \"a lighthouse at dusk\"\nseeds = [7]\n",
            tiny()
        ),
    );
    let batch_out = root.path().join("batch");
    let run = output(
        easel(&home)
            .arg("batch")
            .arg(&plan)
            .arg("--out")
            .arg(&batch_out)
            .env("EASEL_INJECT_OOM", "unet-once"),
    );
    let batch_stderr = text(&run.stderr);
    assert!(!run.status.success(), "{batch_stderr}");
    assert_advice(&batch_stderr);
    let line = |s: &str| {
        s.lines()
            .find(|l| l.contains("out of memory while"))
            .map(|l| l[l.find("out of memory while").unwrap()..].to_string())
    };
    assert_eq!(
        line(&stderr),
        line(&batch_stderr),
        "one message for every face"
    );
    assert!(pngs(&batch_out).is_empty(), "nothing is written");
}
