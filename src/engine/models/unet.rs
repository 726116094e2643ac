//! diffusers' `UNet2DConditionModel`: predicts the noise (or v) in a latent, given the timestep
//! and the text encoder's hidden states.
use super::embeddings::{TimestepEmbedding, Timesteps};
use super::unet_blocks::{BlockCommon, DownBlock, UNetMidBlock2DCrossAttn, UpBlock};
use super::unet_config::{DownBlockKind, UNetConfig, UpBlockKind};
use crate::engine::error::{EngineError, Result};
use crate::engine::nn::{Conv2d, GroupNorm};
use crate::engine::weights::WeightPath;
use tch::{Kind, Tensor};

/// Inputs beyond sample, timestep and text that some UNets take.
#[derive(Debug, Default)]
pub struct UNetConditioning {
    /// `timestep_cond` [batch, time_cond_proj_dim]: LCM's guidance-scale embedding. Ignored by
    /// models without `time_cond_proj_dim`, as in diffusers.
    pub timestep_cond: Option<Tensor>,
    /// SDXL's `text_embeds` [batch, pooled width]: the pooled, projected prompt embedding
    /// (diffusers' `added_cond_kwargs["text_embeds"]`). Needed by "text_time" UNets only.
    pub text_embeds: Option<Tensor>,
    /// SDXL's `time_ids` [batch, ids]: original size, crop corner and target size, (h, w) each.
    pub time_ids: Option<Tensor>,
}

/// SDXL's added embedding: each time id through sinusoids, concatenated after the pooled text
/// embedding, through an MLP; the result is added to the timestep embedding.
#[derive(Debug)]
struct AddedTimeConditioning {
    add_time_proj: Timesteps,
    add_embedding: TimestepEmbedding,
    input_dim: i64,
}

impl AddedTimeConditioning {
    fn forward(&self, text_embeds: &Tensor, time_ids: &Tensor, kind: Kind) -> Tensor {
        let batch = text_embeds.size()[0];
        // diffusers concatenates the float32 sinusoids with the text embeds (promoting to
        // float32) and only then casts to the embedding's kind.
        let time_embeds = self
            .add_time_proj
            .forward(&time_ids.flatten(0, -1))
            .reshape([batch, -1]);
        let added = Tensor::cat(&[text_embeds.to_kind(Kind::Float), time_embeds], -1).to_kind(kind);
        self.add_embedding.forward(&added, None)
    }
}

#[derive(Debug)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    time_embed_act: bool,
    added_time: Option<AddedTimeConditioning>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<UNetMidBlock2DCrossAttn>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    center_input_sample: bool,
    /// The text widths the cross-attention layers take (all equal in real models).
    cross_attention_dims: Vec<i64>,
    config: UNetConfig,
}

