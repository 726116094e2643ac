//! Reading a recipe's init image and mask files (img2img and inpainting): PNGs brought to the
//! render size (scaled to cover it and center-cropped, see `engine::image_input`). `easel
//! generate` and the studio's worker read them here, so both render the same pixels.
use crate::engine::image_input::{default_size, fit_image, fit_mask};
use crate::engine::img2img::{InitImage, InpaintMask};
use crate::engine::mask::Mask;
use crate::engine::pipeline::Image;
use crate::engine::EngineError;
use crate::recipe::{RecipeInit, RecipePatch};
use std::path::{Path, PathBuf};

/// Sizes are multiples of 8 (and of every SD model's latent scale factor).
pub const SIZE_MULTIPLE: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum InitFileError {
    #[error(
        "cannot read the {what} {} ({reason}): give a readable PNG file (other formats: convert to PNG first)",
        path.display()
    )]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn read_error(what: &'static str, path: &Path, e: &image::ImageError) -> InitFileError {
    // The decoder's words for these ("format could not be determined", "unexpected end of
    // file") hide the plain cause.
    let reason = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => "it is a folder, not a file".to_string(),
        Ok(m) if m.len() == 0 => "the file is empty".to_string(),
        _ => e.to_string(),
    };
    InitFileError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

fn open(path: &Path, what: &'static str) -> Result<image::DynamicImage, InitFileError> {
    image::open(path).map_err(|e| read_error(what, path, &e))
}

/// The render size an init image implies when none is chosen: its own, rounded down to a
/// multiple of 8.
pub fn size_of(path: &Path) -> Result<(u32, u32), InitFileError> {
    let (w, h) = image::image_dimensions(path).map_err(|e| read_error("init image", path, &e))?;
    Ok(default_size(w, h, SIZE_MULTIPLE))
}

/// Gives a patch with an init image and no width or height the image's own size, as `easel
/// generate` does without `--width`/`--height`.
pub fn fill_size(patch: &mut RecipePatch) -> Result<(), InitFileError> {
    let Some(image) = &patch.init_image else {
        return Ok(());
    };
    if patch.width.is_none() || patch.height.is_none() {
        let (w, h) = size_of(Path::new(image))?;
        patch.width.get_or_insert(w);
        patch.height.get_or_insert(h);
    }
    Ok(())
}

/// An RGB image file as 8-bit RGB (alpha dropped, as PIL's `convert("RGB")`).
pub fn read_image(path: &Path) -> Result<Image, InitFileError> {
    let rgb = open(path, "init image")?.to_rgb8();
    Ok(Image {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    })
}

/// A mask file as 8-bit gray: gray images as they are, colour ones by PIL's `convert("L")`
/// (ITU-R 601 luma in Pillow's fixed point), alpha ignored.
pub fn read_mask(path: &Path) -> Result<Mask, InitFileError> {
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

/// The engine's init image for a recipe's settings at `width` x `height`. `on_note` hears what
/// is worth telling the user without failing (a mask and an image of different sizes).
pub fn load(
    init: &RecipeInit,
    width: u32,
    height: u32,
    on_note: &mut dyn FnMut(String),
) -> Result<InitImage, InitFileError> {
    let original = read_image(Path::new(&init.image))?;
    let image = fit_image(&original, width, height);
    let mask = match &init.mask {
        Some(path) => {
            let mask = read_mask(Path::new(path))?;
            if (mask.width, mask.height) != (original.width, original.height) {
                on_note(format!(
                    "the mask is {}x{} and the init image {}x{}: each is scaled and cropped to {width}x{height} on its own",
                    mask.width, mask.height, original.width, original.height
                ));
            }
            Some(InpaintMask {
                mask: fit_mask(&mask, width, height),
                blur: init.mask_blur,
                keep_unmasked: init.keep_unmasked,
            })
        }
        None => None,
    };
    Ok(InitImage {
        image,
        strength: init.strength,
        mask,
    })
}
