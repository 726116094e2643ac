//! The studio's session file: the editors and parameters, written atomically after changes
//! and read at the next start, so no work is lost to a quit, a crash or a dropped connection.
use super::params::Params;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    pub prompt: String,
    pub negative_prompt: String,
    pub params: Params,
}

impl Session {
    /// The saved session; a missing file is a fresh start, an unreadable one a warning.
    pub fn load(path: &Path) -> (Self, Option<String>) {
        match std::fs::read_to_string(path) {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(s) => (s, None),
                Err(e) => (
                    Self::default(),
                    Some(format!(
                        "the session {} could not be read ({e}); starting fresh",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Self::default(), None),
            Err(e) => (
                Self::default(),
                Some(format!("cannot read the session {}: {e}", path.display())),
            ),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        crate::store::write_atomic(path, text.as_bytes())
            .map_err(|e| format!("cannot save the session {}: {e}", path.display()))
    }
}
