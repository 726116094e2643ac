//! AUTOMATIC1111's attention syntax, parsed as its `parse_prompt_attention`
//! (modules/prompt_parser.py) does, including its quirks:
//!
//! - `(text)` multiplies by 1.1, `[text]` by 1/1.1, `(text:1.3)` by 1.3; nested brackets multiply.
//! - Brackets left open at the end apply to everything after them; a closing bracket with no
//!   opening one is plain text.
//! - `\(` `\)` `\[` `\]` `\\` are literal characters; a backslash before anything else vanishes.
//! - `BREAK` as a whole word (upper case) ends the current 75-token chunk. It is kept as the
//!   fragment `("BREAK", -1.0)`; inside brackets its weight is multiplied like any other, and it
//!   is then the plain word "BREAK" again, as in A1111.
//! - Neighbouring fragments with equal weights are merged.
//!
//! Where A1111's regular expressions use Unicode classes, `\s` is Rust's whitespace plus the
//! ASCII separators U+001C..U+001F (Python's `str.isspace`), a word character for `\b` is a
//! Unicode letter or digit or `_`, and weight digits are ASCII.
use crate::engine::error::{EngineError, Result};

const ROUND: f64 = 1.1;
const SQUARE: f64 = 1.0 / 1.1;

/// A run of prompt text and the multiplier its token embeddings get.
#[derive(Debug, Clone, PartialEq)]
pub struct Weighted {
    pub text: String,
    pub weight: f64,
}

impl Weighted {
    fn new(text: &str, weight: f64) -> Self {
        Self {
            text: text.to_string(),
            weight,
        }
    }

    /// A `BREAK` that ends the current chunk (one that brackets re-weighted is just text).
    pub fn is_break(&self) -> bool {
        self.text == "BREAK" && self.weight == -1.0
    }
}

/// What A1111's `re_attention` matches at one position.
enum Piece<'a> {
    /// `\(` and friends: the character after the backslash (empty for a lone backslash).
    Escaped(&'a str),
    Open(char),
    Close(char),
    /// `:1.3)` (with optional spaces), the number as written, and the whole match.
    Weight(&'a str, &'a str),
    Text(&'a str),
}

fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `:\s*([+-]?[.\d]+)\s*\)` at the start of `s` (which starts with ':'): (number, match length).
fn weight_at(s: &str) -> Option<(&str, usize)> {
    let after_colon = &s[1..];
    let rest = after_colon.trim_start_matches(is_space);
    let number_start = s.len() - rest.len();
    let unsigned = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    let digits = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    if digits == 0 {
        return None;
    }
    let number_end = s.len() - unsigned.len() + digits;
    let tail = s[number_end..].trim_start_matches(is_space);
    let close = tail.strip_prefix(')')?;
    Some((&s[number_start..number_end], s.len() - close.len()))
}

/// Splits the prompt into the pieces `re_attention.finditer` yields, in order.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let s = &text[i..];
        let c = s.chars().next().unwrap_or_default();
        let (piece, len) = match c {
            '\\' => match s[1..].chars().next() {
                Some(e @ ('(' | ')' | '[' | ']' | '\\')) => {
                    (Piece::Escaped(&s[1..2]), 1 + e.len_utf8())
                }
                _ => (Piece::Escaped(""), 1),
            },
            '(' | '[' => (Piece::Open(c), 1),
            ')' | ']' => (Piece::Close(c), 1),
            ':' => match weight_at(s) {
                Some((number, len)) => (Piece::Weight(number, &s[..len]), len),
                None => (Piece::Text(":"), 1),
            },
            _ => {
                let len = s.find(['\\', '(', ')', '[', ']', ':']).unwrap_or(s.len());
                (Piece::Text(&s[..len]), len)
            }
        };
        out.push(piece);
        i += len;
    }
    out
}

/// `re.split(r"\s*\bBREAK\b\s*", text)`.
fn split_breaks(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut last = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("BREAK") {
        let at = search + found;
        let end = at + "BREAK".len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        search = at + 1;
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            continue;
        }
        // The match starts where the whitespace before the word starts (leftmost match), but
        // never inside the previous match.
        let start = last + text[last..at].trim_end_matches(is_space).len();
        let stop = text.len() - text[end..].trim_start_matches(is_space).len();
        parts.push(&text[last..start]);
        last = stop;
        search = stop;
    }
    parts.push(&text[last..]);
    parts
}

