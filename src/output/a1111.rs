//! The `parameters` text in AUTOMATIC1111's infotext format, which many image tools and sites
//! read: the prompt, an optional `Negative prompt:` line, then `Key: value` pairs.
use crate::recipe::Recipe;

/// The infotext for one image. `model_name` is what the `Model:` field shows (the folder name).
/// Batches add A1111's `Batch size` and `Batch pos`, since the seed alone does not reproduce
/// image i of a batch.
pub fn parameters(recipe: &Recipe, model_name: &str) -> String {
    let mut fields = vec![
        ("Steps", recipe.steps.to_string()),
        (
            "Sampler",
            crate::engine::schedulers::display_name(recipe.sampler, recipe.schedule),
        ),
        ("CFG scale", python_float(recipe.cfg)),
        ("Seed", recipe.seed.to_string()),
        ("Size", format!("{}x{}", recipe.width, recipe.height)),
        ("Model", quote(model_name)),
    ];
    if recipe.batch_size > 1 {
        fields.push(("Batch size", recipe.batch_size.to_string()));
        fields.push(("Batch pos", recipe.index.to_string()));
    }
    // A1111 writes clip skip only when it skips.
    if recipe.clip_skip > 1 {
        fields.push(("Clip skip", recipe.clip_skip.to_string()));
    }
    if let Some(init) = &recipe.init {
        fields.push(("Denoising strength", python_float(init.strength)));
        if init.mask.is_some() {
            fields.push(("Mask blur", init.mask_blur.to_string()));
        }
    }
    let line = fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = recipe.prompt.clone();
    if !recipe.negative_prompt.is_empty() {
        text.push_str("\nNegative prompt: ");
        text.push_str(&recipe.negative_prompt);
    }
    text.push('\n');
    text.push_str(&line);
    text
}

/// A float as Python's `str` writes it (A1111 writes `7.0`, not `7`): the shortest digits that
/// read back exactly, positional for exponents -4..16, scientific (`1e-05`) otherwise.
pub fn python_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the same shortest digits, as `d.ddde-7`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// A1111 quotes a value (as a JSON string) when it would break the `Key: value, ...` line.
pub fn quote(value: &str) -> String {
    if value.contains([',', '\n', ':']) {
        serde_json::Value::String(value.to_string()).to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;
    use crate::recipe::SCHEMA_VERSION;

    fn recipe() -> Recipe {
        Recipe {
            schema_version: SCHEMA_VERSION,
            model: "/models/tiny-sd1".into(),
            prompt: "a red fox in snow".into(),
            negative_prompt: String::new(),
            sampler: SamplerKind::EulerAncestral,
            schedule: Default::default(),
            timestep_spacing: None,
            steps: 20,
            cfg: 7.0,
            seed: 1234,
            width: 512,
            height: 768,
            batch_size: 1,
            index: 0,
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

    #[test]
    fn without_negative_prompt() {
        assert_eq!(
            parameters(&recipe(), "tiny-sd1"),
            "a red fox in snow\n\
             Steps: 20, Sampler: Euler a, CFG scale: 7.0, Seed: 1234, Size: 512x768, Model: tiny-sd1"
        );
    }

    #[test]
    fn a_schedule_joins_the_sampler_name_as_a1111_writes_it() {
        let r = Recipe {
            sampler: SamplerKind::DpmPP2MSde,
            schedule: crate::engine::schedulers::Schedule::Karras,
            ..recipe()
        };
        assert!(
            parameters(&r, "m").contains("Sampler: DPM++ 2M SDE Karras,"),
            "{}",
            parameters(&r, "m")
        );
    }

    #[test]
    fn with_negative_prompt_and_batch() {
        let r = Recipe {
            negative_prompt: "blurry, low quality".into(),
            sampler: SamplerKind::Ddim,
            cfg: 7.5,
            batch_size: 4,
            index: 2,
            ..recipe()
        };
        assert_eq!(
            parameters(&r, "sd, v1:5"),
            "a red fox in snow\nNegative prompt: blurry, low quality\n\
             Steps: 20, Sampler: DDIM, CFG scale: 7.5, Seed: 1234, Size: 512x768, \
             Model: \"sd, v1:5\", Batch size: 4, Batch pos: 2"
        );
    }

    #[test]
    fn clip_skip_only_when_it_skips() {
        let r = Recipe {
            clip_skip: 2,
            ..recipe()
        };
        assert!(parameters(&r, "m").ends_with("Model: m, Clip skip: 2"));
        let r = Recipe {
            clip_skip: 0,
            ..recipe()
        };
        assert!(!parameters(&r, "m").contains("Clip skip"));
    }
}
