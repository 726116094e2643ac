//! Residual blocks and resamplers shared by the UNet and the VAE (diffusers' `resnet.py`).
use crate::engine::nn::{Conv2d, GroupNorm, Linear};
use crate::engine::weights::WeightPath;
use tch::Tensor;

/// diffusers' `ResnetBlock2D` with the default time-embedding norm and swish.
#[derive(Debug)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

pub struct ResnetConfig {
    pub in_channels: i64,
    pub out_channels: i64,
    /// None for the VAE, whose blocks take no time embedding.
    pub temb_channels: Option<i64>,
    pub groups: i64,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(p: &WeightPath, c: &ResnetConfig) -> Self {
        let norm1 = GroupNorm::new(&p.pp("norm1"), c.groups, c.in_channels, c.eps);
        let conv1 = Conv2d::new(&p.pp("conv1"), c.in_channels, c.out_channels, 3, 1, 1);
        let time_emb_proj = c
            .temb_channels
            .map(|t| Linear::new(&p.pp("time_emb_proj"), t, c.out_channels, true));
        let norm2 = GroupNorm::new(&p.pp("norm2"), c.groups, c.out_channels, c.eps);
        let conv2 = Conv2d::new(&p.pp("conv2"), c.out_channels, c.out_channels, 3, 1, 1);
        let conv_shortcut = (c.in_channels != c.out_channels).then(|| {
            Conv2d::new(
                &p.pp("conv_shortcut"),
                c.in_channels,
                c.out_channels,
                1,
                1,
                0,
            )
        });
        Self {
            norm1,
            conv1,
            time_emb_proj,
            norm2,
            conv2,
            conv_shortcut,
            output_scale_factor: c.output_scale_factor,
        }
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Tensor {
        // In place wherever the tensor is this block's own: at VAE sizes every fresh activation
        // is a new mapping the kernel has to fault in page by page.
        let mut h = self.conv1.forward(&norm_silu(&self.norm1, x));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            h += proj.forward(&temb.silu()).unsqueeze(-1).unsqueeze(-1);
        }
        let mut h = self.conv2.forward(&norm_silu(&self.norm2, &h));
        match &self.conv_shortcut {
            Some(conv) => h += conv.forward(x),
            None => h += x,
        }
        if self.output_scale_factor != 1.0 {
            h /= self.output_scale_factor;
        }
        h
    }
}

/// diffusers' `Downsample2D` with a strided 3x3 conv. `padding` 0 means the VAE encoder's
/// asymmetric (right and bottom) zero pad before the conv.
#[derive(Debug)]
pub struct Downsample2D {
    conv: Conv2d,
    asymmetric_pad: bool,
}

impl Downsample2D {
    pub fn new(p: &WeightPath, channels: i64, out_channels: i64, padding: i64) -> Self {
        Self {
            conv: Conv2d::new(&p.pp("conv"), channels, out_channels, 3, 2, padding),
            asymmetric_pad: padding == 0,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        if self.asymmetric_pad {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// diffusers' `Upsample2D`: nearest-neighbour doubling (or to a given size), then a 3x3 conv.
#[derive(Debug)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(p: &WeightPath, channels: i64, out_channels: i64) -> Self {
        Self {
            conv: Conv2d::new(&p.pp("conv"), channels, out_channels, 3, 1, 1),
        }
    }

    /// `size` is the skip connection's spatial size when it is not exactly double (odd inputs).
    pub fn forward(&self, x: &Tensor, size: Option<(i64, i64)>) -> Tensor {
        let (h, w) = size.unwrap_or_else(|| {
            let s = x.size();
            (s[2] * 2, s[3] * 2)
        });
        let up = match size {
            Some(_) => x.upsample_nearest2d([h, w], None, None),
            None => x.upsample_nearest2d([h, w], 2.0, 2.0),
        };
        self.conv.forward(&up)
    }
}

/// GroupNorm then SiLU, the SiLU in place on the norm's fresh output.
pub fn norm_silu(norm: &GroupNorm, x: &Tensor) -> Tensor {
    let mut h = norm.forward(x);
    let _ = h.silu_();
    h
}
