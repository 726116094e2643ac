//! The history index: one JSON line per generated image (`<data>/history.jsonl`), appended
//! under a lock so parallel easel processes lose nothing. Readers skip lines they cannot read
//! and say so; nothing ever rewrites the file.
use crate::recipe::Recipe;
use crate::store;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When the image was written, RFC 3339 with the local offset.
    pub time: String,
    /// The image file, absolute when it could be resolved.
    pub path: String,
    pub recipe: Recipe,
}

impl Entry {
    pub fn new(time: chrono::DateTime<chrono::Local>, path: &Path, recipe: &Recipe) -> Self {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Self {
            time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            path: path.display().to_string(),
            recipe: recipe.clone(),
        }
    }

    /// Whether `needle` (already lowercase) occurs in the prompt, negative prompt, prompt
    /// template or model, ignoring case.
    pub fn matches(&self, needle: &str) -> bool {
        let r = &self.recipe;
        [
            Some(&r.prompt),
            Some(&r.negative_prompt),
            Some(&r.model),
            r.prompt_template.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(needle))
    }

    fn timestamp(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        chrono::DateTime::parse_from_rfc3339(&self.time).ok()
    }
}

/// Appends one record to the history file.
pub fn record(history: &Path, entry: &Entry) -> io::Result<()> {
    let line = serde_json::to_string(entry).map_err(io::Error::other)?;
    store::append_line(history, &line)
}

/// What a read found: the entries in file order, and one warning per skipped line.
#[derive(Debug, Default)]
pub struct History {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

/// Reads the history file; a missing file is an empty history.
pub fn read(history: &Path) -> io::Result<History> {
    let text = match std::fs::read(history) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(History::default()),
        Err(e) => return Err(e),
    };
    let mut out = History::default();
    for (number, line) in (1..).zip(text.split(|b| *b == b'\n')) {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(|l| serde_json::from_str::<Entry>(l).map_err(|e| e.to_string()));
        match parsed {
            Ok(entry) => out.entries.push(entry),
            Err(e) => out.warnings.push(format!(
                "{} line {number} is not a history record ({e}); skipped",
                history.display()
            )),
        }
    }
    Ok(out)
}

/// Entries newest first, those matching `search` (case-insensitive), at most `limit`.
pub fn select(entries: &[Entry], search: Option<&str>, limit: Option<usize>) -> Vec<Entry> {
    let needle = search.map(str::to_lowercase);
    let mut chosen: Vec<(usize, &Entry)> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| needle.as_deref().is_none_or(|n| e.matches(n)))
        .collect();
    // Parallel writers may append slightly out of order: sort by time, then by file position.
    chosen.sort_by(|(ia, a), (ib, b)| b.timestamp().cmp(&a.timestamp()).then(ib.cmp(ia)));
    chosen
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(_, e)| e.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::schedulers::SamplerKind;
    use chrono::TimeZone;

    fn recipe(prompt: &str) -> Recipe {
        Recipe {
            schema_version: crate::recipe::SCHEMA_VERSION,
            model: "models/Tiny".into(),
            prompt: prompt.into(),
            negative_prompt: "blurry".into(),
            sampler: SamplerKind::Euler,
            schedule: Default::default(),
            timestep_spacing: None,
            steps: 2,
            cfg: 7.5,
            seed: 1,
            width: 64,
            height: 64,
            batch_size: 1,
            index: 0,
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

    fn at(secs: i64) -> chrono::DateTime<chrono::Local> {
        chrono::Local
            .timestamp_opt(1_800_000_000 + secs, 0)
            .unwrap()
    }

    #[test]
    fn records_read_back_newest_first_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.jsonl");
        assert!(read(&file).unwrap().entries.is_empty());
        for (i, prompt) in ["a Red fox", "a cat", "a red barn"].iter().enumerate() {
            record(
                &file,
                &Entry::new(at(i as i64), Path::new("x.png"), &recipe(prompt)),
            )
            .unwrap();
        }
        let h = read(&file).unwrap();
        assert_eq!(h.entries.len(), 3);
        assert!(
            h.entries[0].path.ends_with("x.png") && Path::new(&h.entries[0].path).is_absolute()
        );
        let prompts = |v: Vec<Entry>| v.into_iter().map(|e| e.recipe.prompt).collect::<Vec<_>>();
        assert_eq!(
            prompts(select(&h.entries, None, None)),
            ["a red barn", "a cat", "a Red fox"]
        );
        assert_eq!(
            prompts(select(&h.entries, Some("RED"), None)),
            ["a red barn", "a Red fox"]
        );
        assert_eq!(
            prompts(select(&h.entries, Some("red"), Some(1))),
            ["a red barn"]
        );
        assert_eq!(select(&h.entries, Some("BLURRY"), None).len(), 3);
        assert_eq!(select(&h.entries, Some("tiny"), None).len(), 3);
        assert!(select(&h.entries, Some("dog"), None).is_empty());
    }

    #[test]
    fn corrupt_lines_are_skipped_with_a_warning_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("history.jsonl");
        record(
            &file,
            &Entry::new(at(0), Path::new("a.png"), &recipe("one")),
        )
        .unwrap();
        let mut text = std::fs::read(&file).unwrap();
        text.extend_from_slice(b"{\"time\": \"half a li\n\xff\xfe\n\n");
        std::fs::write(&file, &text).unwrap();
        record(
            &file,
            &Entry::new(at(1), Path::new("b.png"), &recipe("two")),
        )
        .unwrap();
        let before = std::fs::read(&file).unwrap();
        let h = read(&file).unwrap();
        assert_eq!(h.entries.len(), 2);
        assert_eq!(h.warnings.len(), 2, "{:?}", h.warnings);
        assert!(h.warnings[0].contains("line 2"), "{:?}", h.warnings);
        assert!(h.warnings[1].contains("line 3"), "{:?}", h.warnings);
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }
}
