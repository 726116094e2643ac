//! The real `easel` binary: help, refusals that write nothing, and renders of the tiny model.
use easel::output::png::{read_recipe, read_text_chunks};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn easel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.stdin(Stdio::null());
    // The history of these renders goes to a scratch home, not the user's.
    cmd.env(
        "EASEL_HOME",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_generate-home"),
    );
    cmd
}

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

fn run(args: &[&str]) -> Output {
    easel().args(args).output().expect("easel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every entry of a folder (recursively), sorted, to prove nothing was written.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(listing(&p));
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn help_teaches_every_option() {
    let out = run(&["generate", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in [
        "PROMPT",
        "--model",
        "--negative",
        "--steps",
        "--cfg",
        "--seed",
        "--width",
        "--height",
        "--sampler",
        "--batch",
        "--out",
        "--device",
        "--dtype",
        "--json",
        "Examples:",
        "euler_a",
    ] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
    let top = run(&[]);
    assert!(top.status.success());
    assert!(text(&top.stdout).contains("generate"));
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let root = tempfile::tempdir().unwrap();
    let out_dir = root.path().join("out");
    let out = out_dir.to_str().unwrap();
    let model = tiny_sd1();
    let model = model.to_str().unwrap();
    let missing = root.path().join("no-such-model");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["a fox", "--model", model, "--steps", "0"],
            "steps must be between 1 and 1000",
        ),
        (
            vec!["a fox", "--model", model, "--steps", "5000"],
            "steps must be between 1 and 1000",
        ),
        (
            vec!["a fox", "--model", model, "--cfg", "nan"],
            "cfg must be a finite number",
        ),
        (
            vec!["a fox", "--model", model, "--sampler", "dpm9"],
            "unknown sampler",
        ),
        (
            vec!["a fox", "--model", model, "--batch", "0"],
            "batch must be between 1 and 64",
        ),
        (
            vec!["a fox", "--model", model, "--width", "0"],
            "width must be between",
        ),
        (
            vec!["a fox", "--model", model, "--device", "tpu"],
            "unknown device",
        ),
        (
            vec!["a fox", "--model", missing.to_str().unwrap()],
            "does not exist",
        ),
        (vec!["--model", model], "no prompt"),
        (vec!["a fox"], "--model"),
    ];
    for (args, message) in cases {
        let mut all = vec!["generate", "--out", out, "--seed", "7"];
        all.extend(args.iter().copied());
        let result = run(&all);
        let stderr = text(&result.stderr);
        assert!(!result.status.success(), "{args:?} succeeded");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(message),
            "{args:?}: expected {message:?} in {stderr}"
        );
        assert!(
            result.stdout.is_empty(),
            "{args:?} printed {}",
            text(&result.stdout)
        );
        assert!(
            listing(root.path()).is_empty(),
            "{args:?} wrote {:?}",
            listing(root.path())
        );
    }
    let jpg = root.path().join("fox.jpg");
    let result = run(&[
        "generate",
        "a fox",
        "--model",
        model,
        "--out",
        jpg.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(
        text(&result.stderr).contains("fox.png"),
        "{}",
        text(&result.stderr)
    );
    assert!(listing(root.path()).is_empty());
}

fn render_args<'a>(model: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "generate", "--model", model, "--steps", "2", "--seed", "7", "--width", "64", "--height",
        "64", "--device", "cpu", "--out", out,
    ]
}

/// Files whose names start with easel's temporary prefix.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    listing(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".easel-"))
        })
        .collect()
}

