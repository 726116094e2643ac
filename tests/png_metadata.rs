//! PNG metadata against PIL, which is how AUTOMATIC1111 writes and reads its `parameters` text:
//! easel reads PIL's files, picks the same chunk types, and its own files round-trip.
use easel::engine::pipeline::Image;
use easel::engine::schedulers::SamplerKind;
use easel::output::a1111;
use easel::output::naming::OutputTarget;
use easel::output::png::{self, read_text_chunks, TextChunk};
use easel::output::save_png;
use easel::recipe::{Recipe, SCHEMA_VERSION};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn reference() -> Value {
    let path = reference_dir().join("png_ref.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/make-fixtures --only png_ref",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// Decodes an 8-bit RGB PNG to (width, height, pixels).
fn decode_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = ::png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, ::png::ColorType::Rgb);
    assert_eq!(info.bit_depth, ::png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// (keyword, text) pairs, sorted, for comparisons that ignore chunk order.
fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn files(reference: &Value) -> &Vec<Value> {
    reference["files"].as_array().unwrap()
}

fn expected_chunks(file: &Value) -> Vec<(String, String, String)> {
    file["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |i: usize| c[i].as_str().unwrap().to_string();
            (s(0), s(1), s(2))
        })
        .collect()
}

#[test]
fn reads_text_chunks_that_pil_wrote() {
    let r = reference();
    assert!(files(&r).len() >= 5);
    for file in files(&r) {
        let path = reference_dir().join(file["file"].as_str().unwrap());
        let want: Vec<(String, String)> = expected_chunks(file)
            .into_iter()
            .map(|(_, k, t)| (k, t))
            .collect();
        let got = read_text_chunks(&path).unwrap();
        assert_eq!(sorted(got), sorted(want), "{}", path.display());
        let (w, h, rgb) = decode_rgb(&path);
        assert_eq!(
            (w as u64, h as u64),
            (
                file["width"].as_u64().unwrap(),
                file["height"].as_u64().unwrap()
            )
        );
        let want_rgb: Vec<u8> = file["rgb"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(rgb, want_rgb);
    }
}

#[test]
fn picks_the_chunk_type_pil_picks() {
    let r = reference();
    let mut seen = std::collections::HashSet::new();
    for file in files(&r) {
        for (kind, keyword, text) in expected_chunks(file) {
            if keyword != "parameters" {
                continue;
            }
            let ours = match png::text_chunk(&keyword, &text) {
                TextChunk::Latin1 { .. } => "tEXt",
                TextChunk::Utf8 { .. } => "iTXt",
            };
            assert_eq!(ours, kind, "{text:?}");
            seen.insert(kind);
        }
    }
    assert_eq!(
        seen.len(),
        2,
        "the reference must exercise both tEXt and iTXt"
    );
}

#[test]
fn cfg_is_written_as_python_writes_floats() {
    for pair in reference()["python_str_floats"].as_array().unwrap() {
        let x = pair[0].as_f64().unwrap();
        let want = pair[1].as_str().unwrap();
        assert_eq!(a1111::python_float(x), want, "{x}");
    }
}

fn recipe(prompt: &str, negative: &str) -> Recipe {
    Recipe {
        schema_version: SCHEMA_VERSION,
        model: "tests/fixtures/tiny-sd1".into(),
        prompt: prompt.into(),
        negative_prompt: negative.into(),
        sampler: SamplerKind::Ddim,
        schedule: Default::default(),
        timestep_spacing: None,
        steps: 4,
        cfg: 7.5,
        seed: 7,
        width: 6,
        height: 4,
        batch_size: 2,
        index: 1,
        device: "cpu".into(),
        dtype: "fp32".into(),
        clip_skip: 1,
        guidance_rescale: 0.0,
        prompt_template: None,
        loras: Vec::new(),
        vae: None,
        init: None,
    }
}

fn gradient(width: u32, height: u32) -> Image {
    let rgb = (0..width * height * 3)
        .map(|i| (i * 37 % 256) as u8)
        .collect();
    Image { width, height, rgb }
}

/// The chunk type that carries `keyword` in the file, read from the raw bytes.
fn chunk_type(path: &Path, keyword: &str) -> String {
    let data = std::fs::read(path).unwrap();
    let mut pos = 8;
    while pos + 8 <= data.len() {
        let n = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&data[pos + 4..pos + 8]).into_owned();
        let body = &data[pos + 8..pos + 8 + n];
        if body.starts_with(keyword.as_bytes()) && body.get(keyword.len()) == Some(&0) {
            return kind;
        }
        pos += 12 + n;
    }
    panic!("no chunk {keyword} in {}", path.display());
}

#[test]
fn written_png_round_trips_recipe_parameters_and_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let target = OutputTarget::Dir(dir.path().to_path_buf());
    for (prompt, negative, params_type) in [
        ("a red fox, café", "blurry", "tEXt"),
        ("a fox 狐 🦊", "", "iTXt"),
    ] {
        let r = recipe(prompt, negative);
        let image = gradient(r.width, r.height);
        let path = save_png(&target, "20260101-000000", &r, "tiny-sd1", &image).unwrap();
        let chunks = read_text_chunks(&path).unwrap();
        let get = |k: &str| {
            chunks
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, t)| t.clone())
                .unwrap()
        };
        let params = get("parameters");
        assert_eq!(params, a1111::parameters(&r, "tiny-sd1"));
        assert!(params.starts_with(prompt));
        assert_eq!(
            params.contains("\nNegative prompt: blurry\n"),
            !negative.is_empty()
        );
        assert!(params.ends_with(
            "Steps: 4, Sampler: DDIM, CFG scale: 7.5, Seed: 7, Size: 6x4, Model: tiny-sd1, Batch size: 2, Batch pos: 1"
        ), "{params}");
        let json: Value = serde_json::from_str(&get("easel")).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(Recipe::from_json(&get("easel")).unwrap(), r);
        assert_eq!(png::read_recipe(&path).unwrap(), Some(r.clone()));
        assert_eq!(chunk_type(&path, "parameters"), params_type);
        assert_eq!(chunk_type(&path, "easel"), "iTXt");
        assert_eq!(
            decode_rgb(&path),
            (image.width, image.height, image.rgb.clone())
        );
    }
}

#[test]
fn reads_chunks_after_the_image_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.png");
    let image = gradient(3, 2);
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut enc = ::png::Encoder::new(file, 3, 2);
        enc.set_color(::png::ColorType::Rgb);
        enc.set_depth(::png::BitDepth::Eight);
        enc.add_text_chunk("early".into(), "before".into()).unwrap();
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&image.rgb).unwrap();
        w.write_text_chunk(&::png::text_metadata::ITXtChunk::new("late", "after 🦊"))
            .unwrap();
        w.finish().unwrap();
    }
    let got = sorted(read_text_chunks(&path).unwrap());
    assert_eq!(
        got,
        vec![
            ("early".into(), "before".into()),
            ("late".into(), "after 🦊".into())
        ]
    );
    assert_eq!(png::read_recipe(&path).unwrap(), None);
}

#[test]
fn unreadable_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.png");
    let err = read_text_chunks(&missing).unwrap_err().to_string();
    assert!(err.contains("none.png"), "{err}");
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let err = read_text_chunks(&junk).unwrap_err().to_string();
    assert!(err.contains("is not a readable PNG"), "{err}");
}
