//! Step progress on stderr: an indicatif bar on a terminal, plain lines otherwise (logs, pipes).
use crate::engine::pipeline::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::time::{Duration, Instant};

pub struct Reporter {
    bar: Option<ProgressBar>,
    start: Instant,
}

impl Reporter {
    pub fn new(steps: usize, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} step {pos}/{len} [{bar:30}] {rate} eta {eta}",
            )
            .map(|s| {
                s.progress_chars("=> ").with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.2} it/s", state.per_sec());
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            start: Instant::now(),
        }
    }

    pub fn step(&mut self, p: &Progress) {
        match &self.bar {
            Some(bar) => {
                // Second-order samplers evaluate the model about twice per step: count calls.
                bar.set_length(p.steps as u64);
                bar.set_position(p.step as u64)
            }
            None => eprintln!("{}", plain_line(p.step, p.steps, self.start.elapsed())),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One progress line for logs: `step 3/20  1.52 it/s  eta 11s`.
pub fn plain_line(step: usize, steps: usize, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if step == 0 || secs <= 0.0 {
        return format!("step {step}/{steps}");
    }
    let rate = step as f64 / secs;
    let eta = steps.saturating_sub(step) as f64 / rate;
    format!(
        "step {step}/{steps}  {rate:.2} it/s  eta {}",
        human_secs(eta)
    )
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_rate_and_eta() {
        assert_eq!(
            plain_line(3, 20, Duration::from_secs(2)),
            "step 3/20  1.50 it/s  eta 11s"
        );
        assert_eq!(
            plain_line(1, 200, Duration::from_secs(1)),
            "step 1/200  1.00 it/s  eta 3m19s"
        );
        assert_eq!(
            plain_line(20, 20, Duration::from_secs(4)),
            "step 20/20  5.00 it/s  eta 0s"
        );
        assert_eq!(plain_line(0, 20, Duration::ZERO), "step 0/20");
    }
}
