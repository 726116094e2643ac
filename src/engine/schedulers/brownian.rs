//! The Brownian motion DPM++ SDE samples its noise from: torchsde's `BrownianInterval` as
//! diffusers configures it (`halfway_tree=True`, `tol=1e-6`, `pool_size=24`, no Lévy area),
//! reimplemented so that the same entropy gives the same increments.
//!
//! The interval [t0, t1] is split in halves, recursively, only where queries need it; each node
//! draws its noise from a generator seeded by numpy's `SeedSequence(entropy, spawn_key=(key,
//! depth))`, so an increment depends on the entropy alone, not on the order of queries.
use super::torch_randn::randn;
use std::collections::HashMap;
use tch::Tensor;

const POOL_SIZE: usize = 24;
/// torchsde rounds times to `-log10(tol)` = 6 decimals.
const DECIMALS: usize = 6;

/// numpy's `SeedSequence` (O'Neill's seed_seq hash), for integer entropy and spawn keys.
struct SeedSequence {
    pool: Vec<u32>,
}

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut value = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    value = value.wrapping_mul(*hash_const);
    value ^ (value >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let result = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    result ^ (result >> XSHIFT)
}

/// An integer as numpy's `_int_to_uint32_array` splits it: 32-bit words, least significant
/// first, and one zero word for zero.
fn words(mut n: u128) -> Vec<u32> {
    if n == 0 {
        return vec![0];
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(n as u32);
        n >>= 32;
    }
    out
}

impl SeedSequence {
    fn new(entropy: u64, spawn_key: &[u128], pool_size: usize) -> Self {
        let mut run = words(u128::from(entropy));
        let spawn: Vec<u32> = spawn_key.iter().flat_map(|&k| words(k)).collect();
        if !spawn.is_empty() && run.len() < pool_size {
            run.resize(pool_size, 0);
        }
        let entropy: Vec<u32> = run.into_iter().chain(spawn).collect();
        let mut pool = vec![0u32; pool_size];
        let mut hash_const = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hash_const);
        }
        for src in 0..pool_size {
            for dst in 0..pool_size {
                if src != dst {
                    let hashed = hashmix(pool[src], &mut hash_const);
                    pool[dst] = mix(pool[dst], hashed);
                }
            }
        }
        for &word in entropy.iter().skip(pool_size) {
            for slot in pool.iter_mut() {
                let hashed = hashmix(word, &mut hash_const);
                *slot = mix(*slot, hashed);
            }
        }
        SeedSequence { pool }
    }

    fn generate_state(&self, n_words: usize) -> Vec<u32> {
        let mut hash_const = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut value = self.pool[i % self.pool.len()] ^ hash_const;
                hash_const = hash_const.wrapping_mul(MULT_B);
                value = value.wrapping_mul(hash_const);
                value ^ (value >> XSHIFT)
            })
            .collect()
    }
}

/// Python's `round(x, 6)`: to the nearest 6-decimal number, then back to the nearest double.
fn round_time(x: f64) -> f64 {
    format!("{x:.DECIMALS$}").parse().unwrap_or(x)
}

struct Node {
    start: f64,
    end: f64,
    parent: Option<usize>,
    is_left: bool,
    /// Set once split; with the children and the seed of the noise they share.
    midway: Option<f64>,
    children: Option<(usize, usize)>,
    spawn_key: u128,
    depth: u128,
    w_seed: u32,
}

pub(crate) struct BrownianInterval {
    entropy: u64,
    shape: Vec<i64>,
    nodes: Vec<Node>,
    root_w: Tensor,
    last: usize,
    /// Increments of recently used nodes; anything evicted is recomputed from its ancestors.
    cache: HashMap<usize, Tensor>,
}

/// Increments kept at once: enough for the queries of a render without holding every node.
const CACHE_SIZE: usize = 128;

impl BrownianInterval {
    pub(crate) fn new(t0: f64, t1: f64, shape: &[i64], entropy: u64) -> Self {
        let seeds = SeedSequence::new(entropy, &[], POOL_SIZE).generate_state(3);
        let root_w = randn(u64::from(seeds[0]), shape) * (t1 - t0).sqrt();
        BrownianInterval {
            entropy,
            shape: shape.to_vec(),
            nodes: vec![Node {
                start: round_time(t0),
                end: round_time(t1),
                parent: None,
                is_left: false,
                midway: None,
                children: None,
                spawn_key: 0,
                depth: 0,
                w_seed: 0,
            }],
            root_w,
            last: 0,
            cache: HashMap::new(),
        }
    }

    /// W(tb) - W(ta), for t0 <= ta <= tb <= t1 (clamped into the interval as torchsde does).
    pub(crate) fn increment(&mut self, ta: f64, tb: f64) -> Tensor {
        let (start, end) = (self.nodes[0].start, self.nodes[0].end);
        let ta = ta.clamp(start, end);
        let tb = tb.clamp(start, end);
        let (ta, tb) = (round_time(ta), round_time(tb));
        if ta >= tb {
            return self.zeros();
        }
        let intervals = self.locate(ta, tb);
        if let Some(&last) = intervals.last() {
            self.last = last;
        }
        let mut total: Option<Tensor> = None;
        for node in intervals {
            let w = self.w(node);
            total = Some(match total {
                Some(sum) => sum + w,
                None => w,
            });
        }
        total.unwrap_or_else(|| self.zeros())
    }

