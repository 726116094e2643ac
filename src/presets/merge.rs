//! How presets combine with each other and with the command line, AUTOMATIC1111-style:
//! a preset's prompt is a style wrapped around the user's prompt, scalar fields are layered.
use super::file::Preset;
use crate::recipe::RecipePatch;

/// Where the user's prompt goes in a style.
pub const PLACEHOLDER: &str = "{prompt}";

/// AUTOMATIC1111's rule: a style holding `{prompt}` gets the prompt put in its place; any other
/// style is added after the prompt with ", " (empty parts left out).
pub fn merge_prompt(style: &str, prompt: &str) -> String {
    if style.contains(PLACEHOLDER) {
        style.replace(PLACEHOLDER, prompt)
    } else {
        [prompt.trim(), style.trim()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Applies styles in order, each wrapping what the ones before made.
fn styled(user: Option<&String>, styles: impl Iterator<Item = Option<String>>) -> Option<String> {
    let mut out = user.cloned();
    for style in styles.flatten() {
        out = Some(merge_prompt(&style, out.as_deref().unwrap_or("")));
    }
    out
}

/// The recipe fields after presets: `below` (what comes before presets, such as a `--from`
/// image's recipe), then each preset in order, then `flags`, later layers winning where they set
/// a field. Prompts are the exception: the user's prompt (from `flags`, else from `below`) is
/// styled by each preset's prompt in turn; likewise the negative prompt.
pub fn resolve(below: &RecipePatch, presets: &[&Preset], flags: &RecipePatch) -> RecipePatch {
    let mut out = below.clone();
    for p in presets {
        out.layer(&RecipePatch {
            prompt: None,
            negative_prompt: None,
            ..p.patch.clone()
        });
    }
    out.layer(flags);
    let user_prompt = flags.prompt.as_ref().or(below.prompt.as_ref());
    out.prompt = styled(user_prompt, presets.iter().map(|p| p.patch.prompt.clone()));
    let user_negative = flags
        .negative_prompt
        .as_ref()
        .or(below.negative_prompt.as_ref());
    out.negative_prompt = styled(
        user_negative,
        presets.iter().map(|p| p.patch.negative_prompt.clone()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    fn preset(prompt: Option<&str>, negative: Option<&str>, patch: RecipePatch) -> Preset {
        Preset {
            patch: RecipePatch {
                prompt: prompt.map(String::from),
                negative_prompt: negative.map(String::from),
                ..patch
            },
            ..Default::default()
        }
    }

    #[test]
    fn prompts_merge_as_automatic1111_styles() {
        assert_eq!(
            merge_prompt("photo of {prompt}, 35mm", "a fox"),
            "photo of a fox, 35mm"
        );
        assert_eq!(merge_prompt("{prompt} | {prompt}", "x"), "x | x");
        assert_eq!(merge_prompt("oil painting", "a fox"), "a fox, oil painting");
        assert_eq!(
            merge_prompt("  oil painting ", " a fox "),
            "a fox, oil painting"
        );
        assert_eq!(merge_prompt("oil painting", ""), "oil painting");
        assert_eq!(merge_prompt("", "a fox"), "a fox");
        assert_eq!(merge_prompt("{prompt}, painted", ""), ", painted");
    }

    #[test]
    fn stacked_presets_compose_prompts_in_order_and_later_scalars_win() {
        let a = preset(
            Some("photo of {prompt}"),
            Some("blurry"),
            RecipePatch {
                steps: Some(30),
                cfg: Some(5.0),
                sampler: Some(SamplerKind::Euler),
                ..Default::default()
            },
        );
        let b = preset(
            Some("film grain"),
            None,
            RecipePatch {
                steps: Some(12),
                width: Some(768),
                ..Default::default()
            },
        );
        let flags = RecipePatch {
            prompt: Some("a fox".into()),
            negative_prompt: Some("text".into()),
            cfg: Some(9.0),
            ..Default::default()
        };
        let r = resolve(&RecipePatch::default(), &[&a, &b], &flags);
        assert_eq!(r.prompt.as_deref(), Some("photo of a fox, film grain"));
        assert_eq!(r.negative_prompt.as_deref(), Some("text, blurry"));
        assert_eq!(r.steps, Some(12), "later preset wins");
        assert_eq!(r.cfg, Some(9.0), "flags win");
        assert_eq!(r.sampler, Some(SamplerKind::Euler));
        assert_eq!(r.width, Some(768));
        assert_eq!(r.height, None);

        let r = resolve(&RecipePatch::default(), &[&b, &a], &flags);
        assert_eq!(r.prompt.as_deref(), Some("photo of a fox, film grain"));
        assert_eq!(r.steps, Some(30));
        let r = resolve(
            &RecipePatch::default(),
            &[
                &preset(Some("{prompt}, film"), None, Default::default()),
                &a,
            ],
            &flags,
        );
        assert_eq!(r.prompt.as_deref(), Some("photo of a fox, film"));
    }

    #[test]
    fn the_layer_below_gives_the_prompt_when_flags_do_not() {
        let below = RecipePatch {
            prompt: Some("a lighthouse".into()),
            steps: Some(50),
            seed: Some(7),
            ..Default::default()
        };
        let style = preset(
            Some("{prompt} at dusk"),
            None,
            RecipePatch {
                steps: Some(20),
                ..Default::default()
            },
        );
        let r = resolve(&below, &[&style], &RecipePatch::default());
        assert_eq!(r.prompt.as_deref(), Some("a lighthouse at dusk"));
        assert_eq!((r.steps, r.seed), (Some(20), Some(7)));
        assert_eq!(r.negative_prompt, None);
        let none = resolve(&RecipePatch::default(), &[], &RecipePatch::default());
        assert_eq!(none, RecipePatch::default());
    }
}
