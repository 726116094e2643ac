//! Contact sheets: the cells of a grid or prompt matrix on one image, with column labels on
//! top and row labels on the left, drawn with the `image` crate and DejaVu Sans (embedded;
//! see assets/fonts/). Cells of different sizes are centred in boxes of the largest size.
//! Labels marked inactive (prompt-matrix parts absent from that row or column) are grey and
//! struck through, as AUTOMATIC1111 draws them.
use crate::engine::pipeline::Image;
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);
const FADED: Rgb<u8> = Rgb([153, 153, 153]);

/// One line of a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: String,
    /// False draws it grey and struck through.
    pub active: bool,
}

impl Label {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            active: true,
        }
    }
}

/// What to draw: `cells` row by row (`columns * rows` of them), one label list per column and
/// per row (empty lists leave that margin out).
pub struct Sheet<'a> {
    pub columns: usize,
    pub rows: usize,
    pub cells: Vec<&'a Image>,
    pub column_labels: Vec<Vec<Label>>,
    pub row_labels: Vec<Vec<Label>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SheetError {
    #[error("a contact sheet of {columns}x{rows} needs {} cells, got {cells}", columns * rows)]
    CellCount {
        columns: usize,
        rows: usize,
        cells: usize,
    },
    #[error("the embedded font cannot be read: {0}")]
    Font(String),
}

/// Text in the embedded font at one size.
struct Pen<'f> {
    font: ab_glyph::PxScaleFont<&'f FontRef<'f>>,
}

impl Pen<'_> {
    fn line_height(&self) -> f32 {
        (self.font.ascent() - self.font.descent() + self.font.line_gap()).ceil()
    }

    fn width(&self, text: &str) -> f32 {
        let mut x = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            if let Some(p) = prev {
                x += self.font.kern(p, id);
            }
            x += self.font.h_advance(id);
            prev = Some(id);
        }
        x
    }

    /// Greedy word wrap to `max` pixels; a word longer than a line is cut between characters.
    fn wrap(&self, text: &str, max: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if self.width(&candidate) <= max {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            for c in word.chars() {
                let mut next = line.clone();
                next.push(c);
                if !line.is_empty() && self.width(&next) > max {
                    lines.push(std::mem::take(&mut line));
                    next = c.to_string();
                }
                line = next;
            }
        }
        if !line.is_empty() || lines.is_empty() {
            lines.push(line);
        }
        lines
    }

    /// Draws one line with its top-left corner at (x, y).
    fn draw(&self, img: &mut RgbImage, x: f32, y: f32, text: &str, color: Rgb<u8>) {
        let baseline = y + self.font.ascent();
        let mut pen_x = x;
        let mut prev = None;
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            if let Some(p) = prev {
                pen_x += self.font.kern(p, id);
            }
            let glyph =
                id.with_scale_and_position(self.font.scale(), ab_glyph::point(pen_x, baseline));
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    let px = bounds.min.x as i64 + i64::from(gx);
                    let py = bounds.min.y as i64 + i64::from(gy);
                    blend(img, px, py, color, coverage);
                });
            }
            pen_x += self.font.h_advance(id);
            prev = Some(id);
        }
    }
}

fn blend(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>, coverage: f32) {
    let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) else {
        return;
    };
    if x >= img.width() || y >= img.height() {
        return;
    }
    let a = coverage.clamp(0.0, 1.0);
    let p = img.get_pixel_mut(x, y);
    for (dst, src) in p.0.iter_mut().zip(color.0) {
        *dst = (f32::from(*dst) * (1.0 - a) + f32::from(src) * a).round() as u8;
    }
}

/// A block of labels: each label wrapped, lines in order.
struct Block {
    lines: Vec<(String, bool)>,
}

impl Block {
    fn new(pen: &Pen, labels: &[Label], max: f32) -> Self {
        let lines = labels
            .iter()
            .flat_map(|l| {
                pen.wrap(&l.text, max)
                    .into_iter()
                    .map(move |line| (line, l.active))
            })
            .collect();
        Self { lines }
    }

    fn height(&self, pen: &Pen) -> f32 {
        self.lines.len() as f32 * pen.line_height()
    }

    fn width(&self, pen: &Pen) -> f32 {
        self.lines
            .iter()
            .map(|(l, _)| pen.width(l))
            .fold(0.0, f32::max)
    }

