//! Magnifying the preview: which part of an image a zoom level and pan position show. Pure, so
//! the update logic and the image drawing agree, and tests need no terminal.
use crate::worker::Picture;
use std::borrow::Cow;

/// Zoom levels the full-screen preview steps through (1: the whole image, fitted).
pub const LEVELS: &[u32] = &[1, 2, 4, 8];

/// How far one pan key moves the view: a quarter of what is visible.
const PAN_STEP: f32 = 0.25;

/// A zoom level and the image point (fractions of width and height) at the view's center.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zoom {
    pub level: u32,
    pub center: (f32, f32),
}

impl Default for Zoom {
    fn default() -> Self {
        Self {
            level: 1,
            center: (0.5, 0.5),
        }
    }
}

impl Zoom {
    pub fn is_fit(&self) -> bool {
        self.level <= 1
    }

    pub fn zoom_in(&mut self) {
        self.level = LEVELS
            .iter()
            .copied()
            .find(|&l| l > self.level)
            .unwrap_or(self.level);
        self.clamp();
    }

    pub fn zoom_out(&mut self) {
        self.level = LEVELS
            .iter()
            .rev()
            .copied()
            .find(|&l| l < self.level)
            .unwrap_or(1);
        self.clamp();
    }

    /// Moves the view by whole pan steps (-1/+1 per key) in x and y.
    pub fn pan(&mut self, dx: i32, dy: i32) {
        let step = PAN_STEP / self.level as f32;
        self.center.0 += dx as f32 * step;
        self.center.1 += dy as f32 * step;
        self.clamp();
    }

    /// Keeps the view inside the image.
    fn clamp(&mut self) {
        let half = 0.5 / self.level.max(1) as f32;
        self.center.0 = self.center.0.clamp(half, 1.0 - half);
        self.center.1 = self.center.1.clamp(half, 1.0 - half);
    }

    /// The visible part of a `width` x `height` image: x, y, width, height in pixels (at
    /// least one pixel each way).
    pub fn region(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let level = self.level.max(1);
        let w = (width / level).max(1);
        let h = (height / level).max(1);
        let left = |size: u32, part: u32, center: f32| {
            let x = (center * size as f32 - part as f32 / 2.0).round();
            (x.max(0.0) as u32).min(size - part)
        };
        (
            left(width, w, self.center.0),
            left(height, h, self.center.1),
            w,
            h,
        )
    }

    /// The visible part of `picture` as a picture of its own (the picture itself at fit).
    pub fn crop<'a>(&self, picture: &'a Picture) -> Cow<'a, Picture> {
        if self.is_fit() || picture.width == 0 || picture.height == 0 {
            return Cow::Borrowed(picture);
        }
        let (x, y, w, h) = self.region(picture.width, picture.height);
        let stride = picture.width as usize * 3;
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for row in y..y + h {
            let start = row as usize * stride + x as usize * 3;
            rgb.extend_from_slice(&picture.rgb[start..start + w as usize * 3]);
        }
        Cow::Owned(Picture {
            width: w,
            height: h,
            rgb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(width: u32, height: u32) -> Picture {
        let rgb = (0..width * height)
            .flat_map(|i| [(i % 256) as u8, (i / 256) as u8, 7])
            .collect();
        Picture { width, height, rgb }
    }

    #[test]
    fn levels_step_and_stop_at_the_ends() {
        let mut z = Zoom::default();
        z.zoom_out();
        assert_eq!(z.level, 1);
        for want in [2, 4, 8, 8] {
            z.zoom_in();
            assert_eq!(z.level, want);
        }
        z.zoom_out();
        assert_eq!(z.level, 4);
    }

    #[test]
    fn the_view_stays_inside_the_image() {
        let mut z = Zoom::default();
        z.zoom_in();
        assert_eq!(z.region(64, 32), (16, 8, 32, 16));
        for _ in 0..10 {
            z.pan(-1, 1);
        }
        assert_eq!(z.region(64, 32), (0, 16, 32, 16));
        z.pan(1, 0);
        assert_eq!(z.region(64, 32), (8, 16, 32, 16));
        // Zooming out from a corner keeps the view inside too.
        z.zoom_out();
        assert_eq!(z.region(64, 32), (0, 0, 64, 32));
    }

    #[test]
    fn crop_takes_the_visible_pixels() {
        let picture = numbered(8, 4);
        let mut z = Zoom::default();
        assert_eq!(*z.crop(&picture), picture);
        z.zoom_in();
        z.pan(1, 1);
        let (x, y, w, h) = z.region(8, 4);
        let part = z.crop(&picture);
        assert_eq!((part.width, part.height), (w, h));
        for row in 0..h {
            for col in 0..w {
                let from = ((y + row) * 8 + x + col) as usize * 3;
                let to = (row * w + col) as usize * 3;
                assert_eq!(part.rgb[to..to + 3], picture.rgb[from..from + 3]);
            }
        }
    }
}
