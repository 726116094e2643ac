//! SDXL's conditioning, as diffusers' `StableDiffusionXLPipeline` builds it: the penultimate
//! hidden states of both text encoders side by side, the second encoder's projected pooled
//! embedding, and the size conditions (`add_time_ids`). Prompts are read in AUTOMATIC1111's
//! syntax (weights, BREAK, long prompts, clip skip, textual inversion): see `prompt::sdxl`.
use super::error::{EngineError, Result};
use super::loader::{ModelFolder, ModelSource};
use super::lora::LoraSet;
use super::models::clip::{ClipTextModel, ClipTextModelWithProjection};
use super::models::clip_config::ClipTextConfig;
use super::models::unet::UNetConditioning;
use super::prompt::{Part, SdxlEmbedding, SdxlPromptEncoder, SdxlSide, TextualInversions};
use super::tokenizer::ClipTokenizer;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// The second tokenizer and text encoder of an SDXL folder, and how it treats empty negatives.
pub struct SdxlText {
    tokenizer_2: ClipTokenizer,
    text_encoder_2: ClipTextModelWithProjection,
    /// model_index.json's `force_zeros_for_empty_prompt`: an absent negative prompt is zeros,
    /// not the encoding of "".
    force_zeros_for_empty_prompt: bool,
    /// The second encoder's tensors, sharing their TensorImpl with its own (for offload).
    tensors_2: Vec<Tensor>,
    device: Device,
    kind: Kind,
}

/// What a render asks of the text side.
#[derive(Debug, Clone, Copy)]
pub struct SdxlPrompt<'a> {
    pub prompt: &'a str,
    /// Empty: no negative prompt (zeros when the model asks for them).
    pub negative: &'a str,
    /// AUTOMATIC1111's clip skip (0 or 1: SDXL's usual penultimate layer).
    pub clip_skip: u32,
    /// Textual-inversion files or folders (SDXL embeddings: `clip_l` and `clip_g`).
    pub embeddings: &'a [PathBuf],
}

/// What the UNet needs for a render: the text context and SDXL's added conditions, with the
/// unconditional half first when guided.
pub struct SdxlConditioning {
    pub context: Tensor,
    pub added: UNetConditioning,
}

impl SdxlText {
    /// Loads `tokenizer_2/` and `text_encoder_2/` of a folder. Weight mismatches go to
    /// `mismatches`, so that the caller reports every component's at once.
    pub fn load(
        folder: &ModelFolder,
        device: Device,
        kind: Kind,
        mismatches: &mut Vec<EngineError>,
    ) -> Result<Self> {
        let source = ModelSource::Folder(folder.clone());
        Self::load_from(&source, &LoraSet::default(), device, kind, mismatches)
    }

    /// Loads the second tokenizer and text encoder of a folder or a single-file checkpoint,
    /// with the LoRAs' `text_encoder_2` parts fused in.
    pub fn load_from(
        source: &ModelSource,
        loras: &LoraSet,
        device: Device,
        kind: Kind,
        mismatches: &mut Vec<EngineError>,
    ) -> Result<Self> {
        Self::load_placed(source, loras, device, kind, None, mismatches)
    }

    /// As [`load_from`](Self::load_from), with the weights put on `host` when given (model CPU
    /// offload) while the encoder still computes on `device`.
    pub fn load_placed(
        source: &ModelSource,
        loras: &LoraSet,
        device: Device,
        kind: Kind,
        host: Option<Device>,
        mismatches: &mut Vec<EngineError>,
    ) -> Result<Self> {
        // SDXL's second tokenizer is OpenCLIP's, which pads with "!".
        let tokenizer_2 = source.tokenizer("tokenizer_2", "!")?;
        let (text_encoder_2, tensors_2) =
            load_encoder(source, loras, (device, kind, host), mismatches)?;
        let index = match source {
            ModelSource::Folder(folder) => Some(folder.root.join("model_index.json")),
            ModelSource::SingleFile(c) => c.config_dir().map(|d| d.join("model_index.json")),
        };
        let index: serde_json::Value = match index.filter(|p| p.is_file()) {
            Some(path) => super::loader::read_json(&path)?,
            None => serde_json::Value::Null,
        };
        let force_zeros_for_empty_prompt = index
            .get("force_zeros_for_empty_prompt")
            .and_then(|v| v.as_bool())
            // diffusers' StableDiffusionXLPipeline defaults it to true.
            .unwrap_or(true);
        Ok(Self {
            tokenizer_2,
            text_encoder_2,
            force_zeros_for_empty_prompt,
            tensors_2,
            device,
            kind,
        })
    }

