//! SDXL prompts in AUTOMATIC1111's syntax. Each of SDXL's two text encoders cuts the prompt
//! into 77-token chunks with its own tokenizer (they share a vocabulary, so the chunks differ
//! only in padding), runs each chunk, and weights it on its own (A1111's emphasis and mean
//! restoration per encoder and chunk); the two encoders' chunks are then concatenated on the
//! feature axis, as A1111's SDXL conditioner does. The pooled embedding is the second
//! encoder's for the first chunk, as in A1111 and ComfyUI.
//!
//! The hidden state is diffusers' `hidden_states[-(clip_skip + 2)]` of both encoders, not
//! through the final layer norm, with diffusers' `clip_skip` being A1111's clip skip minus one.
//! A plain prompt (no weights or embeddings, at most 75 tokens) gives exactly diffusers'
//! `StableDiffusionXLPipeline.encode_prompt`.
use super::chunks::{self, Chunk, ChunkSpec, COMMA_BACKTRACK};
use super::embed::{apply_emphasis, token_embeddings};
use super::parser::parse_prompt_attention;
use super::textual_inversion::TextualInversions;
use crate::engine::error::{EngineError, Result};
use crate::engine::models::clip::{ClipTextModel, ClipTextModelWithProjection};
use crate::engine::tokenizer::ClipTokenizer;
use tch::Tensor;

/// One text encoder of the pair with its tokenizer and its part of the embeddings.
pub struct SdxlSide<'a> {
    pub tokenizer: &'a ClipTokenizer,
    pub embeddings: &'a TextualInversions,
}

/// A prompt's conditioning: `[1, 77 * chunks, width_1 + width_2]` and `[1, projection]`.
pub struct SdxlEmbedding {
    pub hidden: Tensor,
    pub pooled: Tensor,
}

/// Encodes prompts with SDXL's two text encoders.
pub struct SdxlPromptEncoder<'a> {
    first: SdxlSide<'a>,
    second: SdxlSide<'a>,
    encoder: &'a ClipTextModel,
    encoder_2: &'a ClipTextModelWithProjection,
    /// A1111's clip skip (at least 1): the hidden state is the output of all layers but
    /// `skip` (`hidden_states[-(skip + 1)]`, diffusers' `clip_skip` + 2).
    skip: usize,
    spec: ChunkSpec,
    spec_2: ChunkSpec,
}

fn spec_of(tokenizer: &ClipTokenizer) -> ChunkSpec {
    let comma = match tokenizer.tokenize(",")[..] {
        [id] => Some(id),
        _ => None,
    };
    ChunkSpec {
        bos: tokenizer.bos_id(),
        eos: tokenizer.eos_id(),
        pad: tokenizer.pad_id(),
        comma,
        length: tokenizer.max_length().saturating_sub(2),
        backtrack: COMMA_BACKTRACK,
    }
}

impl<'a> SdxlPromptEncoder<'a> {
    /// `clip_skip` in A1111's meaning: 0 and 1 take SDXL's usual penultimate layer, N the
    /// output N layers before the last; at most the layers of the shallower encoder.
    pub fn new(
        first: SdxlSide<'a>,
        encoder: &'a ClipTextModel,
        second: SdxlSide<'a>,
        encoder_2: &'a ClipTextModelWithProjection,
        clip_skip: u32,
    ) -> Result<Self> {
        let layers = encoder
            .num_layers()
            .min(encoder_2.text_model().num_layers());
        let skip = clip_skip.max(1) as usize;
        if skip > layers {
            return Err(EngineError::Invalid(format!(
                "clip skip {clip_skip} is too large: this model's text encoders have {layers} layers, so use 1 (none) to {layers}"
            )));
        }
        let (spec, spec_2) = (spec_of(first.tokenizer), spec_of(second.tokenizer));
        if spec.length != spec_2.length {
            return Err(EngineError::Invalid(format!(
                "the two tokenizers hold {} and {} tokens: check model_max_length in tokenizer/ and tokenizer_2/",
                spec.length + 2,
                spec_2.length + 2
            )));
        }
        Ok(Self {
            first,
            second,
            skip,
            encoder,
            encoder_2,
            spec,
            spec_2,
        })
    }

    /// The prompt's chunks for each encoder.
    pub fn chunks(&self, prompt: &str) -> Result<(Vec<Chunk>, Vec<Chunk>)> {
        let fragments = parse_prompt_attention(prompt)?;
        let cut = |side: &SdxlSide, spec: &ChunkSpec| {
            chunks::chunk_prompt(
                &fragments,
                &|text| side.tokenizer.tokenize(text),
                spec,
                side.embeddings,
            )
        };
        let (one, two) = (
            cut(&self.first, &self.spec)?,
            cut(&self.second, &self.spec_2)?,
        );
        let same = one.len() == two.len()
            && one
                .iter()
                .zip(&two)
                .all(|(a, b)| a.fixes == b.fixes && a.multipliers == b.multipliers);
        if !same {
            return Err(EngineError::Invalid(
                "the two SDXL tokenizers cut this prompt differently: tokenizer/ and tokenizer_2/ must share a vocabulary"
                    .into(),
            ));
        }
        Ok((one, two))
    }

