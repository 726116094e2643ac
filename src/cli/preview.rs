//! `easel generate --preview`: each finished image printed inline with viuer (kitty, iTerm2,
//! sixel where the terminal has them, coloured half-blocks elsewhere), so a quick render over
//! SSH shows up without opening the studio.
use crate::engine::pipeline::Image;
use crate::tui::images::Graphics;
use image::{DynamicImage, RgbImage};
use std::io::IsTerminal;

/// At most this many columns wide and rows high: a preview, not a viewer.
const MAX_COLUMNS: u16 = 64;
const MAX_ROWS: u16 = 24;

/// What a `--graphics` choice lets viuer use (it still probes the terminal for each), and the
/// size in cells for a `width` x `height` image in a terminal of `columns` x `rows`.
pub fn config(
    graphics: Graphics,
    (columns, rows): (u16, u16),
    (width, height): (u32, u32),
) -> viuer::Config {
    let (kitty, iterm, sixel) = match graphics {
        Graphics::Auto => (true, true, true),
        Graphics::Kitty => (true, false, false),
        Graphics::Iterm2 => (false, true, false),
        Graphics::Sixel => (false, false, true),
        Graphics::Halfblocks => (false, false, false),
    };
    // viuer stretches to both bounds when given both: give the one that limits, and it keeps
    // the aspect ratio (a cell is about twice as tall as wide).
    let cells_w = u32::from(columns.clamp(8, MAX_COLUMNS));
    // Leave a line for the path that follows and one for the shell prompt.
    let cells_h = u32::from(rows.saturating_sub(2).clamp(4, MAX_ROWS));
    let needs_h = (u64::from(cells_w) * u64::from(height)).div_ceil(2 * u64::from(width.max(1)));
    let (fit_w, fit_h) = if needs_h <= u64::from(cells_h) {
        (Some(cells_w), None)
    } else {
        (None, Some(cells_h))
    };
    viuer::Config {
        absolute_offset: false,
        width: fit_w,
        height: fit_h,
        use_kitty: kitty,
        use_iterm: iterm,
        use_sixel: sixel,
        ..Default::default()
    }
}

/// Shows previews on standard output when it is a terminal.
pub struct Preview {
    graphics: Graphics,
    warned: bool,
}

impl Preview {
    pub fn new(graphics: Graphics) -> Self {
        Self {
            graphics,
            warned: false,
        }
    }

    /// Prints `image` at the cursor; off a terminal (a pipe, a log) it says once why not.
    pub fn show(&mut self, image: &Image) {
        if !std::io::stdout().is_terminal() {
            if !std::mem::replace(&mut self.warned, true) {
                eprintln!("note: --preview shows images only when standard output is a terminal");
            }
            return;
        }
        let Some(rgb) = RgbImage::from_raw(image.width, image.height, image.rgb.clone()) else {
            return;
        };
        let terminal = crossterm::terminal::size().unwrap_or((80, 24));
        let config = config(self.graphics, terminal, (image.width, image.height));
        // viuer asks the terminal what it can draw; in raw mode the answer is read, not echoed.
        let raw = crossterm::terminal::enable_raw_mode().is_ok();
        let printed = viuer::print(&DynamicImage::ImageRgb8(rgb), &config);
        if raw {
            let _ = crossterm::terminal::disable_raw_mode();
        }
        // Graphics protocols leave the cursor on the picture's last row: the path goes below.
        println!();
        if let Err(e) = printed {
            if !std::mem::replace(&mut self.warned, true) {
                eprintln!("note: --preview could not draw the image: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphics_choices_limit_the_protocols() {
        let c = config(Graphics::Halfblocks, (200, 50), (512, 512));
        assert!(!c.use_kitty && !c.use_iterm && !c.use_sixel);
        let c = config(Graphics::Sixel, (200, 50), (64, 64));
        assert!(!c.use_kitty && !c.use_iterm && c.use_sixel);
        let c = config(Graphics::Auto, (80, 24), (64, 64));
        assert!(c.use_kitty && c.use_iterm && c.use_sixel && !c.absolute_offset);
    }

    #[test]
    fn one_bound_is_given_so_the_aspect_ratio_holds() {
        let size = |t, i| {
            let c = config(Graphics::Auto, t, i);
            (c.width, c.height)
        };
        // Square: 64 columns need 32 rows, more than 24: the height limits.
        assert_eq!(size((200, 50), (512, 512)), (None, Some(24)));
        // Wide: 64 columns need 16 rows: the width limits.
        assert_eq!(size((200, 50), (1024, 512)), (Some(64), None));
        // A narrow terminal: 30 columns need 15 rows.
        assert_eq!(size((30, 40), (512, 512)), (Some(30), None));
        // A short one: the height limits at rows - 2.
        assert_eq!(size((100, 10), (512, 768)), (None, Some(8)));
    }
}
