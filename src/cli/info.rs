//! `easel info IMAGE.png`: the recipe an image carries, read from easel's own recipe JSON or
//! from the `parameters` text of AUTOMATIC1111 or stable-diffusion.cpp.
use super::sheet::SHEET_KEY;
use crate::metadata::{self, ImageParameters, MetadataError};
use crate::output::png::read_text_chunks;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  easel info outputs/20260101-120000-7-0.png
  easel info downloaded.png --json | jq .seed

--json prints one object: source (easel, a1111 or sdcpp), the recipe fields (null when the
image does not say: schema_version, model, prompt, negative_prompt, sampler, steps, cfg, seed,
width, height, batch_size, index, clip_skip, guidance_rescale, device, dtype, prompt_template;
and for img2img and inpainting renders init_image, strength, mask, mask_blur, keep_unmasked)
and extra: every other setting under the name the image used. A sampler easel does not have is
null, its name in extra.Sampler. Re-render an image with `easel generate --from IMAGE.png`.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = EXAMPLES)]
pub struct InfoArgs {
    /// A PNG made by easel, AUTOMATIC1111 or stable-diffusion.cpp.
    #[arg(value_name = "IMAGE.png")]
    pub image: PathBuf,

    /// Print one JSON object for tools.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<ExitCode> {
    let (params, warnings) = match metadata::read_png(&args.image) {
        Ok(found) => found,
        Err(MetadataError::NoMetadata(path)) => return Err(no_metadata(&path)),
        Err(e) => return Err(e.into()),
    };
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&params)?);
    } else {
        print!("{}", human(&params));
    }
    Ok(ExitCode::SUCCESS)
}

/// The error for an image without settings, naming the cells when it is a contact sheet.
fn no_metadata(path: &Path) -> anyhow::Error {
    let sheet = read_text_chunks(path).ok().and_then(|chunks| {
        chunks
            .into_iter()
            .find(|(k, _)| k == SHEET_KEY)
            .and_then(|(_, t)| serde_json::from_str::<serde_json::Value>(&t).ok())
    });
    match sheet {
        Some(note) => {
            let cells: Vec<&str> = note["cells"]
                .as_array()
                .map(|v| v.iter().filter_map(|c| c.as_str()).collect())
                .unwrap_or_default();
            anyhow::anyhow!(
                "{} is a contact sheet ({}): its cells carry the recipes; run easel info on one of {}",
                path.display(),
                note["kind"].as_str().unwrap_or("grid"),
                cells.join(", ")
            )
        }
        None => MetadataError::NoMetadata(path.to_path_buf()).into(),
    }
}

/// A readable listing: one setting per line, continuation lines of long texts indented.
pub fn human(p: &ImageParameters) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &str| {
        let indent = " ".repeat(key.len() + 2);
        let value = value.replace('\n', &format!("\n{indent}"));
        out.push_str(&format!("{key}: {value}\n"));
    };
    line("source", p.source.describe());
    if let Some(v) = &p.prompt {
        line("prompt", v);
    }
    if let Some(t) = &p.prompt_template {
        line("prompt template", t);
    }
    if let Some(v) = p.negative_prompt.as_deref().filter(|v| !v.is_empty()) {
        line("negative prompt", v);
    }
    if let Some(v) = &p.model {
        line("model", v);
    }
    match (p.sampler, &p.unknown_sampler) {
        (Some(s), _) => line("sampler", &format!("{s} ({})", s.display_name())),
        (None, Some(name)) => line("sampler", &format!("{name} (easel does not have it)")),
        _ => {}
    }
    if let Some(v) = p.steps {
        line("steps", &v.to_string());
    }
    if let Some(v) = p.cfg {
        line("cfg", &v.to_string());
    }
    if let Some(v) = p.seed {
        line("seed", &v.to_string());
    }
    if let (Some(w), Some(h)) = (p.width, p.height) {
        line("size", &format!("{w}x{h}"));
    }
    if let Some(v) = p.clip_skip {
        line("clip skip", &v.to_string());
    }
    if let Some(v) = p.guidance_rescale.filter(|v| *v != 0.0) {
        line("guidance rescale", &v.to_string());
    }
    if let Some(v) = &p.init_image {
        line("init image", v);
    }
    if let Some(v) = p.strength {
        line("strength", &v.to_string());
    }
    if let Some(v) = &p.mask {
        line("mask", v);
    }
    if let Some(v) = p.mask_blur {
        line("mask blur", &v.to_string());
    }
    if p.keep_unmasked == Some(true) {
        line("keep unmasked", "yes");
    }
    if let (Some(n), Some(i)) = (p.batch_size, p.index) {
        if n > 1 {
            line("batch", &format!("image {i} of {n} drawn from one seed"));
        }
    }
    if let (Some(d), Some(t)) = (&p.device, &p.dtype) {
        line("rendered on", &format!("{d} ({t})"));
    }
    let extra: Vec<(&String, &serde_json::Value)> = p
        .extra
        .iter()
        .filter(|(k, _)| p.unknown_sampler.is_none() || k.as_str() != "Sampler")
        .collect();
    if !extra.is_empty() {
        out.push_str("other settings:\n");
        for (k, v) in extra {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("  {k}: {}\n", text.replace('\n', "\n    ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_listing_indents_and_lists_extra() {
        let text = "a red fox\nin snow\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 9M, \
                    CFG scale: 7, Seed: 1, Size: 512x768, Model hash: abc";
        let p = ImageParameters::from_parameters(text, "x.png");
        let out = human(&p);
        assert!(
            out.contains("prompt: a red fox\n        in snow\n"),
            "{out}"
        );
        assert!(out.contains("negative prompt: blurry\n"), "{out}");
        assert!(
            out.contains("sampler: DPM++ 9M (easel does not have it)\n"),
            "{out}"
        );
        assert!(out.contains("size: 512x768\n"), "{out}");
        assert!(
            out.contains("other settings:\n  Model hash: abc\n"),
            "{out}"
        );
        assert!(!out.contains("  Sampler:"), "{out}");
    }
}
