//! Standard normal draws exactly as `torch.randn(shape, generator=torch.Generator().manual_seed(s))`
//! makes them on the CPU in float32, without touching libtorch's global generator.
//!
//! DPM++ SDE's Brownian tree seeds a fresh generator for every node, as torchsde does; tch only
//! exposes the global generator, which the render holds for its own stream. So this reproduces
//! PyTorch's CPU generator (MT19937) and its `normal_` kernel: uniform floats from 24 random
//! bits, Box–Muller over blocks of 16 (the last block redrawn when the size is not a multiple of
//! 16), and for fewer than 16 values the double-precision Box–Muller with its cached second value.
use tch::Tensor;

const N: usize = 624;
const M: usize = 397;

/// MT19937, seeded as PyTorch seeds it (`at::mt19937`, the standard 32-bit initialisation).
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl Mt19937 {
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for j in 1..N {
            let prev = state[j - 1];
            state[j] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(j as u32);
        }
        Mt19937 { state, index: N }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.state[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// PyTorch's `random64`: the first draw is the high word.
    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        ((self.next_u32() & 0x00ff_ffff) as f64 * (1.0 / (1u64 << 24) as f64)) as f32
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Box–Muller on 16 uniforms in place: pairs (j, j + 8).
fn normal_fill_16(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = (2.0 * std::f64::consts::PI * f64::from(u2)) as f32;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}

/// `count` standard normal float32 values from a generator seeded with `seed`.
pub fn randn_values(seed: u64, count: usize) -> Vec<f32> {
    let mut rng = Mt19937::new(seed);
    if count >= 16 {
        let mut data: Vec<f32> = (0..count).map(|_| rng.uniform_f32()).collect();
        for start in (0..count - 15).step_by(16) {
            normal_fill_16(&mut data[start..start + 16]);
        }
        if !count.is_multiple_of(16) {
            let tail = &mut data[count - 16..];
            for v in tail.iter_mut() {
                *v = rng.uniform_f32();
            }
            normal_fill_16(tail);
        }
        return data;
    }
    let mut cached: Option<f64> = None;
    (0..count)
        .map(|_| {
            let value = match cached.take() {
                Some(v) => v,
                None => {
                    let u1 = rng.uniform_f64();
                    let u2 = rng.uniform_f64();
                    let r = (-2.0 * (-u2).ln_1p()).sqrt();
                    let theta = 2.0 * std::f64::consts::PI * u1;
                    cached = Some(r * theta.sin());
                    r * theta.cos()
                }
            };
            value as f32
        })
        .collect()
}

/// A float32 CPU tensor of standard normal values, as `torch.randn(shape, generator=g)` with
/// `g = torch.Generator().manual_seed(seed)`.
pub fn randn(seed: u64, shape: &[i64]) -> Tensor {
    let count: i64 = shape.iter().product();
    let values = randn_values(seed, count.max(0) as usize);
    Tensor::from_slice(&values).reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The C++ standard's check: the 10000th output of mt19937 seeded with 5489.
        let mut rng = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = rng.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }
}
