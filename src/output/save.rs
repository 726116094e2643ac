//! One image, one file: encoded in memory, written atomically under the name the target picks.
use super::atomic::TempFile;
use super::naming::{dir_candidate, file_for_index, OutputTarget};
use super::{png, OutputError, Result};
use crate::engine::pipeline::Image;
use crate::recipe::Recipe;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Enough tries for any realistic number of runs within one second.
const MAX_ATTEMPTS: u32 = 10_000;

/// Writes image `recipe.index` of a batch with its recipe embedded and returns its path.
/// `stamp` is the time part of folder names (see `naming::stamp`).
pub fn save_png(
    target: &OutputTarget,
    stamp: &str,
    recipe: &Recipe,
    model_name: &str,
    image: &Image,
) -> Result<PathBuf> {
    let bytes = png::encode(image, &png::recipe_chunks(recipe, model_name))?;
    let dir = target.dir();
    std::fs::create_dir_all(dir).map_err(|source| write_err(dir, source))?;
    let mut tmp = TempFile::create_in(dir).map_err(|source| write_err(dir, source))?;
    // The temporary name means nothing to the user: name the folder.
    tmp.write_all(&bytes)
        .map_err(|source| write_err(dir, source))?;
    match target {
        OutputTarget::File(base) => {
            let path = file_for_index(base, recipe.index, recipe.batch_size);
            tmp.persist_replace(&path)
                .map_err(|source| write_err(&path, source))?;
            Ok(path)
        }
        OutputTarget::Dir(dir) => {
            for attempt in 0..MAX_ATTEMPTS {
                let path = dir_candidate(dir, stamp, recipe.seed, recipe.index, attempt);
                match tmp.persist_new(&path) {
                    Ok(()) => return Ok(path),
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                    Err(source) => return Err(write_err(&path, source)),
                }
            }
            Err(OutputError::Invalid(format!(
                "{} already holds {MAX_ATTEMPTS} images named {stamp}-{}-{}: choose another --out",
                dir.display(),
                recipe.seed,
                recipe.index
            )))
        }
    }
}

fn write_err(path: &Path, source: std::io::Error) -> OutputError {
    OutputError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;

    fn recipe(batch_size: u32, index: u32) -> Recipe {
        Recipe {
            schema_version: crate::recipe::SCHEMA_VERSION,
            model: "m".into(),
            prompt: "p".into(),
            negative_prompt: String::new(),
            sampler: SamplerKind::Euler,
            schedule: Default::default(),
            timestep_spacing: None,
            steps: 2,
            cfg: 7.5,
            seed: 7,
            width: 2,
            height: 1,
            batch_size,
            index,
            device: "cpu".into(),
            dtype: "fp32".into(),
            clip_skip: 1,
            guidance_rescale: 0.0,
            prompt_template: None,
            loras: Vec::new(),
            vae: None,
            init: None,
        }
    }

    fn image(v: u8) -> Image {
        Image {
            width: 2,
            height: 1,
            rgb: vec![v; 6],
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn folder_never_overwrites() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/sub");
        let target = OutputTarget::Dir(dir.clone());
        let a = save_png(&target, "20260101-000000", &recipe(1, 0), "m", &image(1)).unwrap();
        let b = save_png(&target, "20260101-000000", &recipe(1, 0), "m", &image(2)).unwrap();
        let c = save_png(&target, "20260101-000000", &recipe(1, 0), "m", &image(3)).unwrap();
        assert_eq!(
            listing(&dir),
            vec![
                "20260101-000000-7-0.png",
                "20260101-000000-7-0_2.png",
                "20260101-000000-7-0_3.png"
            ]
        );
        assert_ne!(std::fs::read(a).unwrap(), std::fs::read(&b).unwrap());
        assert_ne!(std::fs::read(b).unwrap(), std::fs::read(c).unwrap());
    }

    #[test]
    fn file_target_replaces_and_suffixes_batches() {
        let root = tempfile::tempdir().unwrap();
        let target = OutputTarget::File(root.path().join("fox.png"));
        save_png(&target, "s", &recipe(1, 0), "m", &image(1)).unwrap();
        let p = save_png(&target, "s", &recipe(1, 0), "m", &image(2)).unwrap();
        assert_eq!(p, root.path().join("fox.png"));
        for i in 0..2 {
            save_png(&target, "s", &recipe(2, i), "m", &image(3)).unwrap();
        }
        assert_eq!(
            listing(root.path()),
            vec!["fox-1.png", "fox-2.png", "fox.png"]
        );
        let r = png::read_recipe(&root.path().join("fox-2.png"))
            .unwrap()
            .unwrap();
        assert_eq!(r, recipe(2, 1));
    }

    #[test]
    fn failed_encode_writes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = OutputTarget::Dir(root.path().to_path_buf());
        let bad = Image {
            width: 3,
            height: 3,
            rgb: vec![0; 5],
        };
        assert!(save_png(&target, "s", &recipe(1, 0), "m", &bad).is_err());
        assert!(listing(root.path()).is_empty());
    }
}
