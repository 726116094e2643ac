//! CLIP's BPE tokenizer, giving exactly the ids that diffusers' Stable Diffusion pipelines get
//! from transformers 5's `CLIPTokenizer` (a `tokenizers` pipeline: special tokens cut out,
//! NFC + whitespace + lower-case normalizer, CLIP word regex, byte-level symbols, BPE with `</w>`).
mod bpe;
mod load;
mod special;
mod text;

use crate::engine::error::Result;
use bpe::Bpe;
use special::{AddedToken, Piece};
use std::path::Path;
use text::PreTokenizer;

/// CLIP's context length, used when a folder's config names none.
pub const DEFAULT_MAX_LENGTH: usize = 77;

pub struct ClipTokenizer {
    bpe: Bpe,
    pre_tokenizer: PreTokenizer,
    /// Special tokens matched in the raw prompt, before normalization.
    raw_specials: Vec<AddedToken>,
    /// Special tokens matched in the normalized prompt.
    normalized_specials: Vec<AddedToken>,
    bos: i64,
    eos: i64,
    pad: i64,
    max_length: usize,
}

impl ClipTokenizer {
    /// From a model folder's tokenizer/ directory: vocab.json + merges.txt, plus
    /// tokenizer_config.json / special_tokens_map.json for the special tokens and
    /// model_max_length (77 when absent or unusable).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        load::from_folder(dir)
    }

    /// From the CLIP vocabulary embedded in the binary, configured like the tokenizer folders
    /// of SD repositories. `pad_token` is "<|endoftext|>" for SD 1.x and "!" for SD 2.x.
    pub fn embedded(pad_token: &str) -> Result<Self> {
        load::embedded(pad_token)
    }

    /// BPE ids of the text, without BOS/EOS. Special-token text in the prompt becomes its id.
    pub fn tokenize(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        for piece in special::split(text, &self.raw_specials) {
            let segment = match piece {
                Piece::Special(id) => {
                    ids.push(id);
                    continue;
                }
                Piece::Text(segment) => text::normalize(segment),
            };
            for piece in special::split(&segment, &self.normalized_specials) {
                match piece {
                    Piece::Special(id) => ids.push(id),
                    Piece::Text(words) => self
                        .pre_tokenizer
                        .for_each_word(words, |word| self.bpe.word(word, &mut ids)),
                }
            }
        }
        ids
    }

    /// What diffusers passes to the text encoder: `tokenizer(prompt, padding="max_length",
    /// max_length=model_max_length, truncation=True).input_ids` — BOS, at most max_length-2
    /// ids, EOS, then padding.
    pub fn encode_padded(&self, text: &str) -> Vec<i64> {
        let mut ids = self.tokenize(text);
        ids.truncate(self.max_length.saturating_sub(2));
        let mut out = Vec::with_capacity(self.max_length.max(2));
        out.push(self.bos);
        out.append(&mut ids);
        out.push(self.eos);
        if out.len() < self.max_length {
            out.resize(self.max_length, self.pad);
        }
        out
    }

    pub fn bos_id(&self) -> i64 {
        self.bos
    }

    pub fn eos_id(&self) -> i64 {
        self.eos
    }

    pub fn pad_id(&self) -> i64 {
        self.pad
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Size of the BPE vocabulary (without special tokens that are not part of it).
    pub fn vocab_size(&self) -> usize {
        self.bpe.vocab_size()
    }
}
