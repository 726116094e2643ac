//! One chunk through the text encoder, then AUTOMATIC1111's "Original" emphasis
//! (modules/sd_emphasis.py): each token's hidden state is multiplied by its weight, and the
//! result is rescaled so that its mean over the chunk is what it was before weighting.
use super::chunks::Chunk;
use super::textual_inversion::TextualInversions;
use crate::engine::error::Result;
use crate::engine::models::clip::ClipTextModel;
use tch::{Kind, Tensor};

/// The chunk's `[1, ids, hidden]` embedding. `clip_skip` is A1111's: 0 or 1 take the last
/// layer, N > 1 the output N - 1 layers before it, through the final layer norm.
///
/// A chunk with no weights and no embeddings is the text encoder's output exactly as
/// diffusers computes it (A1111's multiply by 1 and rescale by 1 would change no value).
pub fn encode_chunk(
    encoder: &ClipTextModel,
    chunk: &Chunk,
    clip_skip: u32,
    embeddings: &TextualInversions,
) -> Result<Tensor> {
    let skip = clip_skip.saturating_sub(1) as usize;
    let ids = Tensor::from_slice(&chunk.ids).unsqueeze(0);
    let hidden = if chunk.fixes.is_empty() {
        if skip == 0 {
            encoder.forward(&ids)?.last_hidden_state
        } else {
            encoder.forward_clip_skip(&ids, skip)?
        }
    } else {
        let tokens = token_embeddings(encoder, chunk, embeddings)?;
        let layers = encoder.num_layers().saturating_sub(skip);
        let h = encoder.forward_embeddings_until(&tokens, layers)?;
        encoder.final_layer_norm(&h)
    };
    Ok(apply_emphasis(hidden, &chunk.multipliers))
}

/// The chunk's token embeddings with its textual-inversion vectors in place (A1111's
/// `EmbeddingsWithFixes`), positions not yet added.
pub fn token_embeddings(
    encoder: &ClipTextModel,
    chunk: &Chunk,
    embeddings: &TextualInversions,
) -> Result<Tensor> {
    let ids = Tensor::from_slice(&chunk.ids).unsqueeze(0);
    let tokens = encoder.token_embeddings(&ids)?;
    for fix in &chunk.fixes {
        let vectors = embeddings.vectors(fix.file)?;
        let mut rows = tokens.narrow(1, fix.offset as i64, fix.vectors as i64);
        rows.copy_(&vectors.to_kind(tokens.kind()).unsqueeze(0));
    }
    Ok(tokens)
}

/// The chunk's weights applied to its `[1, ids, hidden]` hidden states; all-1 weights leave
/// them as they are (A1111's multiply by 1 and rescale by 1 would change no value).
pub fn apply_emphasis(hidden: Tensor, multipliers: &[f64]) -> Tensor {
    if multipliers.iter().all(|&m| m == 1.0) {
        return hidden;
    }
    emphasize(&hidden, multipliers).to_kind(hidden.kind())
}

/// A1111's weighting with mean restoration, in fp32 (A1111's multipliers are an fp32 tensor,
/// which promotes half-precision hidden states).
fn emphasize(hidden: &Tensor, multipliers: &[f64]) -> Tensor {
    let z = hidden.to_kind(Kind::Float);
    let weights: Vec<f32> = multipliers.iter().map(|&m| m as f32).collect();
    let weights = Tensor::from_slice(&weights)
        .to_device(z.device())
        .view([1, -1, 1]);
    let original_mean = z.mean(Kind::Float);
    let weighted = &z * &weights;
    let new_mean = weighted.mean(Kind::Float);
    weighted * (original_mean / new_mean)
}
