//! What a batch shows while it runs. On a terminal: a bar for the batch and one per worker for
//! the image it renders. Otherwise (nohup, cron, a log file): one line per finished image with
//! the count, it/s and ETA. With --json: JSON-line events on stdout (plan, loading, started,
//! progress, done, failed, sheet, note, summary) and nothing else there.
use super::expand::PlannedImage;
use super::manifest::Record;
use crate::cli::progress::plain_line;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Json,
    Bars,
    Lines,
}

pub struct Display {
    mode: Mode,
    multi: Option<MultiProgress>,
    batch: Option<ProgressBar>,
    workers: Vec<ProgressBar>,
    names: Vec<String>,
    total: usize,
    finished: usize,
    start: Instant,
}

/// Counts for the start and the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Images of the plan (this shard's, with --shard).
    pub images: usize,
    pub already_done: usize,
    pub to_render: usize,
    /// Rendered by this run.
    pub rendered: usize,
    pub failed: usize,
}

impl Display {
    /// `names`: each worker's device, as the user listed them.
    pub fn new(mode: Mode, total: usize, names: Vec<String>) -> Self {
        let mut display = Self {
            mode,
            multi: None,
            batch: None,
            workers: Vec::new(),
            names,
            total,
            finished: 0,
            start: Instant::now(),
        };
        if mode == Mode::Bars && total > 0 {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let batch = multi.add(ProgressBar::new(total as u64));
            batch.set_style(style(
                "batch [{bar:30}] {pos}/{len} images  {elapsed_precise} eta {eta}",
            ));
            batch.enable_steady_tick(Duration::from_millis(200));
            for name in &display.names {
                let bar = multi.add(ProgressBar::new(1));
                bar.set_style(style("{prefix:>8} [{bar:30}] step {pos}/{len}  {msg}"));
                bar.set_prefix(name.clone());
                display.workers.push(bar);
            }
            display.batch = Some(batch);
            display.multi = Some(multi);
        }
        display
    }