    /// The prompt's embedding.
    pub fn encode(&self, prompt: &str) -> Result<SdxlEmbedding> {
        let (one, two) = self.chunks(prompt)?;
        let count = one.len();
        self.encode_chunks(&one, &two, count)
    }

    /// The positive and negative prompts' embeddings, the shorter padded with empty chunks to
    /// the other's length, as A1111 pads a negative prompt to its prompt.
    pub fn encode_pair(
        &self,
        positive: &str,
        negative: &str,
    ) -> Result<(SdxlEmbedding, SdxlEmbedding)> {
        let (p1, p2) = self.chunks(positive)?;
        let (n1, n2) = self.chunks(negative)?;
        let count = p1.len().max(n1.len());
        Ok((
            self.encode_chunks(&p1, &p2, count)?,
            self.encode_chunks(&n1, &n2, count)?,
        ))
    }

    fn encode_chunks(&self, one: &[Chunk], two: &[Chunk], count: usize) -> Result<SdxlEmbedding> {
        let pad = |chunks: &[Chunk], spec: &ChunkSpec| {
            let mut v = chunks.to_vec();
            v.resize_with(count.max(chunks.len()), || chunks::empty_chunk(spec));
            v
        };
        let (one, two) = (pad(one, &self.spec), pad(two, &self.spec_2));
        let mut parts = Vec::with_capacity(one.len());
        let mut pooled = None;
        for (i, (a, b)) in one.iter().zip(&two).enumerate() {
            let first = self.hidden(self.encoder, a, self.first.embeddings)?;
            let second = if i == 0 {
                let (hidden, p) = self.hidden_and_pooled(b)?;
                pooled = Some(p);
                hidden
            } else {
                self.hidden(self.encoder_2.text_model(), b, self.second.embeddings)?
            };
            parts.push(Tensor::cat(&[first, second], -1));
        }
        let pooled = pooled.ok_or_else(|| EngineError::Invalid("a prompt has no chunks".into()))?;
        Ok(SdxlEmbedding {
            hidden: Tensor::cat(&parts, 1),
            pooled,
        })
    }

    /// `hidden_states[-(clip_skip + 2)]` of one chunk, weighted.
    fn hidden(
        &self,
        encoder: &ClipTextModel,
        chunk: &Chunk,
        embeddings: &TextualInversions,
    ) -> Result<Tensor> {
        let layers = encoder.num_layers() - self.skip;
        let hidden = if chunk.fixes.is_empty() {
            let ids = Tensor::from_slice(&chunk.ids).unsqueeze(0);
            encoder.forward_until(&ids, layers)?
        } else {
            let tokens = token_embeddings(encoder, chunk, embeddings)?;
            encoder.forward_embeddings_until(&tokens, layers)?
        };
        Ok(apply_emphasis(hidden, &chunk.multipliers))
    }

    /// The second encoder's weighted hidden state of a chunk and its projected pooled output
    /// (unweighted, as A1111's); one pass through the encoder when no embedding is in it.
    fn hidden_and_pooled(&self, chunk: &Chunk) -> Result<(Tensor, Tensor)> {
        if !chunk.fixes.is_empty() {
            let model = self.encoder_2.text_model();
            let hidden = self.hidden(model, chunk, self.second.embeddings)?;
            return Ok((hidden, self.pooled(chunk)?));
        }
        let ids = Tensor::from_slice(&chunk.ids).unsqueeze(0);
        let out = self.encoder_2.forward(&ids)?;
        let layer = self.encoder_2.text_model().num_layers() - self.skip;
        let hidden = out.text.hidden_states[layer].shallow_clone();
        Ok((apply_emphasis(hidden, &chunk.multipliers), out.text_embeds))
    }

    /// The second encoder's projected pooled output of a chunk with embeddings in it.
    fn pooled(&self, chunk: &Chunk) -> Result<Tensor> {
        let model = self.encoder_2.text_model();
        let ids = Tensor::from_slice(&chunk.ids).unsqueeze(0);
        let tokens = token_embeddings(model, chunk, self.second.embeddings)?;
        let last = model.forward_embeddings_until(&tokens, model.num_layers())?;
        let last = model.final_layer_norm(&last);
        // Embedding placeholders are id 0, so the end of the text is found as without them.
        Ok(self.encoder_2.project(&model.pooled_output(&last, &ids)))
    }
}
