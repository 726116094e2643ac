//! The presets that ship inside the binary (from the repository's presets/ folder), so a fresh
//! install has good starting points. A user's preset of the same name shadows one of these.

macro_rules! builtins {
    ($($name:literal),* $(,)?) => {
        /// Every built-in preset: its name and its file's text.
        pub const BUILTINS: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../presets/", $name, ".toml")))),*
        ];
    };
}

builtins!(
    "anime",
    "cinematic",
    "comic",
    "concept-art",
    "isometric",
    "line-art",
    "oil-painting",
    "photographic",
    "pixel-art",
    "portrait",
    "product-shot",
    "sd15-draft",
    "sdxl-turbo-draft",
    "watercolor",
);

/// The text of the built-in preset `name`.
pub fn builtin(name: &str) -> Option<&'static str> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// How a built-in is named in messages, where a path would be for a user's file.
pub fn builtin_label(name: &str) -> String {
    format!("built-in preset {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::{check_name, Preset};

    #[test]
    fn every_file_in_presets_is_built_in_and_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".toml").map(String::from))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = BUILTINS.iter().map(|(n, _)| n.to_string()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add new files in presets/ to BUILTINS");
        assert!(BUILTINS.len() >= 12);
        for (name, text) in BUILTINS {
            check_name(name).unwrap();
            let p = Preset::parse(text, &builtin_label(name)).unwrap();
            assert!(p.extra.is_empty(), "{name}: unknown fields {:?}", p.extra);
            let d = p.description.as_deref().unwrap_or("");
            assert!(d.len() > 20, "{name} needs a description");
            assert!(!p.tags.is_empty(), "{name} needs tags");
            let r = &p.patch;
            assert!(
                r.steps.is_some() && r.cfg.is_some() && r.sampler.is_some(),
                "{name}"
            );
            assert!(
                r.model.is_none() && r.seed.is_none(),
                "{name} must not pin a model or seed"
            );
            for side in [r.width, r.height].into_iter().flatten() {
                assert_eq!(
                    side % 64,
                    0,
                    "{name}: sizes suit every SD model as multiples of 64"
                );
            }
            if let Some(prompt) = &r.prompt {
                assert!(
                    prompt.contains("{prompt}"),
                    "{name}: say where the prompt goes"
                );
            }
        }
    }
}
