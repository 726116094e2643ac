//! What `--json` prints: one object per image on stdout.
use crate::engine::pipeline::Timings;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub path: String,
    pub seed: u64,
    /// Position within the batch, 0-based (all images of a batch share the seed).
    pub index: u32,
    pub width: u32,
    pub height: u32,
    pub timings: TimingReport,
}

/// Seconds. `total_s` runs from the start of loading to the decoded images (files not included).
#[derive(Debug, Clone, Serialize)]
pub struct TimingReport {
    pub load_s: f64,
    pub encode_s: f64,
    pub denoise_s: f64,
    /// denoise_s / steps.
    pub step_s: f64,
    pub decode_s: f64,
    pub total_s: f64,
}

impl TimingReport {
    pub fn new(load_s: f64, engine: &Timings, steps: usize, total_s: f64) -> Self {
        Self {
            load_s,
            encode_s: engine.encode_s,
            denoise_s: engine.denoise_s,
            step_s: engine.denoise_s / steps.max(1) as f64,
            decode_s: engine.decode_s,
            total_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_every_field() {
        let t = Timings {
            encode_s: 0.5,
            denoise_s: 3.0,
            decode_s: 0.25,
        };
        let r = ImageReport {
            path: "outputs/a.png".into(),
            seed: 7,
            index: 0,
            width: 64,
            height: 32,
            timings: TimingReport::new(1.0, &t, 4, 5.0),
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["timings"]["step_s"], 0.75);
        for key in ["path", "seed", "width", "height", "timings"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in [
            "load_s",
            "encode_s",
            "denoise_s",
            "step_s",
            "decode_s",
            "total_s",
        ] {
            assert!(v["timings"][key].is_f64(), "{key}");
        }
        assert!(!serde_json::to_string(&r).unwrap().contains('\n'));
    }
}
