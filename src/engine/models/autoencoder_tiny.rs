//! TAESD: diffusers' `AutoencoderTiny` (madebyollin/taesd, a few MB), a VAE approximation that
//! decodes in a fraction of the full VAE's time and memory: for live previews and as an
//! optional fast decoder. Weight names follow diffusers (`decoder.layers.2.conv.0.weight`);
//! a layer's index counts the weightless activations and upsamplers too, as nn.Sequential does.
//!
//! It works in the UNet's latent space divided by its `scaling_factor` (1.0 for taesd, taesdxl):
//! what diffusers' pipelines hand it.
use crate::engine::error::{EngineError, Result};
use crate::engine::loader::read_config;
use crate::engine::nn::Conv2d;
use crate::engine::weights::{component_files, WeightPath, Weights};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// `config.json` of an `AutoencoderTiny`; each field reads the key of the same name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TinyConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    pub encoder_block_out_channels: Vec<i64>,
    pub decoder_block_out_channels: Vec<i64>,
    /// `act_fn`: only relu (TAESD's).
    pub act_fn: String,
    /// `upsample_fn`: only nearest.
    pub upsample_fn: String,
    pub latent_channels: i64,
    pub upsampling_scaling_factor: i64,
    pub num_encoder_blocks: Vec<i64>,
    pub num_decoder_blocks: Vec<i64>,
    /// `scaling_factor`: pipelines divide latents by it before decoding.
    pub scaling_factor: f64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            scaling_factor: 1.0,
        }
    }
}

impl TinyConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(EngineError::Invalid(format!(
                "this AutoencoderTiny config is not supported: {what}; use a TAESD folder from \
                 madebyollin/taesd (or taesdxl) in diffusers layout"
            )))
        };
        if self.act_fn != "relu" {
            return bad(format!("act_fn {:?} (only relu)", self.act_fn));
        }
        if self.upsample_fn != "nearest" {
            return bad(format!("upsample_fn {:?} (only nearest)", self.upsample_fn));
        }
        if self.encoder_block_out_channels.len() != self.num_encoder_blocks.len()
            || self.decoder_block_out_channels.len() != self.num_decoder_blocks.len()
            || self.encoder_block_out_channels.is_empty()
            || self.decoder_block_out_channels.is_empty()
        {
            return bad("block channel and block count lists differ in length".into());
        }
        if self.scaling_factor <= 0.0 {
            return bad(format!("scaling_factor {}", self.scaling_factor));
        }
        Ok(())
    }
}

/// diffusers' `AutoencoderTinyBlock`: three 3x3 convs with ReLUs between, a skip (1x1 conv when
/// the channel count changes), then a ReLU.
#[derive(Debug)]
struct TinyBlock {
    convs: [Conv2d; 3],
    skip: Option<Conv2d>,
}

impl TinyBlock {
    fn new(p: &WeightPath, input: i64, output: i64) -> Self {
        let c = p.pp("conv");
        Self {
            convs: [
                Conv2d::new(&c.pp(0), input, output, 3, 1, 1),
                Conv2d::new(&c.pp(2), output, output, 3, 1, 1),
                Conv2d::new(&c.pp(4), output, output, 3, 1, 1),
            ],
            skip: (input != output).then(|| biasless(&p.pp("skip"), input, output, 1, 1, 0)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.convs[0].forward(x).relu();
        let h = self.convs[1].forward(&h).relu();
        let h = self.convs[2].forward(&h);
        let skip = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x.shallow_clone(),
        };
        (h + skip).relu()
    }
}

fn biasless(p: &WeightPath, input: i64, output: i64, k: i64, stride: i64, pad: i64) -> Conv2d {
    Conv2d {
        weight: p.get(&[output, input, k, k], "weight"),
        bias: None,
        stride,
        padding: pad,
    }
}

/// One entry of the `layers` Sequential.
#[derive(Debug)]
enum Layer {
    Conv(Conv2d),
    Block(TinyBlock),
    Relu,
    Upsample(i64),
}

impl Layer {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Block(b) => b.forward(x),
            Layer::Relu => x.relu(),
            Layer::Upsample(f) => {
                let (_, _, h, w) = x.size4().expect("features are NCHW");
                x.upsample_nearest2d([h * f, w * f], None, None)
            }
        }
    }
}

fn run(layers: &[Layer], x: &Tensor) -> Tensor {
    layers.iter().fold(x.shallow_clone(), |h, l| l.forward(&h))
}

