//! img2img and inpainting: what a render starting from an image adds to text to image, in
//! the order of diffusers' StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline and
//! StableDiffusionXLImg2ImgPipeline (every VAE posterior draw and noise draw in their order).
use super::error::{EngineError, Result};
use super::mask::Mask;
use super::pipeline::Image;
use tch::{Device, Kind, Tensor};

/// The image a render starts from, already at the render size (see `image_input::fit_image`).
#[derive(Debug, Clone)]
pub struct InitImage {
    pub image: Image,
    /// How much of the image is repainted, in (0, 1]: the run starts `strength * steps` steps
    /// from the end (diffusers' `strength`).
    pub strength: f64,
    /// Inpainting: only where the mask is white.
    pub mask: Option<InpaintMask>,
}

/// An inpainting mask and how it is applied.
#[derive(Debug, Clone)]
pub struct InpaintMask {
    /// At the render size; white repaints, black keeps.
    pub mask: Mask,
    /// PIL's GaussianBlur radius applied to the mask first (diffusers' `mask_processor.blur`),
    /// 0 for none.
    pub blur: u32,
    /// After decoding, put the original pixels back where the blurred mask is black (blended
    /// where it is grey), as diffusers' `apply_overlay` and AUTOMATIC1111's overlay do.
    pub keep_unmasked: bool,
}

impl InitImage {
    /// Refuses an image or mask not at the render size, and a strength outside (0, 1].
    pub fn check(&self, width: i64, height: i64) -> Result<()> {
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(EngineError::Invalid(format!(
                "strength {}: choose a value above 0 and at most 1 (1 repaints the whole image)",
                self.strength
            )));
        }
        let at_size = |w: u32, h: u32| i64::from(w) == width && i64::from(h) == height;
        if !at_size(self.image.width, self.image.height)
            || self.image.rgb.len() != self.image.width as usize * self.image.height as usize * 3
        {
            return Err(EngineError::Invalid(format!(
                "the init image is {}x{}, but the render is {width}x{height}: resize it first (image_input::fit_image)",
                self.image.width, self.image.height
            )));
        }
        if let Some(m) = &self.mask {
            if !at_size(m.mask.width, m.mask.height) {
                return Err(EngineError::Invalid(format!(
                    "the mask is {}x{}, but the render is {width}x{height}: resize it first (image_input::fit_mask)",
                    m.mask.width, m.mask.height
                )));
            }
        }
        Ok(())
    }
}

impl InpaintMask {
    /// The mask after its blur: what is binarized for the latents and used for the overlay.
    pub fn blurred(&self) -> Mask {
        self.mask.gaussian_blur(self.blur)
    }
}

/// An 8-bit image as diffusers' image processor gives it to the VAE: `[1, 3, H, W]` float32 in
/// [-1, 1] on the CPU.
pub fn image_tensor(image: &Image) -> Tensor {
    let (w, h) = (i64::from(image.width), i64::from(image.height));
    let bytes = Tensor::from_slice(&image.rgb).view([h, w, 3]);
    let unit = bytes.to_kind(Kind::Float) / 255.0;
    (unit * 2.0 - 1.0)
        .permute([2, 0, 1])
        .unsqueeze(0)
        .contiguous()
}

/// The latent-size mask diffusers' `prepare_mask_latents` makes: nearest-neighbour
/// interpolation of the binarized mask (`[1, 1, H, W]`) to `[1, 1, h, w]`.
pub fn latent_mask(binarized: &Tensor, latent_height: i64, latent_width: i64) -> Tensor {
    binarized.upsample_nearest2d([latent_height, latent_width], None, None)
}

/// The masked image the 9-channel UNet sees (encoded): the image where the mask is below 0.5,
/// zero (grey) where it repaints.
pub fn masked_image(image: &Tensor, binarized: &Tensor) -> Tensor {
    image * binarized.lt(0.5).to_kind(Kind::Float)
}

/// Repeats a `[1, ...]` tensor along the batch.
pub fn repeat_batch(t: &Tensor, batch: i64) -> Tensor {
    let mut reps = vec![1i64; t.dim()];
    reps[0] = batch;
    t.repeat(reps.as_slice())
}

/// Moves CPU preparation results to where the UNet computes.
pub fn to_model(t: &Tensor, kind: Kind, device: Device) -> Tensor {
    t.to_kind(kind).to_device(device)
}
