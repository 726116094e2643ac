//! Tiled VAE decode and encode, as diffusers' `AutoencoderKL.enable_tiling()` computes them:
//! overlapping tiles run one at a time (memory bounded by the tile, not the image), then each
//! tile is cross-faded into the one above and the one to its left and cropped, so no seams show.
//!
//! The blends follow diffusers' in-place order: a tile is blended with its upper neighbour as
//! that neighbour already is after its own blends, which is why tiles are kept and mutated.
use tch::{Kind, Tensor};

/// Tile sizes for [`super::vae::AutoencoderKl::decode_tiled`] and `encode_tiled`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeTiling {
    /// diffusers' `tile_sample_min_size`: a tile's side in image pixels.
    pub sample_tile: i64,
    /// diffusers' `tile_latent_min_size`: a tile's side in latent pixels.
    pub latent_tile: i64,
    /// diffusers' `tile_overlap_factor`: the share of a tile that overlaps the next.
    pub overlap: f64,
}

impl VaeTiling {
    /// diffusers' defaults: tiles of the VAE's `sample_size` (512 for SD 1.x/2.x, 1024 for
    /// SDXL), overlapping by a quarter.
    pub fn new(sample_size: i64, latent_scale_factor: i64) -> Self {
        Self {
            sample_tile: sample_size,
            latent_tile: sample_size / latent_scale_factor.max(1),
            overlap: 0.25,
        }
    }

    /// Tiles of `latent_tile` latent pixels, images scaled by `latent_scale_factor`.
    pub fn with_latent_tile(latent_tile: i64, latent_scale_factor: i64) -> Self {
        Self {
            sample_tile: latent_tile * latent_scale_factor,
            latent_tile,
            overlap: 0.25,
        }
    }

    /// Whether diffusers would tile latents of this height and width.
    pub fn needs_tiles(&self, latent_height: i64, latent_width: i64) -> bool {
        latent_height > self.latent_tile || latent_width > self.latent_tile
    }

    /// Whether diffusers would tile an image of this height and width when encoding.
    pub fn needs_sample_tiles(&self, height: i64, width: i64) -> bool {
        height > self.sample_tile || width > self.sample_tile
    }
}

/// Runs `f` on overlapping tiles of `x` (NCHW) of side `tile_in`, stepping by
/// `tile_in * (1 - overlap)`; each output tile (of side `tile_out` when whole) is blended over
/// `tile_out * overlap` rows and columns with its neighbours and cropped to
/// `tile_out - blend`, and the crops are stitched.
pub(crate) fn tiled(
    x: &Tensor,
    tile_in: i64,
    tile_out: i64,
    overlap: f64,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> Tensor {
    let (_, _, h, w) = x.size4().expect("tiled input is NCHW");
    let step = ((tile_in as f64) * (1.0 - overlap)) as i64;
    let step = step.max(1);
    let blend = ((tile_out as f64) * overlap) as i64;
    let limit = tile_out - blend;
    let mut rows: Vec<Vec<Tensor>> = Vec::new();
    for i in (0..h).step_by(step as usize) {
        let mut row = Vec::new();
        for j in (0..w).step_by(step as usize) {
            let tile = x
                .narrow(2, i, tile_in.min(h - i))
                .narrow(3, j, tile_in.min(w - j));
            row.push(f(&tile));
        }
        rows.push(row);
    }
    let mut stitched_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut crops = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            if i > 0 {
                let (above, current) = rows.split_at_mut(i);
                blend_into(&above[i - 1][j], &current[0][j], blend, 2);
            }
            if j > 0 {
                let (left, current) = rows[i].split_at_mut(j);
                blend_into(&left[j - 1], &current[0], blend, 3);
            }
            let tile = &rows[i][j];
            let (_, _, th, tw) = tile.size4().expect("tiles are NCHW");
            crops.push(tile.narrow(2, 0, limit.min(th)).narrow(3, 0, limit.min(tw)));
        }
        stitched_rows.push(Tensor::cat(&crops, 3));
    }
    Tensor::cat(&stitched_rows, 2)
}

/// diffusers' `blend_v` (dim 2) or `blend_h` (dim 3): the first `extent` rows or columns of `b`
/// become a linear cross-fade from the last ones of `a`, in place.
fn blend_into(a: &Tensor, b: &Tensor, extent: i64, dim: i64) {
    let extent = extent
        .min(a.size()[dim as usize])
        .min(b.size()[dim as usize]);
    if extent <= 0 {
        return;
    }
    // Weights y / extent in double, then in the tiles' kind, as PyTorch's scalar products do.
    let mut shape = [1i64, 1, 1, 1];
    shape[dim as usize] = extent;
    let ramp = Tensor::arange(extent, (Kind::Double, b.device())) / (extent as f64);
    let keep = ramp.to_kind(b.kind()).view(shape);
    let fade = (-&ramp + 1.0).to_kind(b.kind()).view(shape);
    let a_len = a.size()[dim as usize];
    let tail = a.narrow(dim, a_len - extent, extent);
    let mut head = b.narrow(dim, 0, extent);
    let mixed = tail * fade + &head * keep;
    head.copy_(&mixed);
}