fn encoder_layers(p: &WeightPath, c: &TinyConfig) -> Vec<Layer> {
    let mut layers = Vec::new();
    let ch = &c.encoder_block_out_channels;
    for (i, (&n, &count)) in ch.iter().zip(&c.num_encoder_blocks).enumerate() {
        let at = p.pp(layers.len());
        layers.push(Layer::Conv(if i == 0 {
            Conv2d::new(&at, c.in_channels, n, 3, 1, 1)
        } else {
            biasless(&at, n, n, 3, 2, 1)
        }));
        for _ in 0..count {
            layers.push(Layer::Block(TinyBlock::new(&p.pp(layers.len()), n, n)));
        }
    }
    let last = ch[ch.len() - 1];
    let at = p.pp(layers.len());
    layers.push(Layer::Conv(Conv2d::new(
        &at,
        last,
        c.latent_channels,
        3,
        1,
        1,
    )));
    layers
}

fn decoder_layers(p: &WeightPath, c: &TinyConfig) -> Vec<Layer> {
    let ch = &c.decoder_block_out_channels;
    let mut layers = vec![
        Layer::Conv(Conv2d::new(&p.pp(0), c.latent_channels, ch[0], 3, 1, 1)),
        Layer::Relu,
    ];
    let blocks = c.num_decoder_blocks.len();
    for (i, (&n, &count)) in ch.iter().zip(&c.num_decoder_blocks).enumerate() {
        let last = i == blocks - 1;
        for _ in 0..count {
            layers.push(Layer::Block(TinyBlock::new(&p.pp(layers.len()), n, n)));
        }
        if !last {
            layers.push(Layer::Upsample(c.upsampling_scaling_factor));
        }
        let at = p.pp(layers.len());
        layers.push(Layer::Conv(if last {
            Conv2d::new(&at, n, c.out_channels, 3, 1, 1)
        } else {
            biasless(&at, n, n, 3, 1, 1)
        }));
    }
    layers
}

/// diffusers' `AutoencoderTiny`. Computes in the weights' kind on the weights' device.
#[derive(Debug)]
pub struct AutoencoderTiny {
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    config: TinyConfig,
    device: Device,
    kind: Kind,
}

impl AutoencoderTiny {
    /// Builds it from its weights (`p` at the model's root).
    pub fn new(p: &WeightPath, config: &TinyConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            encoder: encoder_layers(&p.pp("encoder").pp("layers"), config),
            decoder: decoder_layers(&p.pp("decoder").pp("layers"), config),
            config: config.clone(),
            device: p.device(),
            kind: p.kind(),
        })
    }

    /// Loads a TAESD folder in diffusers layout (`config.json`,
    /// `diffusion_pytorch_model.safetensors`).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        Self::load_placed(dir, device, kind, None).map(|(model, _)| model)
    }

    /// `load` with the weights waiting on `host` when given (model CPU offload), and every
    /// tensor handed out, for the offload registry.
    pub fn load_placed(
        dir: &Path,
        device: Device,
        kind: Kind,
        host: Option<Device>,
    ) -> Result<(Self, Vec<Tensor>)> {
        let config: TinyConfig = read_config(&dir.join("config.json"), TinyConfig::validate)?;
        let files = component_files(dir, "diffusion_pytorch_model", None)?;
        let mut weights = Weights::open(&files, device, kind)?;
        if let Some(host) = host {
            weights = weights.placed_on(host);
        }
        let model = Self::new(&weights.root(), &config)?;
        weights.finish()?;
        Ok((model, weights.recorded()))
    }

    pub fn config(&self) -> &TinyConfig {
        &self.config
    }

    /// Image pixels per latent pixel along each side (8 for taesd and taesdxl).
    pub fn latent_scale_factor(&self) -> i64 {
        let ups = self.config.num_decoder_blocks.len().saturating_sub(1) as u32;
        self.config.upsampling_scaling_factor.pow(ups)
    }

    /// Latents (the UNet's, divided by `scaling_factor`) to images around [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = self.input(latents, self.config.latent_channels, "latents")?;
        // diffusers' soft clamp of the latents to (-3, 3).
        let z = (z / 3.0).tanh() * 3.0;
        Ok(run(&self.decoder, &z) * 2.0 - 1.0)
    }

    /// Images in [-1, 1] to latents (TAESD's, unscaled: diffusers' `encode(...).latents`).
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.input(images, self.config.in_channels, "images")?;
        Ok(run(&self.encoder, &((x + 1.0) / 2.0)))
    }

    fn input(&self, x: &Tensor, channels: i64, what: &str) -> Result<Tensor> {
        let size = x.size();
        match size[..] {
            [b, c, h, w] if c == channels && b > 0 && h > 0 && w > 0 => {
                Ok(x.to_device(self.device).to_kind(self.kind))
            }
            _ => Err(EngineError::Invalid(format!(
                "TAESD takes {what} of shape [batch, {channels}, height, width], got {size:?}"
            ))),
        }
    }
}
