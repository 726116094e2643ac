//! Wildcards: `{red|green|blue}` picks one option, `__name__` draws one line of
//! `<config>/wildcards/name.txt`. Picks come from a generator seeded with the image's seed, so
//! the same seed gives the same prompt. A `{...}` without a `|` (such as presets' `{prompt}`)
//! is left as it is; `\{`, `\}` and `\|` write the character itself. Options may hold further
//! wildcards, and so may the lines of a wildcard file.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How deep wildcards may nest before a file that draws itself is assumed.
const MAX_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum WildcardError {
    #[error("wildcard __{name}__: {} does not exist; create it with one option per line", path.display())]
    Missing { name: String, path: PathBuf },
    #[error("wildcard __{name}__: cannot read {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("wildcard __{name}__: {} has no options (blank lines and # comments do not count)", path.display())]
    Empty { name: String, path: PathBuf },
    #[error("wildcards nest more than {MAX_DEPTH} deep: does a wildcard file draw itself?")]
    TooDeep,
}

/// The draws of one prompt: SplitMix64, small and the same on every platform, so a recorded
/// seed keeps meaning the same picks.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Expands wildcards, reading each wildcard file once.
#[derive(Debug)]
pub struct Wildcards {
    dir: PathBuf,
    files: HashMap<String, Vec<String>>,
}

impl Wildcards {
    /// `dir` holds the `name.txt` files (`Paths::wildcards()`).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
        }
    }

    /// The prompt `template` with every wildcard replaced by the pick for `seed`.
    pub fn expand(&mut self, template: &str, seed: u64) -> Result<String, WildcardError> {
        let mut out = String::with_capacity(template.len());
        self.expand_into(template, &mut Draws(seed), 0, &mut out)?;
        Ok(out)
    }

    fn expand_into(
        &mut self,
        text: &str,
        draws: &mut Draws,
        depth: usize,
        out: &mut String,
    ) -> Result<(), WildcardError> {
        if depth > MAX_DEPTH {
            return Err(WildcardError::TooDeep);
        }
        let mut i = 0;
        while let Some(c) = text[i..].chars().next() {
            let rest = &text[i..];
            if c == '\\' {
                let next = rest[1..].chars().next();
                match next {
                    Some(e @ ('{' | '}' | '|')) => out.push(e),
                    Some(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => out.push('\\'),
                }
                i += 1 + next.map_or(0, char::len_utf8);
            } else if c == '{' {
                match closing_brace(rest) {
                    Some(end) => {
                        let inner = &rest[1..end];
                        let options = split_top_level(inner, '|');
                        if options.len() < 2 {
                            out.push('{');
                            self.expand_into(inner, draws, depth + 1, out)?;
                            out.push('}');
                        } else {
                            let pick = options[draws.below(options.len())];
                            self.expand_into(pick, draws, depth + 1, out)?;
                        }
                        i += end + 1;
                    }
                    None => {
                        out.push('{');
                        i += 1;
                    }
                }
            } else if let Some(name) = wildcard_name(rest) {
                let lines = self.lines(name)?;
                let pick = lines[draws.below(lines.len())].clone();
                self.expand_into(&pick, draws, depth + 1, out)?;
                i += name.len() + 4;
            } else {
                out.push(c);
                i += c.len_utf8();
            }
        }
        Ok(())
    }

    fn lines(&mut self, name: &str) -> Result<&Vec<String>, WildcardError> {
        if !self.files.contains_key(name) {
            let path = self.dir.join(format!("{name}.txt"));
            let text = std::fs::read_to_string(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    WildcardError::Missing {
                        name: name.to_string(),
                        path: path.clone(),
                    }
                } else {
                    WildcardError::Read {
                        name: name.to_string(),
                        path: path.clone(),
                        source,
                    }
                }
            })?;
            let options: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect();
            if options.is_empty() {
                return Err(WildcardError::Empty {
                    name: name.to_string(),
                    path,
                });
            }
            self.files.insert(name.to_string(), options);
        }
        Ok(&self.files[name])
    }
}

