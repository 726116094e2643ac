//! The catalog: models known by name, each a Hugging Face repository pinned at a revision with
//! the exact files to fetch. Built-in entries come from models/catalog.toml (embedded); the
//! user's <config>/catalog.toml adds entries or replaces built-in ones of the same name.
use super::error::ModelError;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const BUILTIN: &str = include_str!("../../models/catalog.toml");

/// Extensions a catalog may fetch: weights as safetensors, configs and tokenizers as text.
const ALLOWED: &[&str] = &["safetensors", "json", "txt"];

#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub name: String,
    pub title: Option<String>,
    /// `owner/name` on the hub.
    pub repo: String,
    /// A commit hash, or a branch name (then what it points at when pulled).
    pub revision: String,
    /// What the entry says it is ("SDXL"); the pulled files' configs have the last word.
    pub version: Option<String>,
    /// Native width and height in pixels.
    pub resolution: Option<u32>,
    pub license: Option<String>,
    pub files: Vec<CatalogFile>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogFile {
    /// Path inside the repository, `/`-separated.
    pub path: String,
    /// Bytes, as the hub lists them; None when the catalog does not know.
    pub size: Option<u64>,
    /// A small file some snapshots lack; a 404 for it is not an error.
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn,
    User(PathBuf),
}

impl Origin {
    pub fn describe(&self) -> String {
        match self {
            Origin::BuiltIn => "easel's built-in catalog".into(),
            Origin::User(p) => p.display().to_string(),
        }
    }
}

impl CatalogEntry {
    /// The sum of the sizes the catalog knows, and whether it knows them all.
    pub fn known_size(&self) -> (u64, bool) {
        let sum = self.files.iter().filter_map(|f| f.size).sum();
        (sum, self.files.iter().all(|f| f.size.is_some()))
    }

    /// A single-file checkpoint entry (one .safetensors) rather than a diffusers folder.
    pub fn single_file(&self) -> Option<&str> {
        match self.files.as_slice() {
            [only] if only.path.ends_with(".safetensors") => Some(&only.path),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogToml {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default, rename = "model")]
    models: Vec<EntryToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryToml {
    name: String,
    #[serde(default)]
    title: Option<String>,
    repo: String,
    #[serde(default)]
    revision: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    resolution: Option<u32>,
    #[serde(default)]
    license: Option<String>,
    files: Vec<FileToml>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileToml {
    Path(String),
    Full {
        path: String,
        #[serde(default)]
        size: Option<u64>,
        #[serde(default)]
        optional: bool,
    },
}

/// The built-in entries, then the user's file's (replacing built-ins of the same name).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// Built-in entries plus those of `user` when that file exists.
    pub fn load(user: Option<&Path>) -> Result<Self, ModelError> {
        let mut entries = parse(BUILTIN, &Origin::BuiltIn)?;
        if let Some(path) = user.filter(|p| p.exists()) {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ModelError::io("read the catalog", path, e))?;
            for entry in parse(&text, &Origin::User(path.to_path_buf()))? {
                entries.retain(|e| e.name != entry.name);
                entries.push(entry);
            }
        }
        Ok(Self { entries })
    }

    pub fn builtin() -> Result<Self, ModelError> {
        Self::load(None)
    }

    pub fn get(&self, name: &str) -> Option<&CatalogEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The entry whose repository id is `repo` (users type either).
    pub fn by_repo(&self, repo: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|e| e.repo.eq_ignore_ascii_case(repo))
    }
}

/// Parses and checks a catalog file's text.
pub fn parse(text: &str, origin: &Origin) -> Result<Vec<CatalogEntry>, ModelError> {
    let bad = |message: String| ModelError::BadFile {
        path: match origin {
            Origin::BuiltIn => PathBuf::from("models/catalog.toml (built in)"),
            Origin::User(p) => p.clone(),
        },
        message,
    };
    let raw: CatalogToml = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if let Some(v) = raw.schema_version.filter(|v| *v != 1) {
        return Err(bad(format!(
            "schema_version {v} is newer than this easel understands (1): update easel"
        )));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for e in raw.models {
        let entry = CatalogEntry {
            name: e.name,
            title: e.title,
            repo: e.repo,
            revision: e.revision.unwrap_or_else(|| "main".into()),
            version: e.version,
            resolution: e.resolution,
            license: e.license,
            files: e
                .files
                .into_iter()
                .map(|f| match f {
                    FileToml::Path(path) => CatalogFile {
                        path,
                        size: None,
                        optional: false,
                    },
                    FileToml::Full {
                        path,
                        size,
                        optional,
                    } => CatalogFile {
                        path,
                        size,
                        optional,
                    },
                })
                .collect(),
            origin: origin.clone(),
        };
        check(&entry).map_err(|m| bad(format!("model {:?}: {m}", entry.name)))?;
        if !names.insert(entry.name.clone()) {
            return Err(bad(format!("model {:?} is listed twice", entry.name)));
        }
        out.push(entry);
    }
    Ok(out)
}

/// Names users type: letters, digits, `.`, `_`, `-`; not a path.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        || name.starts_with('.')
    {
        return Err(format!(
            "{name:?} is not a usable model name: use letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn check(entry: &CatalogEntry) -> Result<(), String> {
    check_name(&entry.name)?;
    let parts: Vec<&str> = entry.repo.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!(
            "repo {:?} is not a Hugging Face repository id (owner/name)",
            entry.repo
        ));
    }
    if entry.revision.is_empty() {
        return Err("revision is empty".into());
    }
    if entry.files.is_empty() {
        return Err("it lists no files".into());
    }
    let mut seen = BTreeSet::new();
    let mut weights = BTreeSet::new();
    for f in &entry.files {
        let p = &f.path;
        if p.is_empty()
            || p.starts_with('/')
            || p.contains('\\')
            || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!(
                "file {p:?} is not a plain path inside the repository"
            ));
        }
        let ext = p.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
        if !ALLOWED.contains(&ext) {
            return Err(format!(
                "file {p:?}: easel fetches only .safetensors weights and .json/.txt configs \
                 (pickled .bin/.ckpt files can run code, and other formats are not used)"
            ));
        }
        if !seen.insert(p.as_str()) {
            return Err(format!("file {p:?} is listed twice"));
        }
        if ext == "safetensors" {
            // One format per component: `unet/x.safetensors` and `unet/x.fp16.safetensors`
            // are the same weights twice.
            let stem = p.trim_end_matches(".safetensors").trim_end_matches(".fp16");
            if !weights.insert(stem.to_string()) {
                return Err(format!(
                    "{stem} is listed in two formats: keep one (the fp16 file where there is one)"
                ));
            }
        }
    }
    if entry.single_file().is_none() && !seen.contains("model_index.json") {
        return Err("a diffusers model needs model_index.json in its files".into());
    }
    Ok(())
}
