//! Inpainting masks: 8-bit grayscale, white = repaint. The blur and the overlay reproduce
//! Pillow's integer arithmetic (diffusers' `VaeImageProcessor.blur` is PIL's `GaussianBlur`,
//! its `apply_overlay` a PIL paste and alpha composite), so easel's masks equal diffusers' byte
//! for byte.
use super::error::{EngineError, Result};
use super::pipeline::Image;
use tch::{Device, Kind, Tensor};

/// An 8-bit grayscale image, row-major; 255 repaints, 0 keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl Mask {
    /// Checks that the pixel buffer holds `width * height` values.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Result<Self> {
        if pixels.len() != width as usize * height as usize || width == 0 || height == 0 {
            return Err(EngineError::Invalid(format!(
                "a {width}x{height} mask needs {} pixels, got {}",
                width as usize * height as usize,
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    /// PIL's `GaussianBlur(radius)`: three box blurs per axis, all rows first, in Pillow's
    /// fixed-point arithmetic. Radius 0 leaves the mask as it is.
    pub fn gaussian_blur(&self, radius: u32) -> Mask {
        if radius == 0 {
            return self.clone();
        }
        const PASSES: usize = 3;
        let box_radius = box_radius(radius as f32, PASSES as f32);
        let (w, h) = (self.width as usize, self.height as usize);
        let mut buf = self.pixels.clone();
        let mut line = Vec::new();
        let mut out = Vec::new();
        for _ in 0..PASSES {
            for row in buf.chunks_mut(w) {
                box_blur_line(row, box_radius, &mut out);
                row.copy_from_slice(&out);
            }
        }
        for _ in 0..PASSES {
            for x in 0..w {
                line.clear();
                line.extend((0..h).map(|y| buf[y * w + x]));
                box_blur_line(&line, box_radius, &mut out);
                for (y, &v) in out.iter().enumerate() {
                    buf[y * w + x] = v;
                }
            }
        }
        Mask {
            width: self.width,
            height: self.height,
            pixels: buf,
        }
    }

    /// diffusers' mask preprocessing: values / 255, then 1 where >= 0.5 and 0 below, as a
    /// `[1, 1, height, width]` float32 tensor on the CPU.
    pub fn binarized(&self) -> Tensor {
        let values: Vec<f32> = self
            .pixels
            .iter()
            .map(|&v| {
                if f32::from(v) / 255.0 >= 0.5 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_slice(&values)
            .view([1, 1, i64::from(self.height), i64::from(self.width)])
            .to_kind(Kind::Float)
            .to_device(Device::Cpu)
    }

    /// The render where the mask is white, the original where it is black, blended between
    /// (diffusers' `apply_overlay`, AUTOMATIC1111's overlay): pixels under 0 are the original's
    /// exactly.
    pub fn overlay(&self, original: &Image, render: &Image) -> Result<Image> {
        let same = |i: &Image| i.width == self.width && i.height == self.height;
        if !same(original) || !same(render) {
            return Err(EngineError::Invalid(format!(
                "the overlay needs images of the mask's size {}x{}, got {}x{} and {}x{}",
                self.width,
                self.height,
                original.width,
                original.height,
                render.width,
                render.height
            )));
        }
        let mut rgb = Vec::with_capacity(render.rgb.len());
        for (i, &m) in self.pixels.iter().enumerate() {
            let keep = 255 - u32::from(m);
            for c in 0..3 {
                let (o, r) = (
                    u32::from(original.rgb[3 * i + c]),
                    u32::from(render.rgb[3 * i + c]),
                );
                rgb.push(composite(o, r, keep));
            }
        }
        Ok(Image {
            width: render.width,
            height: render.height,
            rgb,
        })
    }
}

/// Pillow's `_gaussian_blur_radius` (in float32, as its C): the radius of a box blur that,
/// `passes` times over, approximates a Gaussian of standard deviation `radius`.
fn box_radius(radius: f32, passes: f32) -> f32 {
    let sigma2 = radius * radius / passes;
    // C computes the square root and the floor in double and stores them in floats.
    let big_l = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(big_l) - 1.0) / 2.0).floor() as f32;
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    let a = a / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    l + a
}

/// One pass of Pillow's `ImagingLineBoxBlur`: a box of `2 * radius + 1` pixels whose two end
/// pixels weigh the fractional part, edges repeated, in 24-bit fixed point.
fn box_blur_line(line: &[u8], radius: f32, out: &mut Vec<u8>) {
    let n = line.len();
    out.clear();
    out.resize(n, 0);
    let r = radius as usize;
    let ww = ((1u32 << 24) as f32 / (radius * 2.0 + 1.0)) as u64;
    let fw = ((1u64 << 24) - (r as u64 * 2 + 1) * ww) / 2;
    let last = n - 1;
    let px = |i: usize| u64::from(line[i.min(last)]);
    // The window sum over [x - r, x + r] with edges repeated, starting at x = -1.
    let mut acc = px(0) * (r as u64 + 1);
    for i in 0..r {
        acc += px(i);
    }
    let save = |bulk: u64| ((bulk + (1 << 23)) >> 24).min(255) as u8;
    for (x, value) in out.iter_mut().enumerate() {
        let leaving = x.checked_sub(r + 1).map_or(px(0), px);
        acc = acc + px(x + r) - leaving;
        let bulk = acc * ww + (leaving + px(x + r + 1)) * fw;
        *value = save(bulk);
    }
}

/// Pillow's arithmetic for `apply_overlay`: the original pasted through `keep` (255 - mask)
/// onto transparent black (premultiplied), unpremultiplied, then alpha-composited over the
/// opaque render.
fn composite(original: u32, render: u32, keep: u32) -> u8 {
    let div255 = |a: u32| {
        let t = a + 128;
        ((t >> 8) + t) >> 8
    };
    let premultiplied = div255(original * keep);
    let alpha = div255(255 * keep);
    if alpha == 0 {
        return render as u8;
    }
    let straight = if alpha == 255 {
        premultiplied
    } else {
        (255 * premultiplied / alpha).min(255)
    };
    const PRECISION: u32 = 7;
    let coef1 = alpha * 255 * 255 * (1 << PRECISION) / (255 * 255);
    let coef2 = 255 * (1 << PRECISION) - coef1;
    let t = straight * coef1 + render * coef2 + (0x80 << PRECISION);
    ((((t >> 8) + t) >> 8) >> PRECISION) as u8
}
