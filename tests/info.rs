//! Reading generation settings back out of PNGs: AUTOMATIC1111 and stable-diffusion.cpp texts
//! from tests/fixtures/reference/infotext (written by scripts/fixtures/infotext_ref.py from the
//! settings recorded beside them), and easel's own files; through the library and through
//! `easel info` on the real binary.
use easel::engine::pipeline::Image;
use easel::engine::schedulers::SamplerKind;
use easel::metadata::{self, ImageParameters, Source};
use easel::output::naming::OutputTarget;
use easel::output::png::{encode, text_chunk, TextChunk};
use easel::output::save_png;
use easel::recipe::{Recipe, SCHEMA_VERSION};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn cases() -> Vec<Value> {
    let path = reference_dir().join("infotext.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/make-fixtures --only infotext_ref",
            path.display()
        )
    });
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn info(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .arg("info")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("easel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The parsed settings as `--json` shows them.
fn as_json(p: &ImageParameters) -> Value {
    serde_json::to_value(p).unwrap()
}

/// Compares parsed settings with a case's expectation; the sampler goes through SamplerKind's
/// parser, so a name easel lacks must be null with its name kept in extra.Sampler.
fn check_case(case: &Value, got: &Value) {
    let name = case["name"].as_str().unwrap();
    let want = &case["expect"];
    assert_eq!(got["source"], case["source"], "{name}");
    for key in [
        "prompt",
        "negative_prompt",
        "model",
        "steps",
        "seed",
        "width",
        "height",
        "clip_skip",
    ] {
        assert_eq!(got[key], want[key], "{name}: {key}");
    }
    match want["cfg"].as_f64() {
        Some(cfg) => assert_eq!(got["cfg"].as_f64(), Some(cfg), "{name}: cfg"),
        None => assert!(got["cfg"].is_null(), "{name}: cfg"),
    }
    let mut extra = want["extra"].as_object().unwrap().clone();
    match want["sampler_name"].as_str() {
        None => assert!(got["sampler"].is_null(), "{name}"),
        Some(sampler) => match sampler.parse::<SamplerKind>() {
            Ok(kind) => assert_eq!(got["sampler"], kind.name(), "{name}"),
            Err(_) => {
                assert!(got["sampler"].is_null(), "{name}");
                extra.insert("Sampler".into(), Value::String(sampler.into()));
            }
        },
    }
    assert_eq!(got["extra"], Value::Object(extra), "{name}: extra");
    for key in [
        "schema_version",
        "device",
        "dtype",
        "batch_size",
        "index",
        "guidance_rescale",
    ] {
        assert!(got[key].is_null(), "{name}: {key}");
    }
}

#[test]
fn parses_every_reference_text_and_file() {
    let cases = cases();
    assert!(cases.len() >= 9);
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let parsed = ImageParameters::from_parameters(text, "x");
        check_case(case, &as_json(&parsed));
        let file = reference_dir().join(case["file"].as_str().unwrap());
        let (from_file, warnings) = metadata::read_png(&file).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(as_json(&from_file), as_json(&parsed), "{}", file.display());
    }
    // The sampler easel lacks stops --from and preset save, naming it.
    let quoted = reference_dir().join("infotext/a1111-quoted.png");
    let err = metadata::recipe_patch_from_png(&quoted)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"DPM adaptive\"") && err.contains("--sampler"),
        "{err}"
    );
    let patch =
        metadata::recipe_patch_from_png(&reference_dir().join("infotext/sdcpp-2026.png")).unwrap();
    assert_eq!(patch.seed, Some(5_000_000_000));
    assert_eq!(patch.sampler, Some(SamplerKind::Euler));
    assert_eq!(
        patch.prompt.as_deref(),
        Some("a pixel-art castle <lora:pixel:0.7>,\nsunset 夕日")
    );
    assert_eq!(patch.batch_size, None);
}

