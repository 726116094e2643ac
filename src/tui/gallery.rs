//! The gallery's files: past renders from the history index (newest first, files that are gone
//! left out), favourites in `<data>/favourites.json`, and deletion into `<data>/trash/images/`.
use super::app::GalleryRow;
use crate::history;
use crate::paths::Paths;
use crate::worker::Picture;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// At most this many renders are listed (the newest).
pub const LIMIT: usize = 500;

fn favourites_path(paths: &Paths) -> PathBuf {
    paths.data.join("favourites.json")
}

pub fn favourites(paths: &Paths) -> BTreeSet<String> {
    std::fs::read_to_string(favourites_path(paths))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

pub fn set_favourite(paths: &Paths, path: &Path, on: bool) -> Result<(), String> {
    let file = favourites_path(paths);
    // Two studios open at once each keep their change.
    let _lock = crate::store::lock(&file)
        .map_err(|e| format!("cannot lock the favourites {}: {e}", file.display()))?;
    let mut all = favourites(paths);
    let key = path.display().to_string();
    if on {
        all.insert(key);
    } else {
        all.remove(&key);
    }
    let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
    crate::store::write_atomic(&file, text.as_bytes())
        .map_err(|e| format!("cannot save the favourites {}: {e}", file.display()))
}

pub fn rows(paths: &Paths) -> Result<Vec<GalleryRow>, String> {
    let file = paths.history();
    let found = history::read(&file)
        .map_err(|e| format!("cannot read the history {}: {e}", file.display()))?;
    let favourites = favourites(paths);
    let mut seen = BTreeSet::new();
    Ok(history::select(&found.entries, None, None)
        .into_iter()
        .filter(|e| Path::new(&e.path).is_file() && seen.insert(e.path.clone()))
        .take(LIMIT)
        .map(|e| GalleryRow {
            favourite: favourites.contains(&e.path),
            path: PathBuf::from(e.path),
            time: e.time,
            recipe: e.recipe,
        })
        .collect())
}

/// Moves an image into the trash folder (never deletes it outright).
pub fn trash(paths: &Paths, path: &Path) -> Result<PathBuf, String> {
    let dir = paths.data.join("trash").join("images");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the trash folder {}: {e}", dir.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file", path.display()))?;
    // Two studios trashing same-named images at once must not pick the same name.
    let _lock = crate::store::lock(&dir)
        .map_err(|e| format!("cannot lock the trash folder {}: {e}", dir.display()))?;
    let mut dest = dir.join(name);
    let mut n = 1;
    while dest.exists() {
        dest = dir.join(format!("{n}-{}", name.to_string_lossy()));
        n += 1;
    }
    if std::fs::rename(path, &dest).is_err() {
        // Another file system: copy, then remove.
        std::fs::copy(path, &dest)
            .and_then(|_| std::fs::remove_file(path))
            .map_err(|e| format!("cannot move {} to the trash: {e}", path.display()))?;
    }
    Ok(dest)
}

/// The pixels of a PNG as 8-bit RGB, for the preview.
pub fn decode(path: &Path) -> Result<Picture, String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot read the image {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| fail(&e))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| fail(&"the image is too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| fail(&e))?;
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        png::ColorType::Indexed => return Err(fail(&"palette images are not supported")),
    };
    Ok(Picture {
        width: info.width,
        height: info.height,
        rgb,
    })
}
