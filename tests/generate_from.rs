//! `easel generate --from IMAGE.png`: an easel PNG re-renders to the same pixels on the same
//! device and dtype; flags override what the image says; AUTOMATIC1111 files map their fields,
//! and a sampler easel lacks is refused by name unless --sampler replaces it.
use easel::engine::pipeline::Image;
use easel::output::png::{encode, read_recipe, text_chunk};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

fn easel(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .env("EASEL_HOME", home)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("easel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn decoded_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn from_an_easel_png_gives_the_same_pixels_and_flags_override() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let (a, b, c) = (
        root.path().join("a.png"),
        root.path().join("b.png"),
        root.path().join("c.png"),
    );
    let model = tiny_sd1();
    let out = easel(
        &home,
        root.path(),
        &[
            "generate",
            "a red fox",
            "-n",
            "blurry",
            "--model",
            model.to_str().unwrap(),
            "--seed",
            "7",
            "--steps",
            "2",
            "--cfg",
            "6",
            "--sampler",
            "euler",
            "-W",
            "64",
            "-H",
            "64",
            "--device",
            "cpu",
            "--out",
            a.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = easel(
        &home,
        root.path(),
        &[
            "generate",
            "--from",
            "a.png",
            "--device",
            "cpu",
            "--out",
            b.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ra, rb) = (
        read_recipe(&a).unwrap().unwrap(),
        read_recipe(&b).unwrap().unwrap(),
    );
    assert_eq!(ra, rb);
    let (pa, pb) = (decoded_rgb(&a), decoded_rgb(&b));
    assert_eq!((pa.0, pa.1), (64, 64));
    assert!(
        pa == pb,
        "--from must reproduce the pixels exactly on the same device and dtype"
    );

    let out = easel(
        &home,
        root.path(),
        &[
            "generate",
            "--from",
            "a.png",
            "--seed",
            "8",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--out",
            c.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rc = read_recipe(&c).unwrap().unwrap();
    assert_eq!((rc.seed, rc.steps), (8, 1));
    assert_eq!(
        easel::recipe::Recipe {
            seed: 7,
            steps: 2,
            ..rc
        },
        ra
    );
    assert_ne!(decoded_rgb(&c).2, pa.2);
}

/// An AUTOMATIC1111 file whose `Model:` names the tiny model's folder, run from the folder
/// holding it, as a user with the same checkpoint name would.
#[test]
fn from_an_a1111_png_maps_its_fields() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let src = root.path().join("a1111.png");
    let params =
        "a lighthouse, at dusk\nNegative prompt: fog, rain\nSteps: 2, Sampler: DPM adaptive, \
                  CFG scale: 5.5, Seed: 11, Size: 64x64, Model hash: 1234abcd, Model: tiny-sd1, \
                  Clip skip: 2, Lora hashes: \"x: 1, y: 2\"";
    let pixel = Image {
        width: 1,
        height: 1,
        rgb: vec![0, 0, 0],
    };
    std::fs::write(
        &src,
        encode(&pixel, &[text_chunk("parameters", params)]).unwrap(),
    )
    .unwrap();
    let fixtures = tiny_sd1().parent().unwrap().to_path_buf();
    let out_dir = root.path().join("out");
    let out_arg = out_dir.to_str().unwrap();

    let out = easel(
        &home,
        &fixtures,
        &[
            "generate",
            "--from",
            src.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            out_arg,
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"DPM adaptive\"") && stderr.contains("--sampler"),
        "{stderr}"
    );
    assert!(!out_dir.exists());

    let out = easel(
        &home,
        &fixtures,
        &[
            "generate",
            "--from",
            src.to_str().unwrap(),
            "--sampler",
            "euler_a",
            "--device",
            "cpu",
            "--out",
            out_arg,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let path = PathBuf::from(text(&out.stdout).trim());
    let r = read_recipe(&path).unwrap().unwrap();
    assert_eq!(r.prompt, "a lighthouse, at dusk");
    assert_eq!(r.negative_prompt, "fog, rain");
    assert_eq!((r.steps, r.cfg, r.seed), (2, 5.5, 11));
    assert_eq!((r.width, r.height), (64, 64));
    assert_eq!(r.model, "tiny-sd1");
    assert_eq!(r.clip_skip, 2);
    assert_eq!(r.sampler.name(), "euler_a");
}

#[test]
fn from_refuses_what_it_cannot_read() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let bare = root.path().join("bare.png");
    let pixel = Image {
        width: 1,
        height: 1,
        rgb: vec![0, 0, 0],
    };
    std::fs::write(&bare, encode(&pixel, &[]).unwrap()).unwrap();
    let model = tiny_sd1();
    for (image, message) in [
        ("missing.png", "cannot read"),
        ("bare.png", "has no generation settings"),
    ] {
        let out = easel(
            &home,
            root.path(),
            &[
                "generate",
                "--from",
                image,
                "--model",
                model.to_str().unwrap(),
                "--out",
                "out/",
            ],
        );
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(message), "{stderr}");
        assert!(!root.path().join("out").exists());
    }
}