/// The name of a `__name__` at the start of `text`: letters, digits, `_ - . /` (subfolders),
/// starting with a letter or digit, never a `..` step out of the wildcards folder.
fn wildcard_name(text: &str) -> Option<&str> {
    let body = text.strip_prefix("__")?;
    let end = body.find("__")?;
    let name = &body[..end];
    let first_ok = name.chars().next()?.is_alphanumeric();
    let chars_ok = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    let steps_ok = name
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != "..");
    (first_ok && chars_ok && steps_ok).then_some(name)
}

/// The byte offset of the `}` closing the `{` at the start of `text`.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '{') => depth += 1,
            (false, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits on `sep` outside `{}`, `[]` and `()`, skipping escaped characters.
pub fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut escaped, mut start) = (0i32, false, 0);
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') => escaped = true,
            (false, '{' | '[' | '(') => depth += 1,
            (false, '}' | ']' | ')') => depth -= 1,
            (false, c) if c == sep && depth <= 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, seed: u64) -> String {
        Wildcards::new(Path::new("/nonexistent"))
            .expand(template, seed)
            .unwrap()
    }

    #[test]
    fn picks_are_seeded_and_cover_every_option() {
        let t = "a {red|green|blue} fox on a {hill|beach}";
        assert_eq!(expand(t, 5), expand(t, 5));
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let p = expand(t, seed);
            let colour = p.split(' ').nth(1).unwrap().to_string();
            assert!(["red", "green", "blue"].contains(&colour.as_str()), "{p}");
            seen.insert(colour);
        }
        assert_eq!(seen.len(), 3);
        let differ = (0..16).filter(|s| expand(t, *s) != expand(t, 0)).count();
        assert!(differ > 0);
    }

    #[test]
    fn plain_braces_escapes_and_nesting() {
        assert_eq!(
            expand("{prompt}, oil painting", 1),
            "{prompt}, oil painting"
        );
        assert_eq!(expand("a {single} {", 1), "a {single} {");
        assert_eq!(expand(r"\{a|b\} \(x\)", 1), r"{a|b} \(x\)");
        assert_eq!(expand("{|}", 3), "");
        let nested = expand("{a {x|y}|b {x|y}}", 9);
        assert!(
            ["a x", "a y", "b x", "b y"].contains(&nested.as_str()),
            "{nested}"
        );
        assert_eq!(expand("[cat|dog] and (a|b)", 1), "[cat|dog] and (a|b)");
        assert_eq!(
            expand("snake_case __ x __init", 1),
            "snake_case __ x __init"
        );
    }

    #[test]
    fn files_give_lines_and_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("colour.txt"),
            "# colours\n\n  crimson  \nteal\n# amber\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sub/animal.txt"),
            "{owl|heron} with __colour__\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("loop.txt"), "__loop__\n").unwrap();
        std::fs::write(dir.path().join("blank.txt"), "# nothing\n\n").unwrap();
        let mut w = Wildcards::new(dir.path());
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let p = w.expand("a __colour__ bird", seed).unwrap();
            seen.insert(p);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["a crimson bird", "a teal bird"]
        );
        let p = w.expand("__sub/animal__", 2).unwrap();
        let (bird, colour) = p.split_once(" with ").unwrap();
        assert!(["owl", "heron"].contains(&bird) && ["crimson", "teal"].contains(&colour));

        let err = w.expand("__nope__", 1).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().join("nope.txt").display().to_string()),
            "{err}"
        );
        let err = w.expand("__blank__", 1).unwrap_err().to_string();
        assert!(err.contains("no options"), "{err}");
        assert!(matches!(
            w.expand("__loop__", 1),
            Err(WildcardError::TooDeep)
        ));
        // Names cannot step out of the folder; such text stays as written.
        assert_eq!(w.expand("__../colour__", 1).unwrap(), "__../colour__");
    }

    #[test]
    fn top_level_split_ignores_groups() {
        assert_eq!(
            split_top_level("a, {b|c}|d [e|f]| (g|h)", '|'),
            vec!["a, {b|c}", "d [e|f]", " (g|h)"]
        );
        assert_eq!(split_top_level(r"a\|b|c", '|'), vec![r"a\|b", "c"]);
    }
}