fn decoded_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn renders_tiny_model_with_json_report() {
    let root = tempfile::tempdir().unwrap();
    let model = tiny_sd1();
    let out = root.path().to_str().unwrap();
    let mut args = render_args(model.to_str().unwrap(), out);
    args.extend(["--json", "a red fox"]);
    let result = run(&args);
    let stderr = text(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 2/2"),
        "plain progress lines expected off a terminal: {stderr}"
    );
    let stdout = text(&result.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line per image and nothing else: {stdout}"
    );
    let report: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(report["seed"], 7);
    assert_eq!(
        (report["width"].as_u64(), report["height"].as_u64()),
        (Some(64), Some(64))
    );
    for key in [
        "load_s",
        "encode_s",
        "denoise_s",
        "step_s",
        "decode_s",
        "total_s",
    ] {
        let v = report["timings"][key].as_f64();
        assert!(v.is_some_and(|v| v >= 0.0), "timings.{key}: {report}");
    }
    let t = &report["timings"];
    let step_s = t["denoise_s"].as_f64().unwrap() / 2.0;
    assert!((t["step_s"].as_f64().unwrap() - step_s).abs() < 1e-9);

    let path = PathBuf::from(report["path"].as_str().unwrap());
    assert_eq!(path.parent(), Some(root.path()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with("-7-0.png") && name.len() == "YYYYmmdd-HHMMSS-7-0.png".len(),
        "{name}"
    );
    assert_eq!(decoded_size(&path), (64, 64));
    let chunks = read_text_chunks(&path).unwrap();
    let params = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
    assert_eq!(
        params,
        "a red fox\nSteps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: 7, Size: 64x64, Model: tiny-sd1"
    );
    let recipe = read_recipe(&path).unwrap().expect("an easel recipe chunk");
    assert_eq!(recipe.schema_version, 1);
    assert_eq!(
        (recipe.seed, recipe.steps, recipe.width, recipe.height),
        (7, 2, 64, 64)
    );
    assert_eq!((recipe.batch_size, recipe.index), (1, 0));
    assert_eq!(recipe.prompt, "a red fox");
    assert_eq!(
        (recipe.device.as_str(), recipe.dtype.as_str()),
        ("cpu", "fp32")
    );
    assert!(temp_files(root.path()).is_empty());
}

#[test]
fn folder_output_never_overwrites_and_batches_name_files() {
    let root = tempfile::tempdir().unwrap();
    let model = tiny_sd1();
    let model = model.to_str().unwrap();
    let dir = root.path().join("renders");
    let dir_arg = dir.to_str().unwrap();
    let mut paths = Vec::new();
    for _ in 0..2 {
        // The prompt comes from standard input here.
        let mut args = render_args(model, dir_arg);
        args.push("-");
        let mut child = easel()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a red fox\n")
            .unwrap();
        let result = child.wait_with_output().unwrap();
        assert!(result.status.success(), "{}", text(&result.stderr));
        let stdout = text(&result.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        paths.push(PathBuf::from(stdout.trim_end()));
    }
    assert_ne!(paths[0], paths[1]);
    for p in &paths {
        assert!(p.is_file());
        assert_eq!(read_recipe(p).unwrap().unwrap().prompt, "a red fox");
    }
    assert_eq!(listing(&dir).len(), 2);

    let file = root.path().join("fox.png");
    let mut args = render_args(model, file.to_str().unwrap());
    args.extend(["--batch", "2", "a red fox"]);
    let result = run(&args);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let want = [root.path().join("fox-1.png"), root.path().join("fox-2.png")];
    let printed: Vec<PathBuf> = text(&result.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(printed, want);
    // --batch is a seed sweep: each image its own render with the next seed.
    for (i, p) in want.iter().enumerate() {
        let r = read_recipe(p).unwrap().unwrap();
        let seed = 7 + i as u64;
        assert_eq!((r.seed, r.batch_size, r.index), (seed, 1, 0));
        let chunks = read_text_chunks(p).unwrap();
        let params = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
        assert!(
            params.ends_with(&format!("Seed: {seed}, Size: 64x64, Model: tiny-sd1")),
            "{params}"
        );
    }
    assert!(temp_files(root.path()).is_empty());
}

#[test]
fn ctrl_c_stops_the_render_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let model = tiny_sd1();
    let out = root.path().join("out");
    let mut args = render_args(model.to_str().unwrap(), out.to_str().unwrap());
    let steps = args.iter().position(|a| *a == "--steps").unwrap() + 1;
    args[steps] = "1000";
    args.push("a red fox");
    let mut child = easel()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "easel ended before its first step:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("step 1/1000") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("cancelled"), "{rest}");
    let last_step = rest.lines().filter(|l| l.starts_with("step ")).count();
    assert!(
        last_step < 999,
        "the render should stop within a step of Ctrl-C"
    );
    assert!(
        listing(root.path()).iter().all(|p| p.is_dir()),
        "{:?}",
        listing(root.path())
    );
}

fn decoded_rgb(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    buf
}

/// The example, word for word: the PNG holds the image diffusers makes from the same
/// inputs (its float image rounded to 8 bits; float noise may move a pixel across a rounding edge).
#[test]
fn the_red_fox_example_is_the_diffusers_image() {
    let root = tempfile::tempdir().unwrap();
    let fox = root.path().join("fox.png");
    let result = easel()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "generate",
            "a red fox",
            "--model",
            "tests/fixtures/tiny-sd1",
            "--seed",
            "7",
            "--steps",
            "4",
        ])
        .args(["--sampler", "euler_a", "--device", "cpu", "--out"])
        .arg(&fox)
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", text(&result.stderr));
    let pixels = decoded_rgb(&fox);
    let expected = reference_u8("cli-fox");
    assert_eq!(pixels.len(), expected.len());
    let worst = pixels
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "pixels differ from diffusers by up to {worst}");
}

/// A reference image from tests/fixtures/reference/pipeline.safetensors, as 8-bit RGB.
fn reference_u8(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference/pipeline.safetensors");
    let tensors = tch::Tensor::read_safetensors(&path).unwrap();
    let (_, image) = tensors
        .into_iter()
        .find(|(n, _)| n == name)
        .expect("reference case");
    let bytes = (image * 255.0)
        .round()
        .to_kind(tch::Kind::Uint8)
        .contiguous()
        .view([-1]);
    Vec::<u8>::try_from(&bytes).unwrap()
}
