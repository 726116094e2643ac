//! Contact sheets of a plan's prompt-matrix and grid jobs. Their cells may be rendered by
//! different shards, so no shard owns a sheet: every run ends by drawing each sheet whose cells
//! are all done (by anyone, as the shared manifest says) and which is missing or was drawn from
//! other cells. The last shard to record a cell therefore always finds its sheets complete;
//! two shards drawing the same sheet at once write the same bytes, atomically.
use super::expand::PlannedSheet;
use super::manifest::{self, Manifest};
use crate::cli::sheet::{self, SHEET_KEY};
use crate::engine::pipeline::Image;
use crate::output::atomic::{parent_dir, write_atomic};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What the sheets of a plan look like in an output folder.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SheetCounts {
    /// Drawn from the cells the plan makes now.
    pub made: usize,
    /// Some cell is not done yet.
    pub waiting: usize,
    /// Every cell is done but the sheet is missing or out of date (the next run draws it).
    pub ready: usize,
}

/// Draws every sheet that is ready. Returns the paths written.
pub fn draw_ready(sheets: &[PlannedSheet], out_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    if sheets.is_empty() {
        return Ok(written);
    }
    let manifest = Manifest::read(out_dir)
        .with_context(|| format!("cannot read {}", manifest::path(out_dir).display()))?;
    let latest = manifest.latest();
    for planned in sheets {
        if state(planned, out_dir, &latest) != State::Ready {
            continue;
        }
        let path = out_dir.join(&planned.path);
        draw_one(planned, out_dir, &path)
            .with_context(|| format!("cannot draw the contact sheet {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// How many sheets are made, waiting for cells, or ready to draw.
pub fn count(sheets: &[PlannedSheet], out_dir: &Path, manifest: &Manifest) -> SheetCounts {
    let latest = manifest.latest();
    let mut counts = SheetCounts::default();
    for planned in sheets {
        match state(planned, out_dir, &latest) {
            State::Made => counts.made += 1,
            State::Waiting => counts.waiting += 1,
            State::Ready => counts.ready += 1,
        }
    }
    counts
}

#[derive(Debug, PartialEq)]
enum State {
    Made,
    Waiting,
    Ready,
}

fn state(
    planned: &PlannedSheet,
    out_dir: &Path,
    latest: &std::collections::HashMap<&str, &manifest::Record>,
) -> State {
    let all_done = planned
        .cells
        .iter()
        .all(|(path, hash)| manifest::is_done(latest, out_dir, path, hash));
    if !all_done {
        State::Waiting
    } else if drawn_from(&out_dir.join(&planned.path)) == Some(hashes(planned)) {
        State::Made
    } else {
        State::Ready
    }
}

/// The recipe hashes of the cells an existing sheet was drawn from.
fn drawn_from(path: &Path) -> Option<Vec<String>> {
    let chunks = crate::output::png::read_text_chunks(path).ok()?;
    let (_, text) = chunks.iter().find(|(key, _)| key == SHEET_KEY)?;
    let note: serde_json::Value = serde_json::from_str(text).ok()?;
    serde_json::from_value(note.get("recipe_hashes")?.clone()).ok()
}

fn hashes(planned: &PlannedSheet) -> Vec<String> {
    planned.cells.iter().map(|(_, hash)| hash.clone()).collect()
}

fn draw_one(planned: &PlannedSheet, out_dir: &Path, path: &Path) -> Result<()> {
    let mut cells = Vec::with_capacity(planned.cells.len());
    for (rel, _) in &planned.cells {
        cells.push(read_cell(&out_dir.join(rel))?);
    }
    let refs: Vec<&Image> = cells.iter().collect();
    let names: Vec<String> = planned.cells.iter().map(|(rel, _)| rel.clone()).collect();
    let (image, mut note) = sheet::draw(&planned.layout, &refs, &names)?;
    note["recipe_hashes"] = serde_json::json!(hashes(planned));
    note["job"] = serde_json::json!(planned.job);
    note["seed"] = serde_json::json!(planned.seed);
    let bytes = sheet::encode_sheet(&image, &note)?;
    std::fs::create_dir_all(parent_dir(path))?;
    write_atomic(path, true, |f| f.write_all(&bytes))?;
    Ok(())
}

fn read_cell(path: &Path) -> Result<Image> {
    let decoded = image::open(path)
        .with_context(|| {
            format!(
                "cannot read the cell {}: delete it and run the plan again to render it anew",
                path.display()
            )
        })?
        .to_rgb8();
    Ok(Image {
        width: decoded.width(),
        height: decoded.height(),
        rgb: decoded.into_raw(),
    })
}
