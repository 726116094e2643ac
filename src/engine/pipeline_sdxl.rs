//! SDXL's conditioning, as diffusers' `StableDiffusionXLPipeline` builds it: the penultimate
//! hidden states of both text encoders side by side, the second encoder's projected pooled
//! embedding, and the size conditions (`add_time_ids`).
use super::error::{EngineError, Result};
use super::loader::ModelFolder;
use super::models::clip::{ClipTextModel, ClipTextModelWithProjection};
use super::models::clip_config::ClipTextConfig;
use super::models::unet::UNetConditioning;
use super::tokenizer::ClipTokenizer;
use tch::{Device, Kind, Tensor};

/// The second tokenizer and text encoder of an SDXL folder, and how it treats empty negatives.
pub struct SdxlText {
    tokenizer_2: ClipTokenizer,
    text_encoder_2: ClipTextModelWithProjection,
    /// model_index.json's `force_zeros_for_empty_prompt`: an absent negative prompt is zeros,
    /// not the encoding of "".
    force_zeros_for_empty_prompt: bool,
    device: Device,
    kind: Kind,
}

/// One prompt through both encoders: `[1, tokens, width_1 + width_2]` and `[1, projection]`.
struct Encoded {
    hidden: Tensor,
    pooled: Tensor,
}

/// What the UNet needs for a render: the text context and SDXL's added conditions, with the
/// unconditional half first when guided.
pub struct SdxlConditioning {
    pub context: Tensor,
    pub added: UNetConditioning,
}

impl SdxlText {
    /// Loads `tokenizer_2/` and `text_encoder_2/`. Weight mismatches go to `mismatches`, so
    /// that the caller reports every component's at once.
    pub fn load(
        folder: &ModelFolder,
        device: Device,
        kind: Kind,
        mismatches: &mut Vec<EngineError>,
    ) -> Result<Self> {
        let tokenizer_dir = folder.component("tokenizer_2");
        let tokenizer_2 = if tokenizer_dir.join("vocab.json").is_file() {
            ClipTokenizer::from_folder(&tokenizer_dir)?
        } else {
            // SDXL's second tokenizer is OpenCLIP's, which pads with "!".
            ClipTokenizer::embedded("!")?
        };
        let config = ClipTextConfig::from_file(&folder.config("text_encoder_2", "config.json"))?;
        let weights = folder.weights("text_encoder_2", "model", device, kind)?;
        let text_encoder_2 = ClipTextModelWithProjection::new(&weights.root(), &config)?;
        mismatches.extend(weights.finish().err());

        let index: serde_json::Value =
            super::loader::read_json(&folder.root.join("model_index.json"))?;
        let force_zeros_for_empty_prompt = index
            .get("force_zeros_for_empty_prompt")
            .and_then(|v| v.as_bool())
            // diffusers' StableDiffusionXLPipeline defaults it to true.
            .unwrap_or(true);
        Ok(Self {
            tokenizer_2,
            text_encoder_2,
            force_zeros_for_empty_prompt,
            device,
            kind,
        })
    }

    /// The context and added conditions for `batch` images of `height` x `width` pixels. An
    /// empty `negative` counts as no negative prompt (zeros when the model asks for them).
    #[allow(clippy::too_many_arguments)]
    pub fn condition(
        &self,
        tokenizer: &ClipTokenizer,
        text_encoder: &ClipTextModel,
        prompt: &str,
        negative: &str,
        guided: bool,
        batch: i64,
        height: i64,
        width: i64,
    ) -> Result<SdxlConditioning> {
        let positive = self.encode(tokenizer, text_encoder, prompt)?;
        let repeat = |e: &Encoded| (e.hidden.repeat([batch, 1, 1]), e.pooled.repeat([batch, 1]));
        let (mut context, mut pooled) = repeat(&positive);
        if guided {
            let negative = if negative.is_empty() && self.force_zeros_for_empty_prompt {
                Encoded {
                    hidden: positive.hidden.zeros_like(),
                    pooled: positive.pooled.zeros_like(),
                }
            } else {
                self.encode(tokenizer, text_encoder, negative)?
            };
            let (neg_context, neg_pooled) = repeat(&negative);
            context = Tensor::cat(&[neg_context, context], 0);
            pooled = Tensor::cat(&[neg_pooled, pooled], 0);
        }
        let rows = pooled.size()[0];
        // original_size (h, w), crop top-left (0, 0), target_size (h, w); the same for the
        // unconditional half, as diffusers uses when no negative sizes are given.
        let ids = [height, width, 0, 0, height, width].map(|v| v as f32);
        let time_ids = Tensor::from_slice(&ids)
            .to_kind(self.kind)
            .to_device(self.device)
            .unsqueeze(0)
            .repeat([rows, 1]);
        Ok(SdxlConditioning {
            context,
            added: UNetConditioning {
                text_embeds: Some(pooled),
                time_ids: Some(time_ids),
                ..UNetConditioning::default()
            },
        })
    }

    /// diffusers' `encode_prompt` for one prompt: `hidden_states[-2]` of each encoder (not
    /// through the final layer norm), concatenated; the pooled embedding from the second.
    fn encode(
        &self,
        tokenizer: &ClipTokenizer,
        text_encoder: &ClipTextModel,
        prompt: &str,
    ) -> Result<Encoded> {
        let ids = |t: &ClipTokenizer| {
            Tensor::from_slice(&t.encode_padded(prompt))
                .unsqueeze(0)
                .to_device(self.device)
        };
        let layers_1 = text_encoder.num_layers();
        let first = text_encoder.forward_until(&ids(tokenizer), layers_1.saturating_sub(1))?;
        let out = self.text_encoder_2.forward(&ids(&self.tokenizer_2))?;
        let states = &out.text.hidden_states;
        let second = &states[states.len().saturating_sub(2)];
        if first.size()[1] != second.size()[1] {
            return Err(EngineError::Invalid(format!(
                "the two tokenizers give {} and {} tokens: check tokenizer/ and tokenizer_2/ (model_max_length)",
                first.size()[1],
                second.size()[1]
            )));
        }
        Ok(Encoded {
            hidden: Tensor::cat(&[&first, second], -1),
            pooled: out.text_embeds,
        })
    }
}
