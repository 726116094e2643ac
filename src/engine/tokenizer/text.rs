//! CLIP's normalizer and pre-tokenizer as transformers 5 configures `tokenizers` for it:
//! NFC, whitespace runs to one space, per-character lower-casing; then CLIP's word regex,
//! then the byte-level step (which splits once more with GPT-2's regex and maps bytes to symbols).
use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// CLIP's word split. Leftmost-first alternation, like Oniguruma's; whitespace is dropped.
const CLIP_WORDS: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

/// GPT-2's split, applied by the byte-level step to each CLIP word. Its optional leading
/// space and whitespace branches never fire on words without whitespace, so they are left out.
/// It only changes anything for the special-token spellings CLIP_WORDS keeps whole.
const BYTE_LEVEL_WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";

pub struct PreTokenizer {
    clip_words: Regex,
    byte_level_words: Regex,
    byte_symbols: [char; 256],
}

impl PreTokenizer {
    pub fn new(byte_symbols: [char; 256]) -> Self {
        // Both patterns are constants known to compile.
        let compile = |p: &str| Regex::new(p).expect("constant regex compiles");
        PreTokenizer {
            clip_words: compile(CLIP_WORDS),
            byte_level_words: compile(BYTE_LEVEL_WORDS),
            byte_symbols,
        }
    }

    /// Calls `word` with each byte-level word (bytes mapped to CLIP's symbols) of normalized text.
    pub fn for_each_word(&self, normalized: &str, mut word: impl FnMut(&str)) {
        let mut mapped = String::new();
        for clip_word in self.clip_words.find_iter(normalized) {
            for piece in self.byte_level_words.find_iter(clip_word.as_str()) {
                mapped.clear();
                mapped.extend(
                    piece
                        .as_str()
                        .bytes()
                        .map(|b| self.byte_symbols[b as usize]),
                );
                word(&mapped);
            }
        }
    }
}

/// NFC, then every run of whitespace becomes one space, then each character is lower-cased on
/// its own (so a final capital sigma becomes σ, not ς, as in `tokenizers`).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.nfc() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_collapses_and_letters_lower_case_one_by_one() {
        assert_eq!(normalize("A\t\n  B"), "a b");
        assert_eq!(normalize("ΟΔΟΣ"), "οδοσ");
        assert_eq!(normalize("e\u{301}"), "\u{e9}");
    }
}
