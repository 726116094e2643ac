//! Init images and masks brought to the render size: scaled (Lanczos) until they cover it,
//! keeping their aspect ratio, then center-cropped. An image already at the size is untouched.
use super::mask::Mask;
use super::pipeline::Image;
use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage};

/// The scaled size that covers `width` x `height` with the source's aspect ratio, and the
/// offsets of the centered crop.
fn cover(src_w: u32, src_h: u32, width: u32, height: u32) -> (u32, u32, u32, u32) {
    let scale = (f64::from(width) / f64::from(src_w)).max(f64::from(height) / f64::from(src_h));
    let w = ((f64::from(src_w) * scale).round() as u32).max(width);
    let h = ((f64::from(src_h) * scale).round() as u32).max(height);
    (w, h, (w - width) / 2, (h - height) / 2)
}

/// `image` scaled to cover `width` x `height` and center-cropped to it.
pub fn fit_image(image: &Image, width: u32, height: u32) -> Image {
    if image.width == width && image.height == height {
        return image.clone();
    }
    let Some(src) = RgbImage::from_raw(image.width, image.height, image.rgb.clone()) else {
        return image.clone();
    };
    let (w, h, x, y) = cover(image.width, image.height, width, height);
    let scaled = imageops::resize(&src, w, h, FilterType::Lanczos3);
    let cropped = imageops::crop_imm(&scaled, x, y, width, height).to_image();
    Image {
        width,
        height,
        rgb: cropped.into_raw(),
    }
}

/// `mask` scaled and cropped exactly as [`fit_image`] does the image it belongs to.
pub fn fit_mask(mask: &Mask, width: u32, height: u32) -> Mask {
    if mask.width == width && mask.height == height {
        return mask.clone();
    }
    let Some(src) = GrayImage::from_raw(mask.width, mask.height, mask.pixels.clone()) else {
        return mask.clone();
    };
    let (w, h, x, y) = cover(mask.width, mask.height, width, height);
    let scaled = imageops::resize(&src, w, h, FilterType::Lanczos3);
    let cropped = imageops::crop_imm(&scaled, x, y, width, height).to_image();
    Mask {
        width,
        height,
        pixels: cropped.into_raw(),
    }
}

/// The render size an init image suggests when none is given: its own size, each side
/// rounded down to a multiple of `multiple` (at least one multiple).
pub fn default_size(width: u32, height: u32, multiple: u32) -> (u32, u32) {
    let down = |v: u32| (v / multiple).max(1) * multiple;
    (down(width), down(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_images_are_cropped_at_the_sides_and_centered() {
        // A 40x10 image: columns numbered 0..40, scaled to 20x5 would not cover 10x10; it is
        // scaled to 40x10 (unchanged scale 1) and the middle 10 columns kept.
        let rgb = (0..10)
            .flat_map(|_| (0..40u8).flat_map(|x| [x * 6, 0, 0]))
            .collect();
        let image = Image {
            width: 40,
            height: 10,
            rgb,
        };
        let fitted = fit_image(&image, 10, 10);
        assert_eq!((fitted.width, fitted.height), (10, 10));
        assert_eq!(fitted.rgb[0], 15 * 6, "the crop starts at column 15");
        assert_eq!(cover(40, 10, 10, 10), (40, 10, 15, 0));
        assert_eq!(cover(100, 50, 64, 64), (128, 64, 32, 0));
        assert_eq!(cover(30, 60, 64, 48), (64, 128, 0, 40));
    }

    #[test]
    fn images_at_the_size_are_untouched_and_defaults_round_down() {
        let image = Image {
            width: 3,
            height: 2,
            rgb: (0..18).collect(),
        };
        assert_eq!(fit_image(&image, 3, 2).rgb, image.rgb);
        assert_eq!(default_size(517, 389, 8), (512, 384));
        assert_eq!(default_size(5, 9, 8), (8, 8));
    }
}
