//! Writing a contact sheet: next to its cells, atomically. For `--out name.png` the sheet is
//! name.png itself (its cells are name-1.png, ...); in a folder it is
//! `{stamp}-{seed}-grid.png` or `-matrix.png`, never replacing a file.
use super::plan::{SheetKind, SheetPlan};
use crate::engine::pipeline::Image;
use crate::output::atomic::{parent_dir, write_atomic};
use crate::output::naming::OutputTarget;
use crate::output::png::{encode, TextChunk};
use crate::output::OutputError;
use crate::variations::contact_sheet;
use anyhow::{Context, Result};
use std::io::ErrorKind;
use std::path::PathBuf;

/// The text chunk that marks a contact sheet (what it shows and which files are its cells).
pub const SHEET_KEY: &str = "easel-sheet";

/// Draws the sheet of `layout` from its finished cells and saves it (see `save`); the cells'
/// file names go into its note. Returns where it went and the picture.
pub fn draw_and_save(
    target: &OutputTarget,
    stamp: &str,
    seed: u64,
    layout: &SheetPlan,
    cells: &[Option<Image>],
    paths: &[Option<PathBuf>],
) -> Result<(PathBuf, Image)> {
    let names: Vec<String> = paths
        .iter()
        .flatten()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let cells: Vec<&Image> = cells.iter().flatten().collect();
    let (image, note) = draw(layout, &cells, &names)?;
    let path = save(target, stamp, seed, layout.kind, &image, &note)?;
    Ok((path, image))
}

/// The sheet's picture and the note that says what it shows and which files are its cells.
pub fn draw(
    layout: &SheetPlan,
    cells: &[&Image],
    names: &[String],
) -> Result<(Image, serde_json::Value)> {
    let image = contact_sheet::draw(&contact_sheet::Sheet {
        columns: layout.columns,
        rows: layout.rows,
        cells: cells.to_vec(),
        column_labels: layout.column_labels.clone(),
        row_labels: layout.row_labels.clone(),
    })?;
    let note = serde_json::json!({
        "kind": layout.kind.name(),
        "columns": layout.columns,
        "rows": layout.rows,
        "cells": names,
    });
    Ok((image, note))
}

/// The sheet as PNG bytes, its note in the `easel-sheet` chunk.
pub fn encode_sheet(image: &Image, note: &serde_json::Value) -> Result<Vec<u8>> {
    let chunks = [TextChunk::Utf8 {
        keyword: SHEET_KEY.into(),
        text: note.to_string(),
    }];
    Ok(encode(image, &chunks)?)
}

pub fn save(
    target: &OutputTarget,
    stamp: &str,
    seed: u64,
    kind: SheetKind,
    image: &Image,
    note: &serde_json::Value,
) -> Result<PathBuf> {
    let bytes = encode_sheet(image, note)?;
    let write = |path: &PathBuf, replace: bool| {
        std::fs::create_dir_all(parent_dir(path))?;
        write_atomic(path, replace, |f| f.write_all(&bytes))
    };
    let saved: Result<PathBuf> = match target {
        OutputTarget::File(path) => {
            write(path, true).map_err(|source| write_err(path, source))?;
            Ok(path.clone())
        }
        OutputTarget::Dir(dir) => {
            for attempt in 0..10_000u32 {
                let suffix = if attempt == 0 {
                    String::new()
                } else {
                    format!("_{}", attempt + 1)
                };
                let path = dir.join(format!("{stamp}-{seed}-{}{suffix}.png", kind.name()));
                match write(&path, false) {
                    Ok(()) => return Ok(path),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                    Err(source) => return Err(write_err(&path, source)),
                }
            }
            Err(anyhow::anyhow!(
                "{} already holds too many contact sheets named {stamp}-{seed}",
                dir.display()
            ))
        }
    };
    saved.context("cannot write the contact sheet")
}

fn write_err(path: &std::path::Path, source: std::io::Error) -> anyhow::Error {
    OutputError::Write {
        path: path.to_path_buf(),
        source,
    }
    .into()
}
