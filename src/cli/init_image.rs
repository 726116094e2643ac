//! Reading `--init-image` and `--mask` files: PNGs brought to the render size (scaled to
//! cover it and center-cropped, see `engine::image_input`).
use crate::engine::image_input::{default_size, fit_image, fit_mask};
use crate::engine::img2img::{InitImage, InpaintMask};
use crate::engine::mask::Mask;
use crate::engine::pipeline::Image;
use crate::recipe::RecipeInit;
use anyhow::{Context, Result};
use std::path::Path;

/// Sizes are multiples of 8 (and of every SD model's latent scale factor).
pub const SIZE_MULTIPLE: u32 = 8;

fn open(path: &Path, what: &str) -> Result<image::DynamicImage> {
    image::open(path).with_context(|| {
        format!(
            "cannot read the {what} {}: give a readable PNG file (other formats: convert to PNG first)",
            path.display()
        )
    })
}

/// The render size an init image implies when the flags give none: its own, rounded down to a
/// multiple of 8.
pub fn size_of(path: &Path) -> Result<(u32, u32)> {
    let (w, h) = image::image_dimensions(path).with_context(|| {
        format!(
            "cannot read the init image {}: give a readable PNG file",
            path.display()
        )
    })?;
    Ok(default_size(w, h, SIZE_MULTIPLE))
}

/// An RGB image file as 8-bit RGB (alpha dropped, as PIL's `convert("RGB")`).
pub fn read_image(path: &Path) -> Result<Image> {
    let rgb = open(path, "init image")?.to_rgb8();
    Ok(Image {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    })
}

/// A mask file as 8-bit gray: gray images as they are, colour ones by PIL's `convert("L")`
/// (ITU-R 601 luma in Pillow's fixed point), alpha ignored.
pub fn read_mask(path: &Path) -> Result<Mask> {
    let image = open(path, "mask")?;
    let (w, h) = (image.width(), image.height());
    let pixels = match image {
        image::DynamicImage::ImageLuma8(gray) => gray.into_raw(),
        image::DynamicImage::ImageLumaA8(_) | image::DynamicImage::ImageLuma16(_) => {
            image.to_luma8().into_raw()
        }
        other => other
            .to_rgb8()
            .pixels()
            .map(|p| {
                let [r, g, b] = p.0.map(u32::from);
                ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
            })
            .collect(),
    };
    Ok(Mask::new(w, h, pixels)?)
}

/// The engine's init image for a recipe's settings at `width` x `height`.
pub fn load(init: &RecipeInit, width: u32, height: u32) -> Result<InitImage> {
    let original = read_image(Path::new(&init.image))?;
    let image = fit_image(&original, width, height);
    let mask = match &init.mask {
        Some(path) => Some(InpaintMask {
            mask: {
                let mask = read_mask(Path::new(path))?;
                if (mask.width, mask.height) != (original.width, original.height) {
                    eprintln!(
                        "note: the mask is {}x{} and the init image {}x{}: each is scaled and cropped to {width}x{height} on its own",
                        mask.width, mask.height, original.width, original.height
                    );
                }
                fit_mask(&mask, width, height)
            },
            blur: init.mask_blur,
            keep_unmasked: init.keep_unmasked,
        }),
        None => None,
    };
    Ok(InitImage {
        image,
        strength: init.strength,
        mask,
    })
}
