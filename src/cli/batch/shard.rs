//! `--shard K/N`: which images this process renders. An image belongs to shard
//! `spread(stable_hash(id)) mod N`, so the split depends only on each image's identity: shards are
//! disjoint, together they cover the plan, and adding jobs to a plan moves no existing image.
use super::hash::stable_hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub k: u32,
    pub n: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "--shard takes K/N with 1 <= K <= N (such as 2/8), got {s:?}; in a Slurm array use \
                 $((SLURM_ARRAY_TASK_ID+1))/$SLURM_ARRAY_TASK_COUNT"
            )
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let k: u32 = k.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Self { k, n })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl Shard {
    pub fn contains(&self, id: &str) -> bool {
        spread(stable_hash(id.as_bytes())) % u64::from(self.n) == u64::from(self.k - 1)
    }
}

/// MurmurHash3's finalizer: FNV's low bits follow the input's low bits too closely for a
/// modulus by a small N (bit 0 is the parity of the bytes' bit 0), so mix them first.
fn spread(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("2/8".parse::<Shard>(), Ok(Shard { k: 2, n: 8 }));
        assert_eq!(" 1 / 1 ".parse::<Shard>(), Ok(Shard { k: 1, n: 1 }));
        for bad in ["0/2", "3/2", "1", "a/b", "1/0", "-1/2"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert!(err.contains("K/N"), "{bad}: {err}");
        }
        assert_eq!(Shard { k: 3, n: 4 }.to_string(), "3/4");
    }

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let ids: Vec<String> = (0..400).map(|i| format!("{i:016x}")).collect();
        let n = 4;
        let shards: Vec<Shard> = (1..=n).map(|k| Shard { k, n }).collect();
        for id in &ids {
            let owners = shards.iter().filter(|s| s.contains(id)).count();
            assert_eq!(owners, 1, "{id}");
        }
        // Roughly even: each shard gets a fair part of 400 images.
        for s in &shards {
            let mine = ids.iter().filter(|id| s.contains(id)).count();
            assert!((60..=140).contains(&mine), "shard {s} has {mine}");
        }
    }
}
