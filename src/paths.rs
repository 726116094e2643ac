//! Where easel keeps the user's files. `EASEL_HOME` moves everything (tests, portable setups);
//! otherwise the platform's config and data folders (`$XDG_CONFIG_HOME/easel`, ...).
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// Presets, keymaps, wildcards, settings: what a user edits.
    pub config: PathBuf,
    /// History, sessions, trash: what easel writes for itself.
    pub data: PathBuf,
}

impl Paths {
    pub fn discover() -> Result<Self, String> {
        if let Some(home) = std::env::var_os("EASEL_HOME").filter(|h| !h.is_empty()) {
            let home = PathBuf::from(home);
            return Ok(Self {
                config: home.join("config"),
                data: home.join("data"),
            });
        }
        let dirs = directories::ProjectDirs::from("", "", "easel").ok_or(
            "cannot find a home folder for easel's settings: set EASEL_HOME to a folder easel may use",
        )?;
        Ok(Self {
            config: dirs.config_dir().to_path_buf(),
            data: dirs.data_dir().to_path_buf(),
        })
    }

    pub fn presets(&self) -> PathBuf {
        self.config.join("presets")
    }

    pub fn wildcards(&self) -> PathBuf {
        self.config.join("wildcards")
    }

    /// Textual-inversion embeddings that prompts use by name.
    pub fn embeddings(&self) -> PathBuf {
        self.config.join("embeddings")
    }

    /// LoRAs that prompts name with `<lora:NAME:WEIGHT>` (NAME.safetensors).
    pub fn loras(&self) -> PathBuf {
        self.config.join("loras")
    }

    /// Models registered with `easel models add` and the default model (written by easel).
    pub fn models_registry(&self) -> PathBuf {
        self.config.join("models.toml")
    }

    /// The user's own catalog entries, in the format of the built-in models/catalog.toml.
    pub fn user_catalog(&self) -> PathBuf {
        self.config.join("catalog.toml")
    }

    /// One record per pulled catalog model: where its files are and whether it is complete.
    pub fn pulls(&self) -> PathBuf {
        self.data.join("models")
    }

    pub fn history(&self) -> PathBuf {
        self.data.join("history.jsonl")
    }
}
