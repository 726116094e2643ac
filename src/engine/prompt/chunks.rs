//! Weighted prompt fragments to 77-token chunks, as AUTOMATIC1111's
//! `FrozenCLIPEmbedderWithCustomWords.tokenize_line` (modules/sd_hijack_clip.py) builds them:
//!
//! - each fragment is tokenized on its own, and each token keeps its fragment's weight;
//! - a chunk holds 75 prompt tokens; when one fills up and the last comma in it is at most
//!   20 tokens back (A1111's `comma_padding_backtrack`), the tokens after that comma move on
//!   to the next chunk, so a phrase is not cut in two;
//! - `BREAK` closes the current chunk;
//! - a textual-inversion name becomes its vectors (placeholder id 0 in `ids`), and moves whole
//!   to the next chunk when it does not fit;
//! - each chunk is BOS, its tokens, EOS, then the tokenizer's padding up to 77, with weight 1
//!   on BOS, EOS and padding. A prompt with no tokens is one empty chunk.
//!
//! One deliberate difference: when A1111 moves the tokens after a comma to the next chunk it
//! leaves their textual-inversion vectors behind (writing them into the old chunk's padding);
//! here they move with their tokens.
use super::parser::Weighted;
use super::textual_inversion::TextualInversions;
use crate::engine::error::{EngineError, Result};

/// A1111's default `comma_padding_backtrack`.
pub const COMMA_BACKTRACK: usize = 20;

/// The token ids a chunk is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    pub bos: i64,
    pub eos: i64,
    pub pad: i64,
    /// The id of `,</w>`, if the vocabulary has it.
    pub comma: Option<i64>,
    /// Prompt tokens per chunk: the context length less BOS and EOS (75 for CLIP).
    pub length: usize,
    /// How far back a comma may be to move the words after it to the next chunk (0: never).
    pub backtrack: usize,
}

/// Textual-inversion vectors that replace `vectors` token embeddings from `offset` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fix {
    /// The position in the chunk's ids (BOS is position 0).
    pub offset: usize,
    /// The embedding's index in its [`TextualInversions`].
    pub file: usize,
    pub vectors: usize,
}

/// One chunk: `length + 2` ids and their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub ids: Vec<i64>,
    pub multipliers: Vec<f64>,
    pub fixes: Vec<Fix>,
}

impl Chunk {
    /// No weights and no embeddings: the text encoder's output is used as it is.
    pub fn is_plain(&self) -> bool {
        self.fixes.is_empty() && self.multipliers.iter().all(|&m| m == 1.0)
    }
}

/// The chunk being filled: prompt tokens only, fix offsets relative to them.
#[derive(Default)]
struct Open {
    tokens: Vec<i64>,
    multipliers: Vec<f64>,
    fixes: Vec<Fix>,
}

struct Builder<'a> {
    spec: &'a ChunkSpec,
    chunks: Vec<Chunk>,
    open: Open,
    /// Where the last comma of the open chunk sits.
    last_comma: Option<usize>,
}

impl Builder<'_> {
    fn close(&mut self) {
        let open = std::mem::take(&mut self.open);
        let s = self.spec;
        let padding = s.length.saturating_sub(open.tokens.len());
        let mut ids = Vec::with_capacity(s.length + 2);
        ids.push(s.bos);
        ids.extend(&open.tokens);
        ids.push(s.eos);
        ids.extend(std::iter::repeat_n(s.pad, padding));
        let mut multipliers = Vec::with_capacity(ids.len());
        multipliers.push(1.0);
        multipliers.extend(&open.multipliers);
        multipliers.extend(std::iter::repeat_n(1.0, padding + 1));
        let fixes = open
            .fixes
            .into_iter()
            .map(|f| Fix {
                offset: f.offset + 1,
                ..f
            })
            .collect();
        self.chunks.push(Chunk {
            ids,
            multipliers,
            fixes,
        });
        self.last_comma = None;
    }

    /// Moves the tokens after the comma at `comma` into a new chunk.
    fn move_after_comma(&mut self, comma: usize) {
        let cut = comma + 1;
        let tokens = self.open.tokens.split_off(cut);
        let multipliers = self.open.multipliers.split_off(cut);
        let (moved, kept): (Vec<Fix>, Vec<Fix>) =
            self.open.fixes.iter().partition(|f| f.offset >= cut);
        self.open.fixes = kept;
        self.close();
        self.open = Open {
            tokens,
            multipliers,
            fixes: moved
                .into_iter()
                .map(|f| Fix {
                    offset: f.offset - cut,
                    ..f
                })
                .collect(),
        };
    }

    fn add_tokens(
        &mut self,
        tokens: &[i64],
        weight: f64,
        embeddings: &TextualInversions,
    ) -> Result<()> {
        let length = self.spec.length;
        let mut position = 0;
        while position < tokens.len() {
            let token = tokens[position];
            if Some(token) == self.spec.comma {
                self.last_comma = Some(self.open.tokens.len());
            } else if let Some(comma) = self.last_comma.filter(|&c| {
                self.spec.backtrack != 0
                    && self.open.tokens.len() == length
                    && length - c <= self.spec.backtrack
            }) {
                self.move_after_comma(comma);
            }
            if self.open.tokens.len() == length {
                self.close();
            }
            let Some(found) = embeddings.find_at(tokens, position)? else {
                self.open.tokens.push(token);
                self.open.multipliers.push(weight);
                position += 1;
                continue;
            };
            if found.vectors > length {
                return Err(EngineError::Invalid(format!(
                    "the textual-inversion embedding {} has {} vectors, more than the {length} a chunk holds",
                    embeddings
                        .path(found.file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    found.vectors
                )));
            }
            if self.open.tokens.len() + found.vectors > length {
                self.close();
            }
            self.open.fixes.push(Fix {
                offset: self.open.tokens.len(),
                file: found.file,
                vectors: found.vectors,
            });
            self.open
                .tokens
                .extend(std::iter::repeat_n(0, found.vectors));
            self.open
                .multipliers
                .extend(std::iter::repeat_n(weight, found.vectors));
            position += found.name_tokens;
        }
        Ok(())
    }
}

/// The chunks of one parsed prompt; `tokenize` gives a fragment's BPE ids (no BOS/EOS).
pub fn chunk_prompt(
    fragments: &[Weighted],
    tokenize: &dyn Fn(&str) -> Vec<i64>,
    spec: &ChunkSpec,
    embeddings: &TextualInversions,
) -> Result<Vec<Chunk>> {
    if spec.length == 0 {
        return Err(EngineError::Invalid(
            "the tokenizer's context has no room for prompt tokens".into(),
        ));
    }
    let mut b = Builder {
        spec,
        chunks: Vec::new(),
        open: Open::default(),
        last_comma: None,
    };
    for fragment in fragments {
        if fragment.is_break() {
            b.close();
            continue;
        }
        b.add_tokens(&tokenize(&fragment.text), fragment.weight, embeddings)?;
    }
    if !b.open.tokens.is_empty() || b.chunks.is_empty() {
        b.close();
    }
    Ok(b.chunks)
}

/// A chunk with no prompt tokens: what the shorter of two prompts is padded with.
pub fn empty_chunk(spec: &ChunkSpec) -> Chunk {
    let mut b = Builder {
        spec,
        chunks: Vec::new(),
        open: Open::default(),
        last_comma: None,
    };
    b.close();
    b.chunks.remove(0)
}