#[test]
fn info_json_on_the_real_binary() {
    for case in cases() {
        let file = reference_dir().join(case["file"].as_str().unwrap());
        let out = info(&[file.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        check_case(&case, &serde_json::from_str(&stdout).unwrap());
    }
}

#[test]
fn info_prints_readable_settings() {
    let file = reference_dir().join("infotext/a1111-multiline.png");
    let out = info(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "source: AUTOMATIC1111",
        "prompt: a lighthouse at dusk,\n        stormy sea,\n        (dramatic lighting:1.2)\n",
        "negative prompt: blurry,\n                 watermark, text\n",
        "model: sd15\n",
        "sampler: ddim (DDIM)\n",
        "steps: 30\n",
        "cfg: 9\n",
        "seed: 7\n",
        "size: 768x512\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let file = reference_dir().join("infotext/sdcpp-2026.png");
    let stdout = text(&info(&[file.to_str().unwrap()]).stdout);
    for line in [
        "source: stable-diffusion.cpp",
        "sunset 夕日",
        "seed: 5000000000\n",
        "  Scheduler: karras\n",
        "  Skip layers: [7, 8, 9, ]\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}

fn recipe() -> Recipe {
    Recipe {
        schema_version: SCHEMA_VERSION,
        model: "models/tiny, v1".into(),
        prompt: "a red fox\nin snow, \"quoted\"".into(),
        negative_prompt: "blurry, low quality".into(),
        sampler: SamplerKind::Ddim,
        schedule: Default::default(),
        timestep_spacing: None,
        steps: 12,
        cfg: 6.5,
        seed: 4_000_000_000,
        width: 96,
        height: 64,
        batch_size: 1,
        index: 0,
        device: "cpu".into(),
        dtype: "fp32".into(),
        clip_skip: 2,
        guidance_rescale: 0.7,
        prompt_template: Some("a {red|grey} fox\nin snow, \"quoted\"".into()),
        loras: Vec::new(),
        vae: None,
        init: None,
    }
}

fn pixel() -> Image {
    Image {
        width: 1,
        height: 1,
        rgb: vec![1, 2, 3],
    }
}

#[test]
fn easel_files_round_trip_and_fall_back_to_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let r = recipe();
    let path = save_png(
        &OutputTarget::File(dir.path().join("a.png")),
        "s",
        &r,
        "tiny, v1",
        &pixel(),
    )
    .unwrap();
    let out = info(&[path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut want = serde_json::to_value(&r).unwrap();
    want["source"] = "easel".into();
    want["extra"] = serde_json::json!({});
    assert_eq!(got, want);
    assert_eq!(
        metadata::recipe_patch_from_png(&path).unwrap(),
        easel::recipe::RecipePatch {
            batch_size: None,
            ..easel::recipe::RecipePatch::from_recipe(&r)
        }
    );

    // A recipe from a newer easel is not misread: the A1111 text is used instead, with a warning.
    let mut newer: Value = serde_json::to_value(&r).unwrap();
    newer["schema_version"] = 99.into();
    let chunks = vec![
        text_chunk(
            "parameters",
            &easel::output::a1111::parameters(&r, "tiny, v1"),
        ),
        TextChunk::Utf8 {
            keyword: "easel".into(),
            text: newer.to_string(),
        },
    ];
    let newer_path = dir.path().join("newer.png");
    std::fs::write(&newer_path, encode(&pixel(), &chunks).unwrap()).unwrap();
    let out = info(&[newer_path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("newer than this easel"),
        "{}",
        text(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["source"], "a1111");
    assert_eq!(got["prompt"], r.prompt);
    assert_eq!(got["negative_prompt"], r.negative_prompt);
    assert_eq!(got["model"], "tiny, v1");
    assert_eq!(got["sampler"], "ddim");
    assert_eq!(
        (&got["steps"], &got["seed"], &got["width"], &got["height"]),
        (
            &Value::from(12),
            &Value::from(4_000_000_000u64),
            &Value::from(96),
            &Value::from(64)
        )
    );
    assert_eq!(got["cfg"], 6.5);
}

#[test]
fn images_without_settings_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.png");
    std::fs::write(
        &bare,
        encode(&pixel(), &[text_chunk("Software", "paint")]).unwrap(),
    )
    .unwrap();
    let not_png = dir.path().join("photo.png");
    std::fs::write(&not_png, b"\xff\xd8\xff\xe0 a jpeg really").unwrap();
    let missing = dir.path().join("missing.png");
    let cases: [(&Path, &str); 3] = [
        (&bare, "has no generation settings"),
        (&not_png, "is not a readable PNG"),
        (&missing, "cannot read"),
    ];
    for (path, message) in cases {
        for json in [false, true] {
            let mut args = vec![path.to_str().unwrap()];
            if json {
                args.push("--json");
            }
            let out = info(&args);
            let stderr = text(&out.stderr);
            assert!(!out.status.success(), "{}", path.display());
            assert!(
                stderr.contains("error:") && stderr.contains(message),
                "{stderr}"
            );
            assert!(stderr.contains(&path.display().to_string()), "{stderr}");
            assert!(out.stdout.is_empty());
        }
    }
    assert_eq!(
        metadata::read_png(&bare).unwrap_err().to_string(),
        format!(
            "{} has no generation settings: it carries no `easel` or `parameters` text (easel, \
             AUTOMATIC1111 and stable-diffusion.cpp write those; many sites strip them)",
            bare.display()
        )
    );
    assert!(matches!(
        ImageParameters::from_parameters("", "x").source,
        Source::A1111
    ));
}

/// `easel preset save NAME --from IMAGE.png` keeps what another program's image says.
#[test]
fn presets_save_from_other_programs_images() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_easel"))
            .args(args)
            .env("EASEL_HOME", home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let image = reference_dir().join("infotext/sdcpp-2026.png");
    let out = run(&[
        "preset",
        "save",
        "castle",
        "--from",
        image.to_str().unwrap(),
        "--steps",
        "12",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["preset", "show", "castle", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &shown["recipe"];
    assert_eq!(
        r["prompt"],
        "a pixel-art castle <lora:pixel:0.7>,\nsunset 夕日"
    );
    assert_eq!(r["negative_prompt"], "blurry, noisy");
    assert_eq!(
        (&r["seed"], &r["steps"]),
        (&Value::from(5_000_000_000u64), &Value::from(12))
    );
    assert_eq!(
        (&r["width"], &r["height"]),
        (&Value::from(256), &Value::from(384))
    );
    assert_eq!(r["sampler"], "euler");
    assert_eq!(r["cfg"], 4.5);

    let image = reference_dir().join("infotext/a1111-quoted.png");
    let out = run(&[
        "preset",
        "save",
        "knight",
        "--from",
        image.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("\"DPM adaptive\""), "{stderr}");
}
