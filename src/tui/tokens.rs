//! The prompt's token count against CLIP's 75-token window, with easel's own tokenizer and
//! prompt parser (neither touches tch), counting as AUTOMATIC1111 does: weights and brackets
//! are syntax, not tokens.
use crate::engine::prompt::parser::parse_prompt_attention;
use crate::engine::tokenizer::ClipTokenizer;

/// Tokens one chunk holds (77 minus BOS and EOS).
pub const WINDOW: usize = 75;

pub struct TokenCounter {
    tokenizer: Option<ClipTokenizer>,
}

impl TokenCounter {
    pub fn new() -> Self {
        Self {
            tokenizer: ClipTokenizer::embedded("<|endoftext|>").ok(),
        }
    }

    /// Tokens in the prompt, or None when the tokenizer could not be built.
    pub fn count(&self, prompt: &str) -> Option<usize> {
        let tokenizer = self.tokenizer.as_ref()?;
        let prompt = crate::engine::lora::strip_tags(prompt);
        let parts = match parse_prompt_attention(&prompt) {
            Ok(parts) => parts,
            Err(_) => return Some(tokenizer.tokenize(&prompt).len()),
        };
        Some(
            parts
                .iter()
                .filter(|p| !p.is_break())
                .map(|p| tokenizer.tokenize(&p.text).len())
                .sum(),
        )
    }
}

impl Default for TokenCounter {
    fn default() -> Self {
        Self::new()
    }
}
