//! Preset names become file names, so they are checked before they reach the file system.
use super::error::{PresetError, Result};

pub const MAX_NAME_CHARS: usize = 64;

/// Names that Windows refuses as file names; refused everywhere so presets can be shared.
const RESERVED: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

fn allowed(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Letters, digits, `-`, `_` and `.`, starting with a letter or digit, at most 64 characters.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(PresetError::BadName(name.to_string(), why.to_string()));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return bad(&format!("it is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.contains(['/', '\\']) {
        return bad("names cannot contain / or \\ (a preset is a name, not a path; `easel preset import FILE` reads a file)");
    }
    if name.contains("..") {
        return bad("names cannot contain \"..\"");
    }
    if let Some(stem) = name.strip_suffix(".toml") {
        return bad(&format!(
            "leave out the .toml: the preset is called {stem:?}"
        ));
    }
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return bad(&format!(
            "{c:?} is not allowed: use letters, digits, '-', '_' and '.', e.g. {:?}",
            slug(name).unwrap_or_else(|| "my-preset".into())
        ));
    }
    if !name.starts_with(char::is_alphanumeric) {
        return bad("it must start with a letter or a digit");
    }
    let base = name.split('.').next().unwrap_or(name).to_lowercase();
    if RESERVED.contains(&base.as_str()) {
        return bad("Windows reserves this name for a device");
    }
    Ok(())
}

/// A usable name made from any text (an AUTOMATIC1111 style name, a file name): lower case,
/// runs of other characters turned into one '-'. None when nothing usable is left.
pub fn slug(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out
        .trim_matches(|c: char| !c.is_alphanumeric())
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let trimmed = trimmed.trim_end_matches(['-', '_']).to_string();
    match check_name(&trimmed) {
        Ok(()) => Some(trimmed),
        Err(_) if !trimmed.is_empty() => {
            let prefixed = format!("style-{trimmed}");
            check_name(&prefixed).ok().map(|()| prefixed)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names_pass() {
        for name in [
            "photographic",
            "sd15-draft",
            "My_Style.v2",
            "ölgemälde",
            "x",
            "1990s",
        ] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        assert!(check_name(&"a".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn bad_names_say_why() {
        let cases = [
            ("", "empty"),
            ("a/b", "not a path"),
            ("..\\x", "not a path"),
            ("../etc", "not a path"),
            ("a..b", ".."),
            ("..", ".."),
            (".hidden", "start with a letter"),
            ("-x", "start with a letter"),
            ("cinema.toml", "leave out the .toml"),
            ("two words", "' ' is not allowed"),
            ("semi;colon", "';' is not allowed"),
            ("nul\0", "not allowed"),
            ("CON", "Windows"),
            ("lpt1.old", "Windows"),
        ];
        for (name, why) in cases {
            let msg = check_name(name).unwrap_err().to_string();
            assert!(msg.contains(why), "{name:?}: {msg}");
        }
        let long = "a".repeat(MAX_NAME_CHARS + 1);
        assert!(check_name(&long)
            .unwrap_err()
            .to_string()
            .contains("longer"));
        let msg = check_name("two words").unwrap_err().to_string();
        assert!(msg.contains("\"two-words\""), "suggests a fix: {msg}");
    }

    #[test]
    fn slugs_are_valid_names() {
        let cases = [
            ("Cinematic Photo", Some("cinematic-photo")),
            ("SDXL Style: Anime!!", Some("sdxl-style-anime")),
            ("  --Film noir--  ", Some("film-noir")),
            ("../../etc/passwd", Some("etc-passwd")),
            ("Ölgemälde (alt)", Some("ölgemälde-alt")),
            ("CON", Some("style-con")),
            ("!!!", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(slug(text).as_deref(), want, "{text:?}");
        }
        let long = slug(&"word ".repeat(40)).unwrap();
        assert!(check_name(&long).is_ok() && long.chars().count() <= MAX_NAME_CHARS);
    }
}
