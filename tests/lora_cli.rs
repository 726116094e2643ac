//! `easel generate` with a single-file checkpoint, `--lora`, prompt `<lora:...>` tags and
//! `--vae`: the PNG holds diffusers' image (8-bit, within one level).
mod common;

use common::{cached_checkpoint, reference_path};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn decoded_rgb(path: &Path) -> Vec<u8> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

fn reference_u8(name: &str) -> Vec<u8> {
    let path = reference_path("checkpoint/checkpoint.safetensors");
    let tensors = tch::Tensor::read_safetensors(&path).unwrap();
    let (_, image) = tensors.into_iter().find(|(n, _)| n == name).unwrap();
    let bytes = (image * 255.0)
        .round()
        .to_kind(tch::Kind::Uint8)
        .contiguous()
        .view([-1]);
    Vec::<u8>::try_from(&bytes).unwrap()
}

fn generate(home: &Path, prompt: &str, extra: &[&str], out: &Path) {
    let cache = cached_checkpoint();
    let result = Command::new(env!("CARGO_BIN_EXE_easel"))
        .stdin(Stdio::null())
        .env("EASEL_HOME", home)
        .arg("generate")
        .arg(prompt)
        .arg("--model")
        .arg(cache.join("sd1.safetensors"))
        .arg("--model-config")
        .arg(root().join("tests/fixtures/tiny-sd1"))
        .args([
            "--seed",
            "7",
            "--steps",
            "4",
            "--sampler",
            "euler",
            "--cfg",
            "7.5",
        ])
        .args(["-W", "64", "-H", "64", "--device", "cpu", "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn assert_image(path: &Path, reference: &str) {
    let pixels = decoded_rgb(path);
    let expected = reference_u8(reference);
    assert_eq!(pixels.len(), expected.len());
    let worst = pixels
        .iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(
        worst <= 1,
        "{reference}: pixels differ from diffusers by up to {worst}"
    );
}

#[test]
fn checkpoint_with_prompt_lora_tag_and_flags_renders_diffusers_images() {
    let home = tempfile::tempdir().unwrap();
    let loras = home.path().join("config/loras");
    std::fs::create_dir_all(&loras).unwrap();
    let lora_dir = reference_path("checkpoint/lora");
    std::fs::copy(
        lora_dir.join("peft.safetensors"),
        loras.join("peft.safetensors"),
    )
    .unwrap();

    // a tag in the prompt: looked up in the config's loras folder, removed from the text
    let tagged = home.path().join("tagged.png");
    generate(
        home.path(),
        "a red fox <lora:peft:0.8> in the snow",
        &[],
        &tagged,
    );
    assert_image(&tagged, "lora_peft");
    let recipe = easel::output::png::read_recipe(&tagged).unwrap().unwrap();
    assert!(
        recipe.prompt.contains("<lora:peft:0.8>"),
        "the recipe keeps the tag"
    );

    // the same through --lora, plus a second one
    let flagged = home.path().join("flagged.png");
    let peft = format!("{}:0.8", lora_dir.join("peft.safetensors").display());
    let locon = format!("{}:-0.6", lora_dir.join("locon.safetensors").display());
    generate(
        home.path(),
        "a red fox in the snow",
        &["--lora", &peft, "--lora", &locon],
        &flagged,
    );
    assert_image(&flagged, "lora_two");
    let recipe = easel::output::png::read_recipe(&flagged).unwrap().unwrap();
    assert_eq!(recipe.loras.len(), 2);
    assert_eq!(recipe.loras[1].weight, -0.6);

    // --vae with a bare-named VAE file
    let swapped = home.path().join("vae.png");
    let vae = cached_checkpoint().join("vae2-ldm.safetensors");
    generate(
        home.path(),
        "a red fox in the snow",
        &["--vae", vae.to_str().unwrap()],
        &swapped,
    );
    assert_image(&swapped, "vae_swap");
    let recipe = easel::output::png::read_recipe(&swapped).unwrap().unwrap();
    assert_eq!(recipe.vae.as_deref(), vae.to_str());
}