fn multiply_from(res: &mut [Weighted], start: usize, by: f64) {
    for w in &mut res[start..] {
        w.weight *= by;
    }
}

/// The prompt as text runs with their weights, exactly as A1111's `parse_prompt_attention`.
/// A weight that is not a number (`(a:1.2.3)`) is an error, where A1111 fails too.
pub fn parse_prompt_attention(text: &str) -> Result<Vec<Weighted>> {
    let mut res: Vec<Weighted> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    for piece in pieces(text) {
        let literal = match piece {
            Piece::Escaped(s) => {
                res.push(Weighted::new(s, 1.0));
                continue;
            }
            Piece::Open('(') => {
                round.push(res.len());
                continue;
            }
            Piece::Open(_) => {
                square.push(res.len());
                continue;
            }
            Piece::Weight(number, whole) => match round.pop() {
                Some(start) => {
                    let weight: f64 = number.parse().map_err(|_| {
                        EngineError::Invalid(format!(
                            "the weight {number:?} in the prompt is not a number: write it like (word:1.2)"
                        ))
                    })?;
                    multiply_from(&mut res, start, weight);
                    continue;
                }
                None => whole,
            },
            Piece::Close(')') => match round.pop() {
                Some(start) => {
                    multiply_from(&mut res, start, ROUND);
                    continue;
                }
                None => ")",
            },
            Piece::Close(_) => match square.pop() {
                Some(start) => {
                    multiply_from(&mut res, start, SQUARE);
                    continue;
                }
                None => "]",
            },
            Piece::Text(s) => s,
        };
        for (i, part) in split_breaks(literal).into_iter().enumerate() {
            if i > 0 {
                res.push(Weighted::new("BREAK", -1.0));
            }
            res.push(Weighted::new(part, 1.0));
        }
    }
    for start in round {
        multiply_from(&mut res, start, ROUND);
    }
    for start in square {
        multiply_from(&mut res, start, SQUARE);
    }
    if res.is_empty() {
        res.push(Weighted::new("", 1.0));
    }
    let mut merged: Vec<Weighted> = Vec::with_capacity(res.len());
    for w in res {
        match merged.last_mut() {
            Some(last) if last.weight == w.weight => last.text.push_str(&w.text),
            _ => merged.push(w),
        }
    }
    Ok(merged)
}

/// The text with every character A1111's syntax gives a meaning to escaped, so that it parses
/// back to itself with weight 1 (a standalone `BREAK` still breaks: A1111 has no escape for it).
pub fn escape_attention(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '(' | ')' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<(String, f64)> {
        parse_prompt_attention(text)
            .unwrap()
            .into_iter()
            .map(|w| (w.text, w.weight))
            .collect()
    }

    fn pairs(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(t, w)| (t.to_string(), *w)).collect()
    }

    /// The input/output pairs of `parse_prompt_attention`'s docstring in A1111's
    /// modules/prompt_parser.py, with its float results written out as Python prints them.
    #[test]
    fn a1111_docstring_examples() {
        assert_eq!(parse("normal text"), pairs(&[("normal text", 1.0)]));
        assert_eq!(
            parse("an (important) word"),
            pairs(&[("an ", 1.0), ("important", 1.1), (" word", 1.0)])
        );
        assert_eq!(parse("(unbalanced"), pairs(&[("unbalanced", 1.1)]));
        assert_eq!(parse("\\(literal\\]"), pairs(&[("(literal]", 1.0)]));
        assert_eq!(
            parse("(unnecessary)(parens)"),
            pairs(&[("unnecessaryparens", 1.1)])
        );
        assert_eq!(
            parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            pairs(&[
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ])
        );
    }

    #[test]
    fn escape_round_trips_to_plain_text() {
        let text = "(a cat:1.2) [sitting] \\ odd";
        assert_eq!(
            parse(&escape_attention(text)),
            vec![(text.to_string(), 1.0)]
        );
    }

    #[test]
    fn bad_weight_is_a_clear_error() {
        let err = parse_prompt_attention("(a:1.2.3)").unwrap_err().to_string();
        assert!(err.contains("1.2.3") && err.contains("(word:1.2)"), "{err}");
    }
}