    /// Draws the lines centred in the box at (x, y) of size (w, h).
    fn draw(&self, pen: &Pen, img: &mut RgbImage, x: f32, y: f32, w: f32, h: f32) {
        let mut top = y + ((h - self.height(pen)) / 2.0).max(0.0);
        for (line, active) in &self.lines {
            let lw = pen.width(line);
            let left = x + ((w - lw) / 2.0).max(0.0);
            let color = if *active { INK } else { FADED };
            pen.draw(img, left, top, line, color);
            if !active {
                let strike_y = (top + pen.line_height() * 0.55) as i64;
                for sx in left as i64..(left + lw) as i64 {
                    blend(img, sx, strike_y, FADED, 1.0);
                }
            }
            top += pen.line_height();
        }
    }
}

/// The font size for cells of this size: about 1/25 of width + height, as A1111 picks it,
/// but never too small to read on small cells.
pub fn font_px(cell_w: u32, cell_h: u32) -> f32 {
    ((cell_w + cell_h) as f32 / 25.0).clamp(14.0, 48.0).round()
}

pub fn draw(sheet: &Sheet) -> Result<Image, SheetError> {
    let (columns, rows) = (sheet.columns, sheet.rows);
    if sheet.cells.len() != columns * rows || columns == 0 {
        return Err(SheetError::CellCount {
            columns,
            rows,
            cells: sheet.cells.len(),
        });
    }
    let cell_w = sheet.cells.iter().map(|c| c.width).max().unwrap_or(1);
    let cell_h = sheet.cells.iter().map(|c| c.height).max().unwrap_or(1);
    let font = FontRef::try_from_slice(FONT).map_err(|e| SheetError::Font(e.to_string()))?;
    let px = font_px(cell_w, cell_h);
    let pen = Pen {
        font: font.as_scaled(PxScale::from(px)),
    };
    let gap = (px / 2.0).round();
    let pad = (px / 3.0).round();

    let label_list = |lists: &[Vec<Label>], i: usize| lists.get(i).cloned().unwrap_or_default();
    let col_blocks: Vec<Block> = (0..columns)
        .map(|c| Block::new(&pen, &label_list(&sheet.column_labels, c), cell_w as f32))
        .collect();
    let row_wrap = (cell_w as f32).max(px * 12.0);
    let row_blocks: Vec<Block> = (0..rows)
        .map(|r| Block::new(&pen, &label_list(&sheet.row_labels, r), row_wrap))
        .collect();
    let has_cols = sheet.column_labels.iter().any(|l| !l.is_empty());
    let has_rows = sheet.row_labels.iter().any(|l| !l.is_empty());
    let header_h = if has_cols {
        col_blocks
            .iter()
            .map(|b| b.height(&pen))
            .fold(0.0, f32::max)
            + 2.0 * pad
    } else {
        0.0
    }
    .ceil();
    let left_w = if has_rows {
        row_blocks.iter().map(|b| b.width(&pen)).fold(0.0, f32::max) + 2.0 * pad
    } else {
        0.0
    }
    .ceil();

    let grid_x = left_w + gap;
    let grid_y = header_h + gap;
    let width = grid_x + columns as f32 * (cell_w as f32 + gap);
    let height = grid_y + rows as f32 * (cell_h as f32 + gap);
    let mut img = RgbImage::from_pixel(width as u32, height as u32, BACKGROUND);

    for (c, block) in col_blocks.iter().enumerate() {
        let x = grid_x + c as f32 * (cell_w as f32 + gap);
        block.draw(&pen, &mut img, x, pad, cell_w as f32, header_h - 2.0 * pad);
    }
    for (r, block) in row_blocks.iter().enumerate() {
        let y = grid_y + r as f32 * (cell_h as f32 + gap);
        block.draw(&pen, &mut img, pad, y, left_w - 2.0 * pad, cell_h as f32);
    }
    for (i, cell) in sheet.cells.iter().enumerate() {
        let (c, r) = (i % columns, i / columns);
        let x = grid_x as u32 + c as u32 * (cell_w + gap as u32) + (cell_w - cell.width) / 2;
        let y = grid_y as u32 + r as u32 * (cell_h + gap as u32) + (cell_h - cell.height) / 2;
        paste(&mut img, cell, x, y);
    }
    Ok(Image {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
    })
}