    fn say(&self, line: &str) {
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    pub fn plan(&self, plan: &str, out: &str, counts: &Counts, shard: Option<String>) {
        if self.mode == Mode::Json {
            emit(json!({
                "event": "plan",
                "plan": plan,
                "out": out,
                "images": counts.images,
                "already_done": counts.already_done,
                "to_render": counts.to_render,
                "shard": shard,
                "workers": self.names,
            }));
            return;
        }
        let shard = shard.map(|s| format!(" (shard {s})")).unwrap_or_default();
        self.say(&format!(
            "{plan}: {} images{shard}, {} already done, {} to render into {out} on {}",
            counts.images,
            counts.already_done,
            counts.to_render,
            self.names.join(", ")
        ));
    }

    pub fn loading(&self, worker: usize, model: &str) {
        if self.mode == Mode::Json {
            emit(json!({"event": "loading", "worker": worker, "model": model}));
        } else {
            self.say(&format!("{}: loading {model}", self.name(worker)));
        }
    }

    fn name(&self, worker: usize) -> &str {
        self.names.get(worker).map_or("worker", String::as_str)
    }

    pub fn started(&self, worker: usize, image: &PlannedImage) {
        match self.mode {
            Mode::Json => emit(json!({
                "event": "started",
                "id": image.id,
                "job": image.job,
                "index": image.index,
                "path": image.path,
                "seed": image.seed,
                "worker": worker,
            })),
            Mode::Bars => {
                if let Some(bar) = self.workers.get(worker) {
                    bar.reset();
                    bar.set_message(image.path.clone());
                }
            }
            Mode::Lines => {}
        }
    }

    pub fn progress(&self, worker: usize, image: &PlannedImage, step: usize, steps: usize) {
        match self.mode {
            Mode::Json => emit(json!({
                "event": "progress",
                "id": image.id,
                "step": step,
                "steps": steps,
                "worker": worker,
            })),
            Mode::Bars => {
                if let Some(bar) = self.workers.get(worker) {
                    bar.set_length(steps as u64);
                    bar.set_position(step as u64);
                }
            }
            Mode::Lines => {}
        }
    }

    pub fn done(&mut self, image: &PlannedImage, record: &Record) {
        self.finished += 1;
        match self.mode {
            Mode::Json => emit(json!({
                "event": "done",
                "id": image.id,
                "job": image.job,
                "index": image.index,
                "path": image.path,
                "seed": image.seed,
                "steps": record.steps,
                "render_s": record.render_s,
                "load_s": record.load_s,
                "device": record.device,
                "finished": self.finished,
                "to_render": self.total,
            })),
            _ => {
                let line = image_line(
                    self.finished,
                    self.total,
                    &image.path,
                    image.seed,
                    record.steps,
                    record.render_s,
                    self.start.elapsed(),
                );
                self.say(&line);
                self.tick();
            }
        }
    }

    pub fn failed(&mut self, image: &PlannedImage, message: &str) {
        self.finished += 1;
        match self.mode {
            Mode::Json => emit(json!({
                "event": "failed",
                "id": image.id,
                "job": image.job,
                "index": image.index,
                "path": image.path,
                "seed": image.seed,
                "message": message,
                "finished": self.finished,
                "to_render": self.total,
            })),
            _ => {
                self.say(&format!(
                    "[{}/{}] FAILED {} (job {}, seed {}): {message}",
                    self.finished, self.total, image.path, image.job, image.seed
                ));
                self.tick();
            }
        }
    }

    fn tick(&self) {
        if let Some(bar) = &self.batch {
            bar.set_position(self.finished as u64);
        }
    }

    pub fn note(&self, message: &str) {
        if self.mode == Mode::Json {
            emit(json!({"event": "note", "message": message}));
        } else {
            self.say(&format!("note: {message}"));
        }
    }

    /// A contact sheet drawn once its last cell was done.
    pub fn sheet(&self, path: &str) {
        if self.mode == Mode::Json {
            emit(json!({"event": "sheet", "path": path}));
        } else {
            self.say(&format!("contact sheet {path}"));
        }
    }

    /// Clears the bars and reports the end: one line on stderr, or the summary event.
    pub fn finish(&self, counts: &Counts, left: usize, stopped: Option<&str>) {
        for bar in self.workers.iter().chain(&self.batch) {
            bar.finish_and_clear();
        }
        if self.mode == Mode::Json {
            emit(json!({
                "event": "summary",
                "images": counts.images,
                "already_done": counts.already_done,
                "rendered": counts.rendered,
                "failed": counts.failed,
                "left": left,
                "stopped_by": stopped,
            }));
            return;
        }
        let mut line = format!(
            "{} rendered, {} failed, {} already done, {left} left",
            counts.rendered, counts.failed, counts.already_done
        );
        if let Some(signal) = stopped {
            line.push_str(&format!(
                " (stopped by {signal}: run the same command again to finish)"
            ));
        } else if counts.failed > 0 {
            line.push_str(" (run the same command again to retry the failed ones)");
        }
        eprintln!("{line}");
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// One log line per finished image: `[3/12] a/1-0.png  seed 1  step 2/2  4.88 it/s ...  eta 9s`
/// where the ETA is the batch's (images left at the pace so far).
pub fn image_line(
    finished: usize,
    total: usize,
    path: &str,
    seed: u64,
    steps: usize,
    render_s: f64,
    elapsed: Duration,
) -> String {
    let rate = plain_line(steps, steps, Duration::from_secs_f64(render_s.max(0.0)));
    let rate = rate.split("  eta").next().unwrap_or_default().to_string();
    let per_image = elapsed.as_secs_f64() / finished.max(1) as f64;
    let eta = per_image * total.saturating_sub(finished) as f64;
    format!(
        "[{finished}/{total}] {path}  seed {seed}  {rate} in {render_s:.2}s  eta {}",
        human_secs(eta)
    )
}

fn human_secs(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_show_count_rate_and_eta() {
        let line = image_line(3, 12, "a/1-0.png", 1, 20, 4.0, Duration::from_secs(30));
        assert_eq!(
            line,
            "[3/12] a/1-0.png  seed 1  step 20/20  5.00 it/s in 4.00s  eta 1m30s"
        );
        assert_eq!(human_secs(7322.0), "2h02m");
    }
}