    /// The second text encoder's tensors, for the offload registry.
    pub fn text_encoder_2_tensors(&self) -> Vec<Tensor> {
        self.tensors_2.iter().map(Tensor::shallow_clone).collect()
    }

    /// Rebuilds the second text encoder from the model's files with other LoRAs (none: the
    /// base weights, bit for bit), its weights on `host` when given (offload).
    pub fn set_loras(
        &mut self,
        source: &ModelSource,
        loras: &LoraSet,
        host: Option<Device>,
    ) -> Result<()> {
        let mut mismatches = Vec::new();
        let (encoder, tensors) = load_encoder(
            source,
            loras,
            (self.device, self.kind, host),
            &mut mismatches,
        )?;
        if let Some(e) = mismatches.into_iter().next() {
            return Err(e);
        }
        self.text_encoder_2 = encoder;
        self.tensors_2 = tensors;
        Ok(())
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
        let request = SdxlPrompt {
            prompt,
            negative,
            clip_skip: 0,
            embeddings: &[],
        };
        self.condition_with(
            tokenizer,
            text_encoder,
            &request,
            guided,
            batch,
            height,
            width,
        )
    }

    /// As [`condition`](Self::condition), with clip skip and textual-inversion embeddings.
    #[allow(clippy::too_many_arguments)]
    pub fn condition_with(
        &self,
        tokenizer: &ClipTokenizer,
        text_encoder: &ClipTextModel,
        request: &SdxlPrompt,
        guided: bool,
        batch: i64,
        height: i64,
        width: i64,
    ) -> Result<SdxlConditioning> {
        let width_1 = text_encoder.hidden_size();
        let width_2 = self.text_encoder_2.text_model().hidden_size();
        let embeddings =
            TextualInversions::load_part(request.embeddings, tokenizer, width_1, Part::ClipL)?;
        let embeddings_2 = TextualInversions::load_part(
            request.embeddings,
            &self.tokenizer_2,
            width_2,
            Part::ClipG,
        )?;
        let encoder = SdxlPromptEncoder::new(
            SdxlSide {
                tokenizer,
                embeddings: &embeddings,
            },
            text_encoder,
            SdxlSide {
                tokenizer: &self.tokenizer_2,
                embeddings: &embeddings_2,
            },
            &self.text_encoder_2,
            request.clip_skip,
        )?;
        let zeros = request.negative.is_empty() && self.force_zeros_for_empty_prompt;
        let (positive, negative) = if !guided {
            (encoder.encode(request.prompt)?, None)
        } else if zeros {
            let positive = encoder.encode(request.prompt)?;
            let negative = SdxlEmbedding {
                hidden: positive.hidden.zeros_like(),
                pooled: positive.pooled.zeros_like(),
            };
            (positive, Some(negative))
        } else {
            let (p, n) = encoder.encode_pair(request.prompt, request.negative)?;
            (p, Some(n))
        };
        let repeat =
            |e: &SdxlEmbedding| (e.hidden.repeat([batch, 1, 1]), e.pooled.repeat([batch, 1]));
        let (mut context, mut pooled) = repeat(&positive);
        if let Some(negative) = &negative {
            let (neg_context, neg_pooled) = repeat(negative);
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
}

/// The second encoder and its tensors; `host`: where its weights wait under offload.
fn load_encoder(
    source: &ModelSource,
    loras: &LoraSet,
    (device, kind, host): (Device, Kind, Option<Device>),
    mismatches: &mut Vec<EngineError>,
) -> Result<(ClipTextModelWithProjection, Vec<Tensor>)> {
    let config: ClipTextConfig =
        source.config("text_encoder_2", "config.json", ClipTextConfig::validate)?;
    let weights = source.weights("text_encoder_2", "model", device, kind)?;
    let patch = loras.patch_for("text_encoder_2", &weights)?;
    let mut weights = weights.with_patch(patch);
    if let Some(host) = host {
        weights = weights.placed_on(host);
    }
    let model = ClipTextModelWithProjection::new(&weights.root(), &config)?;
    mismatches.extend(weights.finish().err());
    Ok((model, weights.recorded()))
}
