//! Special tokens: which ones a tokenizer folder declares, and how they are cut out of a prompt
//! before BPE, the way transformers 5 registers them with `tokenizers`.
//!
//! transformers adds bos, eos, unk, sep, pad, cls, mask in that order; a later declaration of
//! the same text replaces an earlier one, so its `normalized` flag wins. A plain string is not
//! normalized; an `{"content": .., "normalized": ..}` object says. Non-normalized tokens are
//! matched in the raw prompt, normalized ones in the normalized (lower-cased) text.
use serde_json::Value;

/// transformers' order of the named special tokens.
pub const SPECIAL_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

#[derive(Clone, Debug, PartialEq)]
pub struct TokenSpec {
    pub content: String,
    pub normalized: bool,
}

impl TokenSpec {
    pub fn plain(content: &str) -> Self {
        TokenSpec {
            content: content.to_string(),
            normalized: false,
        }
    }

    /// A string, or an AddedToken object; `None` for null or anything else.
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::String(s) => Some(TokenSpec::plain(s)),
            Value::Object(map) => Some(TokenSpec {
                content: map.get("content")?.as_str()?.to_string(),
                normalized: map
                    .get("normalized")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }),
            _ => None,
        }
    }
}

/// A special token with its id, ready for matching.
#[derive(Clone, Debug)]
pub struct AddedToken {
    /// The text to look for: the content, normalized when the token is.
    pub pattern: String,
    pub id: i64,
}

/// Keeps the last declaration per content, in first-declaration order.
#[derive(Default)]
pub struct Declarations(Vec<TokenSpec>);

impl Declarations {
    pub fn declare(&mut self, spec: TokenSpec) {
        match self.0.iter_mut().find(|s| s.content == spec.content) {
            Some(existing) => *existing = spec,
            None => self.0.push(spec),
        }
    }

    pub fn into_specs(self) -> Vec<TokenSpec> {
        self.0
    }
}

/// A stretch of text: either a matched special token's id, or text to tokenize further.
pub enum Piece<'a> {
    Special(i64),
    Text(&'a str),
}

/// Splits `text` at the leftmost-longest occurrences of `tokens` (empty patterns ignored).
pub fn split<'a>(text: &'a str, tokens: &[AddedToken]) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let best = tokens
            .iter()
            .filter(|t| !t.pattern.is_empty() && rest.starts_with(t.pattern.as_str()))
            .max_by_key(|t| t.pattern.len());
        match best {
            Some(token) => {
                if start < pos {
                    pieces.push(Piece::Text(&text[start..pos]));
                }
                pieces.push(Piece::Special(token.id));
                pos += token.pattern.len();
                start = pos;
            }
            None => pos += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    if start < text.len() {
        pieces.push(Piece::Text(&text[start..]));
    }
    pieces
}
