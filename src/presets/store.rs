//! The user's presets: one TOML file per preset in `<config>/presets/`, over the built-ins.
//! Every change happens under one lock for the folder and lands by atomic rename, so several
//! easel processes at once lose nothing; a replaced or removed file is first copied to easel's
//! trash. A file that does not parse is reported and skipped, never rewritten or deleted.
use super::builtin::{builtin, builtin_label, BUILTINS};
use super::error::{PresetError, Result};
use super::file::{line_col, Preset};
use super::name::check_name;
use crate::paths::Paths;
use crate::store::{lock, write_atomic, FileLock};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    BuiltIn,
    User {
        path: PathBuf,
        /// A built-in of the same name exists and this file hides it.
        shadows_builtin: bool,
    },
}

/// One preset as found: where it lives, its text, and what it says.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub source: Source,
    pub text: String,
    pub preset: Preset,
}

impl Entry {
    pub fn is_builtin(&self) -> bool {
        self.source == Source::BuiltIn
    }

    /// The file's path, or `built-in preset NAME`.
    pub fn location(&self) -> String {
        match &self.source {
            Source::BuiltIn => builtin_label(&self.name),
            Source::User { path, .. } => path.display().to_string(),
        }
    }
}

/// Every preset that loads, and a report for each file that does not.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub problems: Vec<PresetError>,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub path: PathBuf,
    /// Where the file it replaced was kept.
    pub trashed: Option<PathBuf>,
    pub shadows_builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub trashed: PathBuf,
    /// The built-in of the same name, hidden until now, is back.
    pub builtin_visible: bool,
}

/// Where an edit starts from: the user's file, a built-in's text, or nothing yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditBase {
    User(Vec<u8>),
    BuiltIn(&'static str),
    New,
}

pub struct PresetStore {
    dir: PathBuf,
    trash: PathBuf,
}

impl PresetStore {
    pub fn new(dir: PathBuf, trash: PathBuf) -> Self {
        Self { dir, trash }
    }

