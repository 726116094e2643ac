//! The UNet's resolution levels (diffusers' `unet_2d_blocks.py`): down blocks that hand their
//! intermediate states to the skip connections, the mid block, and up blocks that consume them.
use super::attention::{Transformer2DModel, TransformerConfig};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetConfig, Upsample2D};
use super::unet_config::LevelSettings;
use crate::engine::weights::WeightPath;
use tch::Tensor;

/// What every block of one UNet shares.
#[derive(Debug, Clone)]
pub struct BlockCommon {
    pub temb_channels: i64,
    pub groups: i64,
    pub eps: f64,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl BlockCommon {
    fn resnet(&self, p: &WeightPath, in_ch: i64, out_ch: i64, scale: f64) -> ResnetBlock2D {
        ResnetBlock2D::new(
            p,
            &ResnetConfig {
                in_channels: in_ch,
                out_channels: out_ch,
                temb_channels: Some(self.temb_channels),
                groups: self.groups,
                eps: self.eps,
                output_scale_factor: scale,
            },
        )
    }

    fn transformer(&self, p: &WeightPath, s: &LevelSettings) -> Transformer2DModel {
        let config = TransformerConfig {
            heads: s.heads,
            head_dim: s.out_channels / s.heads,
            cross_attention_dim: s.cross_attention_dim,
            layers: s.transformer_layers,
            groups: self.groups,
            use_linear_projection: self.use_linear_projection,
            only_cross_attention: s.only_cross_attention,
            upcast_attention: self.upcast_attention,
        };
        Transformer2DModel::new(p, s.out_channels, &config)
    }
}

/// A down level: resnets (each followed by a transformer when `attentions` is not empty) and
/// an optional strided-conv downsampler. CrossAttnDownBlock2D and DownBlock2D in one type.
#[derive(Debug)]
pub struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// `cross_attention` picks CrossAttnDownBlock2D over DownBlock2D.
    pub fn new(
        p: &WeightPath,
        common: &BlockCommon,
        s: &LevelSettings,
        in_channels: i64,
        cross_attention: bool,
        add_downsample: bool,
        downsample_padding: i64,
    ) -> Self {
        let out = s.out_channels;
        let resnets = (0..s.layers)
            .map(|i| {
                let in_ch = if i == 0 { in_channels } else { out };
                common.resnet(&p.pp("resnets").pp(i), in_ch, out, 1.0)
            })
            .collect();
        let attentions = if cross_attention {
            (0..s.layers)
                .map(|i| common.transformer(&p.pp("attentions").pp(i), s))
                .collect()
        } else {
            Vec::new()
        };
        let downsampler = add_downsample
            .then(|| Downsample2D::new(&p.pp("downsamplers.0"), out, out, downsample_padding));
        Self {
            resnets,
            attentions,
            downsampler,
        }
    }

    /// Returns the output and the states the up blocks' skip connections take, in order.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> (Tensor, Vec<Tensor>) {
        let mut h = x.shallow_clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(&h, Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context);
            }
            states.push(h.shallow_clone());
        }
        if let Some(down) = &self.downsampler {
            h = down.forward(&h);
            states.push(h.shallow_clone());
        }
        (h, states)
    }
}

/// UNetMidBlock2DCrossAttn: resnet, then (transformer, resnet) per layer.
#[derive(Debug)]
pub struct UNetMidBlock2DCrossAttn {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
}

impl UNetMidBlock2DCrossAttn {
    pub fn new(p: &WeightPath, common: &BlockCommon, s: &LevelSettings, scale: f64) -> Self {
        let ch = s.out_channels;
        let resnets = (0..=s.layers)
            .map(|i| common.resnet(&p.pp("resnets").pp(i), ch, ch, scale))
            .collect();
        let attentions = (0..s.layers)
            .map(|i| common.transformer(&p.pp("attentions").pp(i), s))
            .collect();
        Self {
            resnets,
            attentions,
        }
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Tensor {
        let mut h = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            h = attn.forward(&h, context);
            h = resnet.forward(&h, Some(temb));
        }
        h
    }
}

/// An up level: resnets over the concatenation with a skip state (each followed by a
/// transformer when `attentions` is not empty) and an optional upsampler.
/// CrossAttnUpBlock2D and UpBlock2D in one type.
#[derive(Debug)]
pub struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `in_channels`: the channels of this level's deepest skip state (the next level down's
    /// output); `prev_output_channels`: those of the block below.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &WeightPath,
        common: &BlockCommon,
        s: &LevelSettings,
        in_channels: i64,
        prev_output_channels: i64,
        cross_attention: bool,
        add_upsample: bool,
    ) -> Self {
        let out = s.out_channels;
        let resnets = (0..s.layers)
            .map(|i| {
                let skip = if i == s.layers - 1 { in_channels } else { out };
                let input = if i == 0 { prev_output_channels } else { out };
                common.resnet(&p.pp("resnets").pp(i), input + skip, out, 1.0)
            })
            .collect();
        let attentions = if cross_attention {
            (0..s.layers)
                .map(|i| common.transformer(&p.pp("attentions").pp(i), s))
                .collect()
        } else {
            Vec::new()
        };
        let upsampler = add_upsample.then(|| Upsample2D::new(&p.pp("upsamplers.0"), out, out));
        Self {
            resnets,
            attentions,
            upsampler,
        }
    }

    /// How many skip states this block consumes.
    pub fn skips(&self) -> usize {
        self.resnets.len()
    }

    pub fn has_upsampler(&self) -> bool {
        self.upsampler.is_some()
    }

    /// `skips`: this block's skip states in the order the down blocks produced them (the last
    /// is consumed first). `upsample_size`: the spatial size to upsample to when not double.
    pub fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
        upsample_size: Option<(i64, i64)>,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, (resnet, skip)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            h = resnet.forward(&Tensor::cat(&[&h, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(&h, context);
            }
        }
        match &self.upsampler {
            Some(up) => up.forward(&h, upsample_size),
            None => h,
        }
    }
}