fn paste(img: &mut RgbImage, cell: &Image, x0: u32, y0: u32) {
    let w = cell.width as usize;
    for (y, row) in cell.rgb.chunks_exact(w * 3).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let (x, y) = (x0 + x as u32, y0 + y as u32);
            if x < img.width() && y < img.height() {
                img.put_pixel(x, y, Rgb([px[0], px[1], px[2]]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, v: u8) -> Image {
        Image {
            width: w,
            height: h,
            rgb: vec![v; (w * h * 3) as usize],
        }
    }

    /// The left edge of column `c`'s box, counted from the sheet's right border.
    fn cell_origin(sheet_w: u32, columns: usize, cell_w: u32, gap: u32, c: usize) -> u32 {
        sheet_w - (columns - c) as u32 * (cell_w + gap)
    }

    fn pixel(img: &Image, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * img.width + x) * 3) as usize;
        [img.rgb[i], img.rgb[i + 1], img.rgb[i + 2]]
    }

    #[test]
    fn layout_places_cells_and_labels() {
        let a = solid(64, 64, 10);
        let b = solid(32, 48, 200);
        let cells = vec![&a, &b, &a, &b, &a, &b];
        let sheet = Sheet {
            columns: 3,
            rows: 2,
            cells,
            column_labels: (0..3)
                .map(|i| vec![Label::new(format!("cfg: {i}"))])
                .collect(),
            row_labels: vec![
                vec![Label::new("sampler: euler_a")],
                vec![Label {
                    text: "ddim".into(),
                    active: false,
                }],
            ],
        };
        let img = draw(&sheet).unwrap();
        let px = font_px(64, 64);
        let gap = (px / 2.0).round() as u32;
        // Right and bottom edges: the last cell box ends one gap before the border.
        let last_x = cell_origin(img.width, 3, 64, gap, 2);
        let last_y = img.height - (64 + gap);
        // Cell (2, 1) is `b`, 32x48, centred in its 64x64 box.
        assert_eq!(pixel(&img, last_x + 16, last_y + 8), [200, 200, 200]);
        assert_eq!(pixel(&img, last_x + 15, last_y + 8), [255, 255, 255]);
        assert_eq!(pixel(&img, last_x + 16, last_y + 7), [255, 255, 255]);
        // Cell (0, 0) is `a`.
        let first_x = cell_origin(img.width, 3, 64, gap, 0);
        let first_y = img.height - 2 * (64 + gap);
        assert_eq!(pixel(&img, first_x, first_y), [10, 10, 10]);
        assert_eq!(pixel(&img, first_x - 1, first_y), [255, 255, 255]);
        // Text is drawn: dark ink above the cells, grey ink left of the second row.
        let header_dark = (0..first_y)
            .flat_map(|y| (first_x..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| pixel(&img, x, y)[0] < 80)
            .count();
        assert!(header_dark > 30, "{header_dark} dark header pixels");
        let faded = (last_y..last_y + 64)
            .flat_map(|y| (0..first_x).map(move |x| (x, y)))
            .filter(|&(x, y)| pixel(&img, x, y) == [153, 153, 153])
            .count();
        assert!(faded > 10, "{faded} grey pixels for the inactive label");
    }

    #[test]
    fn no_labels_no_margins_and_wrong_counts_refused() {
        let a = solid(20, 10, 0);
        let img = draw(&Sheet {
            columns: 2,
            rows: 1,
            cells: vec![&a, &a],
            column_labels: vec![],
            row_labels: vec![],
        })
        .unwrap();
        let gap = (font_px(20, 10) / 2.0).round() as u32;
        assert_eq!(
            (img.width, img.height),
            (gap + 2 * (20 + gap), gap + 10 + gap)
        );
        let err = draw(&Sheet {
            columns: 2,
            rows: 2,
            cells: vec![&a],
            column_labels: vec![],
            row_labels: vec![],
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a contact sheet of 2x2 needs 4 cells, got 1"
        );
    }

    #[test]
    fn long_labels_wrap_to_the_cell() {
        let font = FontRef::try_from_slice(FONT).unwrap();
        let pen = Pen {
            font: font.as_scaled(PxScale::from(14.0)),
        };
        let lines = pen.wrap("a red fox sitting in deep snow at dusk", 64.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(lines.iter().all(|l| pen.width(l) <= 64.0), "{lines:?}");
        assert_eq!(lines.join(" "), "a red fox sitting in deep snow at dusk");
        let long = pen.wrap("supercalifragilistic", 40.0);
        assert!(long.len() > 1 && long.concat() == "supercalifragilistic");
        assert_eq!(pen.wrap("", 40.0), vec![String::new()]);
    }
}
