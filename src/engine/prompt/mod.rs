//! Prompts as AUTOMATIC1111 reads them: attention weights (`(word:1.3)`, `[word]`), prompts
//! longer than 75 tokens in 77-token chunks, `BREAK`, clip skip, and textual-inversion
//! embeddings by name. A prompt with no weights, no embeddings and at most 75 tokens gives
//! exactly diffusers' embedding.
//!
//! parser.rs reads the syntax, chunks.rs cuts tokens into chunks, embed.rs runs a chunk through
//! the text encoder and applies the weights, textual_inversion.rs finds embeddings by name,
//! sdxl.rs does all of it with SDXL's two text encoders.
pub mod chunks;
pub mod embed;
pub mod parser;
pub mod sdxl;
pub mod textual_inversion;

pub use chunks::{Chunk, ChunkSpec, Fix, COMMA_BACKTRACK};
pub use parser::{escape_attention, parse_prompt_attention, Weighted};
pub use sdxl::{SdxlEmbedding, SdxlPromptEncoder, SdxlSide};
pub use textual_inversion::{Part, TextualInversions};

use crate::engine::error::{EngineError, Result};
use crate::engine::models::clip::ClipTextModel;
use crate::engine::tokenizer::ClipTokenizer;
use tch::Tensor;

/// Encodes prompts with one text encoder, its tokenizer, a clip skip and the embeddings.
pub struct PromptEncoder<'a> {
    tokenizer: &'a ClipTokenizer,
    encoder: &'a ClipTextModel,
    clip_skip: u32,
    embeddings: &'a TextualInversions,
    spec: ChunkSpec,
}

impl<'a> PromptEncoder<'a> {
    /// `clip_skip` in A1111's meaning: 0 and 1 use the last layer, N the N-th layer from the
    /// end (through the final layer norm); at most the number of layers.
    pub fn new(
        tokenizer: &'a ClipTokenizer,
        encoder: &'a ClipTextModel,
        clip_skip: u32,
        embeddings: &'a TextualInversions,
    ) -> Result<Self> {
        let layers = encoder.num_layers();
        if clip_skip as usize > layers {
            return Err(EngineError::Invalid(format!(
                "clip skip {clip_skip} is too large: this text encoder has {layers} layers, so use 1 (none) to {layers}"
            )));
        }
        let comma = match tokenizer.tokenize(",")[..] {
            [id] => Some(id),
            _ => None,
        };
        let spec = ChunkSpec {
            bos: tokenizer.bos_id(),
            eos: tokenizer.eos_id(),
            pad: tokenizer.pad_id(),
            comma,
            length: tokenizer.max_length().saturating_sub(2),
            backtrack: COMMA_BACKTRACK,
        };
        Ok(Self {
            tokenizer,
            encoder,
            clip_skip,
            embeddings,
            spec,
        })
    }

    pub fn spec(&self) -> &ChunkSpec {
        &self.spec
    }

    /// The prompt's chunks: ids, weights and embedding positions.
    pub fn chunks(&self, prompt: &str) -> Result<Vec<Chunk>> {
        let fragments = parse_prompt_attention(prompt)?;
        chunks::chunk_prompt(
            &fragments,
            &|text| self.tokenizer.tokenize(text),
            &self.spec,
            self.embeddings,
        )
    }

    /// `[1, 77 * chunks, hidden]`: the chunks' embeddings side by side.
    pub fn encode(&self, prompt: &str) -> Result<Tensor> {
        let chunks = self.chunks(prompt)?;
        self.encode_chunks(&chunks, chunks.len())
    }

    /// The positive and negative prompts' embeddings, the shorter padded with empty chunks to
    /// the other's length, as A1111 pads a negative prompt to its prompt.
    pub fn encode_pair(&self, positive: &str, negative: &str) -> Result<(Tensor, Tensor)> {
        let positive = self.chunks(positive)?;
        let negative = self.chunks(negative)?;
        let count = positive.len().max(negative.len());
        Ok((
            self.encode_chunks(&positive, count)?,
            self.encode_chunks(&negative, count)?,
        ))
    }

    fn encode_chunks(&self, chunks: &[Chunk], count: usize) -> Result<Tensor> {
        let mut parts = Vec::with_capacity(count);
        for chunk in chunks {
            parts.push(self.encode_chunk(chunk)?);
        }
        if parts.len() < count {
            let empty = self.encode_chunk(&chunks::empty_chunk(&self.spec))?;
            parts.resize_with(count, || empty.shallow_clone());
        }
        Ok(Tensor::cat(&parts, 1))
    }

    fn encode_chunk(&self, chunk: &Chunk) -> Result<Tensor> {
        embed::encode_chunk(self.encoder, chunk, self.clip_skip, self.embeddings)
    }
}