    fn zeros(&self) -> Tensor {
        Tensor::zeros(self.shape.as_slice(), (tch::Kind::Float, tch::Device::Cpu))
    }

    /// The nodes that tile [ta, tb], left to right, splitting where needed (torchsde's `_loc`,
    /// starting from the last interval used).
    fn locate(&mut self, ta: f64, tb: f64) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pending = vec![(self.last, ta, tb)];
        while let Some((mut node, ta, mut tb)) = pending.pop() {
            loop {
                let (start, end, parent) = {
                    let n = &self.nodes[node];
                    (n.start, n.end, n.parent)
                };
                if ta < start || tb > end {
                    match parent {
                        Some(p) => {
                            node = p;
                            continue;
                        }
                        None => break,
                    }
                }
                if ta == start && tb == end {
                    out.push(node);
                    break;
                }
                match (self.nodes[node].midway, self.nodes[node].children) {
                    (Some(mid), Some((left, right))) => {
                        if tb <= mid {
                            node = left;
                        } else if ta >= mid {
                            node = right;
                        } else {
                            pending.push((right, mid, tb));
                            node = left;
                            tb = mid;
                        }
                    }
                    _ => {
                        if ta == start {
                            self.split(node, tb);
                            node = self.children(node).0;
                        } else {
                            self.split(node, ta);
                            node = self.children(node).1;
                        }
                    }
                }
            }
        }
        out
    }

    fn children(&self, node: usize) -> (usize, usize) {
        self.nodes[node].children.unwrap_or((node, node))
    }

    /// Halves `node`, then the half holding `point`, and so on until `point` is a split point.
    fn split(&mut self, mut node: usize, point: f64) {
        loop {
            let center = 0.5 * (self.nodes[node].end + self.nodes[node].start);
            self.split_exact(node, center);
            let mid = self.nodes[node].midway.unwrap_or(center);
            let (left, right) = self.children(node);
            if point > mid {
                node = right;
            } else if point < mid {
                node = left;
            } else {
                return;
            }
            if self.nodes[node].end - self.nodes[node].start <= 0.0 {
                return;
            }
        }
    }

    fn split_exact(&mut self, node: usize, midway: f64) {
        let midway = round_time(midway);
        let (spawn_key, depth) = match self.nodes[node].parent {
            None => (0, 0),
            Some(p) => {
                let parent = &self.nodes[p];
                let bit = u128::from(!self.nodes[node].is_left);
                (2 * parent.spawn_key + bit, parent.depth + 1)
            }
        };
        let seeds =
            SeedSequence::new(self.entropy, &[spawn_key, depth], POOL_SIZE).generate_state(4);
        let (start, end) = (self.nodes[node].start, self.nodes[node].end);
        let left = self.nodes.len();
        let child = |start, end, is_left| Node {
            start,
            end,
            parent: Some(node),
            is_left,
            midway: None,
            children: None,
            spawn_key: 0,
            depth: 0,
            w_seed: 0,
        };
        self.nodes.push(child(start, midway, true));
        self.nodes.push(child(midway, end, false));
        let n = &mut self.nodes[node];
        n.midway = Some(midway);
        n.children = Some((left, left + 1));
        n.spawn_key = spawn_key;
        n.depth = depth;
        n.w_seed = seeds[0];
    }

    /// The increment over a node: the root's is drawn; a child's is its share of its
    /// parent's, a Brownian bridge sample from noise seeded by the parent.
    fn w(&mut self, node: usize) -> Tensor {
        if let Some(w) = self.cache.get(&node) {
            return w.shallow_clone();
        }
        let Some(parent) = self.nodes[node].parent else {
            return self.root_w.shallow_clone();
        };
        let parent_w = self.w(parent);
        let p = &self.nodes[parent];
        let mid = p.midway.unwrap_or(0.5 * (p.start + p.end));
        let h_reciprocal = 1.0 / (p.end - p.start);
        let left_diff = mid - p.start;
        let right_diff = p.end - mid;
        let mean = &parent_w * left_diff * h_reciprocal;
        let var = left_diff * right_diff * h_reciprocal;
        let noise = randn(u64::from(p.w_seed), &self.shape);
        let left_w = mean + noise * var.sqrt();
        let w = if self.nodes[node].is_left {
            left_w
        } else {
            parent_w - left_w
        };
        if self.cache.len() >= CACHE_SIZE {
            self.cache.clear();
        }
        self.cache.insert(node, w.shallow_clone());
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_add_up_and_do_not_depend_on_query_order() {
        let _guard = tch::no_grad_guard();
        let shape = [2i64, 3, 4];
        let mut a = BrownianInterval::new(0.03, 14.6, &shape, 42);
        let whole = a.increment(0.03, 14.6);
        let left = a.increment(0.03, 2.5);
        let right = a.increment(2.5, 14.6);
        let parts = &left + &right;
        let diff = f64::try_from((&whole - &parts).abs().max()).unwrap();
        assert!(diff < 1e-5, "{diff}");

        let mut b = BrownianInterval::new(0.03, 14.6, &shape, 42);
        let right_first = b.increment(2.5, 14.6);
        let left_second = b.increment(0.03, 2.5);
        assert!(right_first.equal(&right) && left_second.equal(&left));

        let mut c = BrownianInterval::new(0.03, 14.6, &shape, 43);
        assert!(!c.increment(0.03, 2.5).equal(&left));
    }
}
