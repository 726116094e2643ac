//! Textual-inversion embeddings: learned token vectors, used by name in a prompt.
//!
//! Files are `.safetensors` in either common layout:
//! - AUTOMATIC1111's: one tensor `emb_params` of `[vectors, dim]`; the prompt names it by its
//!   file stem (`my-style.safetensors` is `my-style`).
//! - diffusers' (`learned_embeds.safetensors`): one tensor named by its token, `[dim]` or
//!   `[vectors, dim]`; the prompt names it by that token (`<cat-toy>`) or by the file stem.
//! - SDXL's: `clip_l` and `clip_g`, one set of vectors per text encoder, named by the file
//!   stem; each encoder loads its own part ([`Part`]).
//!
//! As in A1111, a name is found in the prompt by its token ids (the name tokenized like any
//! text), and its vectors take the place of those tokens. Files are indexed when loaded, but a
//! file's problems (malformed, made for another model, a pickle) are errors only when a prompt
//! uses its name; a name no file has is just text.
use crate::engine::error::{EngineError, Result};
use crate::engine::tokenizer::ClipTokenizer;
use crate::engine::weights::Weights;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Extensions of pickle files, which can run code when loaded: never opened.
const PICKLE_EXTENSIONS: &[&str] = &["pt", "pth", "bin", "ckpt"];
/// Folders are searched this deep (A1111 walks its embeddings folder recursively).
const MAX_DEPTH: usize = 8;
/// One embedding cannot take more vectors than a chunk has token positions.
pub const MAX_VECTORS: i64 = 75;

struct EmbeddingFile {
    path: PathBuf,
    /// `[vectors, dim]` as fp32 on the CPU, or why this file cannot be used.
    vectors: std::result::Result<Tensor, String>,
}

struct Name {
    text: String,
    ids: Vec<i64>,
    file: usize,
}

/// Where a prompt's tokens name an embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The embedding's index in its [`TextualInversions`].
    pub file: usize,
    /// How many prompt tokens the name takes.
    pub name_tokens: usize,
    /// How many vectors replace them.
    pub vectors: usize,
}

/// Which vectors of a file an index reads: a one-encoder model's, or one of SDXL's two sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `emb_params` or a token's tensor, for SD 1.x/2.x.
    Single,
    /// SDXL's `clip_l` (the first text encoder's vectors).
    ClipL,
    /// SDXL's `clip_g` (the second text encoder's vectors).
    ClipG,
}

/// The embeddings a render may use, indexed by name.
#[derive(Default)]
pub struct TextualInversions {
    files: Vec<EmbeddingFile>,
    /// Longest names first, so that the longest match wins, as in A1111.
    names: Vec<Name>,
}

impl TextualInversions {
    pub fn none() -> Self {
        Self::default()
    }

    /// Indexes the `.safetensors` files among `paths` (files, or folders searched recursively)
    /// for a text encoder of width `dim`. A path that does not exist is an error.
    pub fn load(paths: &[PathBuf], tokenizer: &ClipTokenizer, dim: i64) -> Result<Self> {
        Self::load_part(paths, tokenizer, dim, Part::Single)
    }