    /// The presets under easel's config folder, with its trash in the data folder.
    pub fn open(paths: &Paths) -> Self {
        Self::new(paths.presets(), paths.data.join("trash").join("presets"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn trash_dir(&self) -> &Path {
        &self.trash
    }

    /// `<dir>/<name>.toml`, once the name is checked.
    pub fn user_path(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.dir.join(format!("{name}.toml")))
    }

    fn lock(&self) -> Result<FileLock> {
        let path = self.dir.join(".presets");
        lock(&path).map_err(|e| PresetError::io("lock", &path, e))
    }

    /// All presets by name: the user's files, then the built-ins they do not shadow. A user's
    /// file that is broken still shadows its built-in, so a preset never silently changes.
    pub fn list(&self) -> Listing {
        let mut listing = Listing::default();
        let mut user_names = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(dir) => {
                for entry in dir.flatten() {
                    let file_name = entry.file_name().to_string_lossy().into_owned();
                    let Some(stem) = file_name.strip_suffix(".toml") else {
                        continue;
                    };
                    if stem.starts_with('.') || !entry.path().is_file() {
                        continue;
                    }
                    let path = entry.path();
                    if let Err(e) = check_name(stem) {
                        listing.problems.push(PresetError::Invalid(format!(
                            "{}: skipped, its file name is not a usable preset name ({e}); rename the file",
                            path.display()
                        )));
                        continue;
                    }
                    user_names.push(stem.to_string());
                    match read_user(stem, &path) {
                        Ok(entry) => listing.entries.push(entry),
                        Err(e) => listing.problems.push(e),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => listing
                .problems
                .push(PresetError::io("read the folder", &self.dir, e)),
        }
        for (name, text) in BUILTINS {
            if user_names.iter().any(|u| u == name) {
                continue;
            }
            match Preset::parse(text, &builtin_label(name)) {
                Ok(preset) => listing.entries.push(Entry {
                    name: name.to_string(),
                    source: Source::BuiltIn,
                    text: text.to_string(),
                    preset,
                }),
                Err(e) => listing.problems.push(e),
            }
        }
        listing.entries.sort_by(|a, b| a.name.cmp(&b.name));
        listing
    }

    /// The preset `name`: the user's file if there is one (an error if it is broken), else the
    /// built-in.
    pub fn get(&self, name: &str) -> Result<Entry> {
        let path = self.user_path(name)?;
        if path.exists() {
            return read_user(name, &path);
        }
        match builtin(name) {
            Some(text) => Ok(Entry {
                name: name.to_string(),
                source: Source::BuiltIn,
                text: text.to_string(),
                preset: Preset::parse(text, &builtin_label(name))?,
            }),
            None => Err(PresetError::NotFound {
                name: name.to_string(),
                hint: self.hint(name),
            }),
        }
    }

    /// " (did you mean x?)" when a preset's name is close to `name`.
    fn hint(&self, name: &str) -> String {
        let lower = name.to_lowercase();
        let names: Vec<String> = self.list().entries.into_iter().map(|e| e.name).collect();
        names
            .iter()
            .find(|n| {
                let n = n.to_lowercase();
                n == lower || n.starts_with(&lower) || lower.starts_with(&n) || close(&n, &lower)
            })
            .map(|n| format!(" (did you mean {n}?)"))
            .unwrap_or_default()
    }

    /// Writes `preset` as `name`; an existing file of the user's is replaced only if `replace`.
    pub fn save(&self, name: &str, preset: &Preset, replace: bool) -> Result<Saved> {
        self.update(name, replace, |_| Ok(preset.clone()))
    }

    /// Writes what `make` returns, given the user's current preset `name` if it has one that
    /// parses; all under the lock, so nothing changes in between.
    pub fn update(
        &self,
        name: &str,
        replace: bool,
        make: impl FnOnce(Option<Preset>) -> Result<Preset>,
    ) -> Result<Saved> {
        let path = self.user_path(name)?;
        let _lock = self.lock()?;
        let old = read_bytes(&path)?;
        if old.is_some() && !replace {
            return Err(PresetError::Exists(name.to_string()));
        }
        let current = old.as_ref().and_then(|bytes| {
            let text = std::str::from_utf8(bytes).ok()?;
            Preset::parse(text, &path.display().to_string()).ok()
        });
        let text = make(current)?.to_toml(name);
        self.write_locked(name, &path, old.as_deref(), text.as_bytes())
    }

    /// Stores a preset file's text as it is (comments and all), once it parses.
    pub fn save_text(&self, name: &str, text: &str, replace: bool) -> Result<Saved> {
        let path = self.user_path(name)?;
        Preset::parse(text, &path.display().to_string())?;
        let _lock = self.lock()?;
        let old = read_bytes(&path)?;
        if old.is_some() && !replace {
            return Err(PresetError::Exists(name.to_string()));
        }
        self.write_locked(name, &path, old.as_deref(), text.as_bytes())
    }

    fn write_locked(
        &self,
        name: &str,
        path: &Path,
        old: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<Saved> {
        let trashed = match old {
            Some(old) if old != bytes => Some(self.keep_in_trash(name, old)?),
            _ => None,
        };
        write_atomic(path, bytes).map_err(|e| PresetError::io("write", path, e))?;
        Ok(Saved {
            path: path.to_path_buf(),
            trashed,
            shadows_builtin: builtin(name).is_some(),
        })
    }

    /// A copy of a file about to be replaced or removed, under a name that never collides.
    fn keep_in_trash(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let trash = &self.trash;
        let io = |e| PresetError::io("keep a copy in", trash, e);
        std::fs::create_dir_all(trash).map_err(io)?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{name}.{stamp}."))
            .suffix(".toml")
            .rand_bytes(4)
            .tempfile_in(trash)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.as_file().sync_all().map_err(io)?;
        let (_, path) = file.keep().map_err(|e| io(e.error))?;
        Ok(path)
    }

    /// Removes the user's preset `name` (a copy goes to the trash). Built-ins stay.
    pub fn remove(&self, name: &str) -> Result<Removed> {
        let path = self.user_path(name)?;
        let _lock = self.lock()?;
        let Some(old) = read_bytes(&path)? else {
            return Err(self.missing(name, "removed", String::new()));
        };
        let trashed = self.keep_in_trash(name, &old)?;
        std::fs::remove_file(&path).map_err(|e| PresetError::io("remove", &path, e))?;
        sync_dir(&self.dir);
        Ok(Removed {
            trashed,
            builtin_visible: builtin(name).is_some(),
        })
    }

    /// Renames the user's preset, keeping its file byte for byte (comments, unknown fields).
    pub fn rename(&self, old: &str, new: &str, replace: bool) -> Result<Saved> {
        let old_path = self.user_path(old)?;
        let new_path = self.user_path(new)?;
        if old == new {
            return Err(PresetError::Invalid(format!(
                "{old:?} is already called that"
            )));
        }
        let _lock = self.lock()?;
        let Some(bytes) = read_bytes(&old_path)? else {
            let advice = format!(
                "; copy it instead: easel preset export {old} | easel preset import - --name {new}"
            );
            return Err(self.missing(old, "renamed", advice));
        };
        let existing = read_bytes(&new_path)?;
        if existing.is_some() && !replace {
            return Err(PresetError::Exists(new.to_string()));
        }
        let saved = self.write_locked(new, &new_path, existing.as_deref(), &bytes)?;
        std::fs::remove_file(&old_path).map_err(|e| PresetError::io("remove", &old_path, e))?;
        sync_dir(&self.dir);
        Ok(saved)
    }

    /// What to start editing `name` from.
    pub fn edit_base(&self, name: &str) -> Result<EditBase> {
        let path = self.user_path(name)?;
        if let Some(bytes) = read_bytes(&path)? {
            return Ok(EditBase::User(bytes));
        }
        Ok(builtin(name).map_or(EditBase::New, EditBase::BuiltIn))
    }

    /// Stores an edited text (even one that does not parse: the user's work is never dropped),
    /// unless the file changed since the edit began; then the edit goes to the trash instead.
    pub fn finish_edit(&self, name: &str, base: &EditBase, text: &[u8]) -> Result<Saved> {
        let path = self.user_path(name)?;
        let _lock = self.lock()?;
        let now = read_bytes(&path)?;
        let expected = match base {
            EditBase::User(bytes) => Some(bytes.as_slice()),
            EditBase::BuiltIn(_) | EditBase::New => None,
        };
        if now.as_deref() != expected {
            let kept = self.keep_in_trash(name, text)?;
            return Err(PresetError::Invalid(format!(
                "{} changed while you were editing it, so it was left alone; your edit is kept in {}",
                path.display(),
                kept.display()
            )));
        }
        self.write_locked(name, &path, now.as_deref(), text)
    }

    fn missing(&self, name: &str, action: &'static str, advice: String) -> PresetError {
        if builtin(name).is_some() {
            let advice = if advice.is_empty() {
                format!(
                    "; hide it by saving your own {name} (`easel preset edit {name}` starts from a copy)"
                )
            } else {
                advice
            };
            PresetError::BuiltIn {
                name: name.to_string(),
                action,
                advice,
            }
        } else {
            PresetError::NotFound {
                name: name.to_string(),
                hint: self.hint(name),
            }
        }
    }
}

fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 2 || a.len().min(b.len()) < 4 {
        return false;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()] <= 2
}

fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PresetError::io("read", path, e)),
    }
}

/// A user's preset file, parsed; a file that is not UTF-8 is reported where it stops being so.
fn read_user(name: &str, path: &Path) -> Result<Entry> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| PresetError::io("read", path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = e.utf8_error().valid_up_to();
        let text = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
        let (line, column) = line_col(&text, good);
        PresetError::Parse {
            file: file.clone(),
            line,
            column,
            message: "this is not UTF-8 text; save the file as UTF-8".into(),
        }
    })?;
    let preset = Preset::parse(&text, &file)?;
    Ok(Entry {
        name: name.to_string(),
        source: Source::User {
            path: path.to_path_buf(),
            shadows_builtin: builtin(name).is_some(),
        },
        text,
        preset,
    })
}

/// Makes a removal durable; a failure here loses nothing, so it is not reported.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
