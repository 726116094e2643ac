//! AUTOMATIC1111's prompt matrix: `a|b|c` renders every combination of the optional parts b and
//! c, the first part always present: `a`, `a, b`, `a, c`, `a, b, c`. Combination n holds
//! optional part i when bit i of n is set, as A1111 numbers them; on the contact sheet the
//! first half of the optional parts varies along the columns, the rest along the rows.
//! Parts are trimmed of spaces and commas (A1111 keeps the first part's trailing space).
//! A `|` inside `{}`, `[]` or `()` belongs to wildcards or prompt syntax, not to the matrix.
use super::wildcards::split_top_level;

/// Combinations beyond this are a typo more likely than a plan (2^10 images).
pub const MAX_OPTIONAL_PARTS: usize = 10;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MatrixError {
    #[error(
        "--prompt-matrix needs a prompt with optional parts after `|`, such as \
         \"a cat|wearing a hat|in the snow\""
    )]
    NoParts,
    #[error("--prompt-matrix takes at most {MAX_OPTIONAL_PARTS} optional parts (2^{MAX_OPTIONAL_PARTS} images), got {0}")]
    TooMany(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromptMatrix {
    /// The first part, always present.
    pub base: String,
    /// The optional parts, in the order written.
    pub parts: Vec<String>,
}

impl PromptMatrix {
    pub fn parse(prompt: &str) -> Result<Self, MatrixError> {
        let clean = |s: &str| s.trim().trim_matches(',').trim().to_string();
        let mut pieces = split_top_level(prompt, '|').into_iter().map(clean);
        let base = pieces.next().unwrap_or_default();
        let parts: Vec<String> = pieces.collect();
        if parts.is_empty() {
            return Err(MatrixError::NoParts);
        }
        if parts.len() > MAX_OPTIONAL_PARTS {
            return Err(MatrixError::TooMany(parts.len()));
        }
        Ok(Self { base, parts })
    }

    pub fn combinations(&self) -> usize {
        1 << self.parts.len()
    }

    /// The prompt of combination `n`: the base, then the parts whose bit is set, joined by ", ".
    pub fn prompt(&self, n: usize) -> String {
        let mut chosen: Vec<&str> = Vec::new();
        if !self.base.is_empty() {
            chosen.push(&self.base);
        }
        for (i, part) in self.parts.iter().enumerate() {
            if n & (1 << i) != 0 && !part.is_empty() {
                chosen.push(part);
            }
        }
        chosen.join(", ")
    }

    /// How many optional parts vary along the columns (the first half, rounded up).
    pub fn column_parts(&self) -> usize {
        self.parts.len().div_ceil(2)
    }

    /// Sheet columns and rows: combination n sits at column `n % columns`, row `n / columns`.
    pub fn layout(&self) -> (usize, usize) {
        let columns = 1 << self.column_parts();
        (columns, self.combinations() / columns)
    }

    /// The labels of column `c` (or row `r` with `rows`): each part on that axis, and whether
    /// it is present there.
    pub fn axis_labels(&self, rows: bool, position: usize) -> Vec<(String, bool)> {
        let split = self.column_parts();
        let parts = if rows {
            &self.parts[split..]
        } else {
            &self.parts[..split]
        };
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), position & (1 << i) != 0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_in_a1111_order() {
        let m = PromptMatrix::parse("a cat |wearing a hat, | in the snow|at night").unwrap();
        assert_eq!(m.base, "a cat");
        assert_eq!(m.combinations(), 8);
        let prompts: Vec<String> = (0..8).map(|n| m.prompt(n)).collect();
        assert_eq!(
            prompts,
            [
                "a cat",
                "a cat, wearing a hat",
                "a cat, in the snow",
                "a cat, wearing a hat, in the snow",
                "a cat, at night",
                "a cat, wearing a hat, at night",
                "a cat, in the snow, at night",
                "a cat, wearing a hat, in the snow, at night",
            ]
        );
        assert_eq!(m.layout(), (4, 2));
        assert_eq!(
            m.axis_labels(false, 2),
            vec![
                ("wearing a hat".into(), false),
                ("in the snow".into(), true)
            ]
        );
        assert_eq!(m.axis_labels(true, 1), vec![("at night".into(), true)]);
    }

    #[test]
    fn groups_keep_their_pipes_and_errors_explain() {
        let m = PromptMatrix::parse("a {red|blue} fox|[snow|rain]").unwrap();
        assert_eq!(m.base, "a {red|blue} fox");
        assert_eq!(m.parts, vec!["[snow|rain]"]);
        assert_eq!(m.layout(), (2, 1));
        assert_eq!(PromptMatrix::parse("a fox"), Err(MatrixError::NoParts));
        let many = format!("a{}", "|x".repeat(11));
        assert_eq!(PromptMatrix::parse(&many), Err(MatrixError::TooMany(11)));
    }
}