    /// As [`load`](Self::load), reading `part` of each file: SDXL's encoders each index the
    /// same files, so the same names find the same file in both.
    pub fn load_part(
        paths: &[PathBuf],
        tokenizer: &ClipTokenizer,
        dim: i64,
        part: Part,
    ) -> Result<Self> {
        let mut found = Vec::new();
        for path in paths {
            if path.is_dir() {
                walk(path, 0, &mut found)?;
            } else if path.is_file() {
                found.push(path.clone());
            } else {
                return Err(EngineError::Invalid(format!(
                    "textual-inversion embeddings: {} does not exist; pass --embeddings with a folder of .safetensors embeddings",
                    path.display()
                )));
            }
        }
        let mut this = Self::default();
        for path in found {
            let ext = extension(&path);
            let (vectors, token) = if ext == "safetensors" {
                read_embedding(&path, dim, part)
            } else if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
                (
                    Err(format!(
                        "is a pickle file (.{ext}), which can run code when loaded, so easel never opens it: \
                         convert it once to .safetensors with a tool you trust \
                         (one tensor `emb_params` of [vectors, {dim}])"
                    )),
                    None,
                )
            } else {
                continue;
            };
            let file = this.files.len();
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            this.files.push(EmbeddingFile { path, vectors });
            for text in std::iter::once(stem).chain(token) {
                this.add_name(text, file, tokenizer);
            }
        }
        this.names
            .sort_by(|a, b| b.ids.len().cmp(&a.ids.len()).then(a.file.cmp(&b.file)));
        Ok(this)
    }

    /// A name that is taken already keeps its usable file (then the first one found).
    fn add_name(&mut self, text: String, file: usize, tokenizer: &ClipTokenizer) {
        let ids = tokenizer.tokenize(&text);
        if ids.is_empty() {
            return;
        }
        let usable = |f: usize| self.files[f].vectors.is_ok();
        match self.names.iter().position(|n| n.text == text) {
            Some(i) if !usable(self.names[i].file) && usable(file) => self.names[i].file = file,
            Some(_) => {}
            None => self.names.push(Name { text, ids, file }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every name a prompt can use, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.iter().map(|n| n.text.as_str()).collect();
        v.sort_unstable();
        v
    }

    /// The embedding whose name starts at `tokens[position]`, if any: the longest name wins.
    /// Naming a file that cannot be used is an error that names the file.
    pub fn find_at(&self, tokens: &[i64], position: usize) -> Result<Option<Found>> {
        let rest = &tokens[position.min(tokens.len())..];
        let Some(name) = self.names.iter().find(|n| rest.starts_with(&n.ids)) else {
            return Ok(None);
        };
        let vectors = self.vectors(name.file)?;
        Ok(Some(Found {
            file: name.file,
            name_tokens: name.ids.len(),
            vectors: vectors.size()[0] as usize,
        }))
    }

    /// The `[vectors, dim]` fp32 vectors of an embedding.
    pub fn vectors(&self, file: usize) -> Result<&Tensor> {
        let entry = self.files.get(file).ok_or_else(|| {
            EngineError::Invalid(format!("no textual-inversion embedding {file}"))
        })?;
        entry.vectors.as_ref().map_err(|reason| {
            EngineError::Invalid(format!(
                "textual-inversion embedding {} {reason}",
                entry.path.display()
            ))
        })
    }

    pub fn path(&self, file: usize) -> Option<&Path> {
        self.files.get(file).map(|f| f.path.as_path())
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default()
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| EngineError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(&path, depth + 1, out)?;
            }
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// The vectors of one `.safetensors` embedding, and the token a diffusers-style file names.
fn read_embedding(
    path: &Path,
    dim: i64,
    part: Part,
) -> (std::result::Result<Tensor, String>, Option<String>) {
    let weights = match Weights::open(&[path.to_path_buf()], Device::Cpu, Kind::Float) {
        Ok(w) => w,
        Err(e) => return (Err(format!("cannot be read: {e}")), None),
    };
    let mut names: Vec<&str> = weights.names().collect();
    names.sort_unstable();
    if part != Part::Single {
        return (read_sdxl(&weights, &names, dim, part), None);
    }
    let (key, token) = match names[..] {
        _ if names.contains(&"emb_params") => ("emb_params", None),
        ["clip_g", "clip_l"] => {
            return (
                Err("is an SDXL embedding (clip_l and clip_g vectors); this model has one CLIP text encoder".into()),
                None,
            )
        }
        [only] => (only, Some(only.to_string())),
        _ => {
            return (
                Err(format!(
                    "holds {} tensors ({}), not a textual-inversion embedding: expected one tensor, `emb_params` or a token's vectors",
                    names.len(),
                    names.iter().take(4).copied().collect::<Vec<_>>().join(", ")
                )),
                None,
            )
        }
    };
    (vectors_of(&weights, key, dim), token)
}

/// One encoder's vectors of an SDXL embedding; both encoders must get as many, or the two
/// would cut a prompt into different chunks.
fn read_sdxl(
    weights: &Weights,
    names: &[&str],
    dim: i64,
    part: Part,
) -> std::result::Result<Tensor, String> {
    if names != ["clip_g", "clip_l"] {
        return Err(format!(
            "is not an SDXL embedding (it holds {}): SDXL models need one with `clip_l` and `clip_g` vectors, \
             as SDXL textual inversions are saved",
            names.iter().take(4).copied().collect::<Vec<_>>().join(", ")
        ));
    }
    let (key, other) = match part {
        Part::ClipG => ("clip_g", "clip_l"),
        _ => ("clip_l", "clip_g"),
    };
    let rows = |k: &str| {
        let shape = weights.shape_of(k).unwrap_or_default();
        if shape.len() == 2 {
            shape[0]
        } else {
            1
        }
    };
    if rows(key) != rows(other) {
        return Err(format!(
            "has {} clip_l vectors but {} clip_g vectors; SDXL needs as many of each",
            rows("clip_l"),
            rows("clip_g")
        ));
    }
    vectors_of(weights, key, dim)
}

fn vectors_of(weights: &Weights, key: &str, dim: i64) -> std::result::Result<Tensor, String> {
    let shape = weights.shape_of(key).unwrap_or_default();
    let (n, d) = match shape[..] {
        [d] => (1, d),
        [n, d] => (n, d),
        _ => {
            return Err(format!(
                "has a tensor {key} of shape {shape:?}: expected [vectors, {dim}] or [{dim}]"
            ))
        }
    };
    if d != dim {
        return Err(format!(
            "has vectors of width {d}, but this model's text encoder is {dim} wide: it was made for another model family"
        ));
    }
    if !(1..=MAX_VECTORS).contains(&n) {
        return Err(format!(
            "has {n} vectors; an embedding has 1 to {MAX_VECTORS}"
        ));
    }
    let t = weights.read_raw(key).map_err(|e| e.to_string())?;
    if !t.is_floating_point() {
        return Err(format!(
            "holds {:?} values, not floating-point vectors",
            t.kind()
        ));
    }
    Ok(t.to_kind(Kind::Float).reshape([n, d]))
}