impl UNet2DConditionModel {
    /// Builds the model from weights named as diffusers names them. Missing or misshapen
    /// tensors are reported by the caller's `Weights::finish`; unsupported configs fail here.
    pub fn new(p: &WeightPath, config: &UNetConfig) -> Result<Self> {
        let layout = config.layout()?;
        let channels = &config.block_out_channels;
        let n = channels.len();
        let conv_in = Conv2d::new(
            &p.pp("conv_in"),
            config.in_channels,
            channels[0],
            config.conv_in_kernel,
            1,
            (config.conv_in_kernel - 1) / 2,
        );
        let time_proj = Timesteps::new(channels[0], config.flip_sin_to_cos, config.freq_shift);
        let time_embedding = TimestepEmbedding::new(
            &p.pp("time_embedding"),
            channels[0],
            layout.time_embed_dim,
            config.time_cond_proj_dim,
            config.timestep_post_act.is_some(),
        );
        let added_time = layout.added_time.map(|a| AddedTimeConditioning {
            add_time_proj: Timesteps::new(
                a.time_embed_dim,
                config.flip_sin_to_cos,
                config.freq_shift,
            ),
            add_embedding: TimestepEmbedding::new(
                &p.pp("add_embedding"),
                a.input_dim,
                layout.time_embed_dim,
                None,
                false,
            ),
            input_dim: a.input_dim,
        });
        let common = BlockCommon {
            temb_channels: layout.time_embed_dim,
            groups: layout.groups,
            eps: config.norm_eps,
            use_linear_projection: config.use_linear_projection,
            upcast_attention: config.upcast_attention,
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut in_channels = channels[0];
        for (i, (kind, settings)) in layout.down.iter().enumerate() {
            down_blocks.push(DownBlock::new(
                &p.pp("down_blocks").pp(i),
                &common,
                settings,
                in_channels,
                *kind == DownBlockKind::CrossAttn,
                i + 1 < n,
                config.downsample_padding,
            ));
            in_channels = settings.out_channels;
        }

        let mid_block = layout.mid.as_ref().map(|s| {
            UNetMidBlock2DCrossAttn::new(
                &p.pp("mid_block"),
                &common,
                s,
                config.mid_block_scale_factor,
            )
        });

        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_output = channels[n - 1];
        for (i, (kind, settings)) in layout.up.iter().enumerate() {
            // The deepest skip state of up level i comes from the down level one deeper.
            let skip_in = channels[(n - 1).saturating_sub(i + 1)];
            up_blocks.push(UpBlock::new(
                &p.pp("up_blocks").pp(i),
                &common,
                settings,
                skip_in,
                prev_output,
                *kind == UpBlockKind::CrossAttn,
                i + 1 < n,
            ));
            prev_output = settings.out_channels;
        }

        let conv_norm_out = GroupNorm::new(
            &p.pp("conv_norm_out"),
            layout.groups,
            channels[0],
            config.norm_eps,
        );
        let conv_out = Conv2d::new(
            &p.pp("conv_out"),
            channels[0],
            config.out_channels,
            config.conv_out_kernel,
            1,
            (config.conv_out_kernel - 1) / 2,
        );
        Ok(Self {
            conv_in,
            time_proj,
            time_embedding,
            time_embed_act: config.time_embedding_act_fn.is_some(),
            added_time,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            center_input_sample: config.center_input_sample,
            cross_attention_dims: layout
                .down
                .iter()
                .filter(|(kind, _)| *kind == DownBlockKind::CrossAttn)
                .map(|(_, s)| s)
                .chain(layout.mid.as_ref())
                .map(|s| s.cross_attention_dim)
                .collect(),
            config: config.clone(),
        })
    }

    /// Checks the shapes `forward` needs, so that a caller can turn a mistake into an error
    /// instead of a libtorch panic.
    pub fn check_inputs(
        &self,
        sample: &Tensor,
        encoder_hidden_states: &Tensor,
        conditioning: &UNetConditioning,
    ) -> Result<()> {
        let s = sample.size();
        if s.len() != 4 || s[1] != self.config.in_channels {
            return Err(EngineError::Invalid(format!(
                "the UNet takes latents of shape [batch, {}, height, width], got {s:?}",
                self.config.in_channels
            )));
        }
        let e = encoder_hidden_states.size();
        let dims = &self.cross_attention_dims;
        if e.len() != 3 || e[0] != s[0] || dims.iter().any(|&d| d != e[2]) {
            return Err(EngineError::Invalid(format!(
                "the UNet takes text embeddings of shape [{}, tokens, {}], got {e:?}: check that the text encoder belongs to this model and that the batch sizes agree",
                s[0],
                dims.first().copied().unwrap_or_default()
            )));
        }
        if let (Some(dim), Some(c)) = (self.config.time_cond_proj_dim, &conditioning.timestep_cond)
        {
            if c.size() != [s[0], dim] {
                return Err(EngineError::Invalid(format!(
                    "the UNet takes a timestep condition of shape [{}, {dim}], got {:?}",
                    s[0],
                    c.size()
                )));
            }
        }
        if let Some(added) = &self.added_time {
            let (Some(text), Some(ids)) = (&conditioning.text_embeds, &conditioning.time_ids)
            else {
                return Err(EngineError::Invalid(
                    "this UNet (SDXL-style, addition_embed_type \"text_time\") needs pooled text embeddings and time ids: load the model with its second text encoder (text_encoder_2)".into(),
                ));
            };
            let (t, i) = (text.size(), ids.size());
            let width = added.input_dim
                - added.add_time_proj.num_channels() * i.last().copied().unwrap_or(0);
            if t.len() != 2 || i.len() != 2 || t[0] != s[0] || i[0] != s[0] || t[1] != width {
                return Err(EngineError::Invalid(format!(
                    "the UNet's added embedding takes {} inputs: text embeddings [{}, pooled width] and time ids [{}, ids] with pooled width + ids x {} = {}; got {t:?} and {i:?}. Check that text_encoder_2 belongs to this model",
                    added.input_dim,
                    s[0],
                    s[0],
                    added.add_time_proj.num_channels(),
                    added.input_dim
                )));
            }
        }
        Ok(())
    }

    /// The prediction for `sample` [batch, in_channels, h, w] at `timestep` (the same for the
    /// whole batch), conditioned on `encoder_hidden_states` [batch, tokens, cross_attention_dim].
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Tensor {
        self.forward_with(
            sample,
            timestep,
            encoder_hidden_states,
            &UNetConditioning::default(),
        )
    }

    /// `forward` with the extra inputs some UNets take.
    pub fn forward_with(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        conditioning: &UNetConditioning,
    ) -> Tensor {
        let size = sample.size();
        let (batch, height, width) = (size[0], size[2], size[3]);
        // The skip states no longer halve evenly: each upsampler must match its skip's size.
        let overall_factor = 1i64 << self.up_blocks.iter().filter(|b| b.has_upsampler()).count();
        let odd_size = height % overall_factor != 0 || width % overall_factor != 0;

        let sample = if self.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };

        // diffusers builds the sinusoidal embedding in float32 and casts it to the sample's kind.
        let timesteps =
            crate::engine::device::upload(&Tensor::from_slice(&[timestep]), sample.device())
                .expand([batch], false);
        let t_emb = self.time_proj.forward(&timesteps).to_kind(sample.kind());
        let mut emb = self
            .time_embedding
            .forward(&t_emb, conditioning.timestep_cond.as_ref());
        // `check_inputs` turns a missing SDXL condition into an error before the first step.
        if let (Some(added), Some(text), Some(ids)) = (
            &self.added_time,
            &conditioning.text_embeds,
            &conditioning.time_ids,
        ) {
            emb += added.forward(text, ids, sample.kind());
        }
        if self.time_embed_act {
            emb = emb.silu();
        }

        let mut h = self.conv_in.forward(&sample);
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&h, &emb, encoder_hidden_states);
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = mid.forward(&h, &emb, encoder_hidden_states);
        }
        for block in &self.up_blocks {
            let mine = skips.split_off(skips.len().saturating_sub(block.skips()));
            let upsample_size = match skips.last() {
                Some(next) if odd_size => {
                    let s = next.size();
                    Some((s[2], s[3]))
                }
                _ => None,
            };
            h = block.forward(&h, &mine, &emb, encoder_hidden_states, upsample_size);
        }
        self.conv_out
            .forward(&super::resnet::norm_silu(&self.conv_norm_out, &h))
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The kind the model computes in (that of its weights).
    pub fn kind(&self) -> Kind {
        self.conv_in.weight.kind()
    }
}
