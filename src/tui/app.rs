//! The studio's state: everything the screen shows, and nothing that does I/O.
use super::editor::Editor;
use super::params::{Field, Params};
use crate::worker::Picture;
use std::path::PathBuf;
use std::time::Instant;

/// How many finished images the strip keeps.
pub const STRIP_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Prompt,
    Negative,
    Params,
    Queue,
}

impl Focus {
    pub const CYCLE: &'static [Focus] =
        &[Focus::Prompt, Focus::Negative, Focus::Params, Focus::Queue];
}

#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Queued,
    Loading,
    Rendering {
        image: u32,
        images: u32,
        step: usize,
        steps: usize,
    },
    Done,
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueItem {
    pub id: u64,
    pub prompt: String,
    pub count: u32,
    pub seed: Option<u64>,
    /// What kind of render beyond text-to-image ("img2img 0.75", "inpaint 0.5").
    pub tag: Option<String>,
    pub state: JobState,
    /// Set while a cancel is on its way to the worker.
    pub cancelling: bool,
    pub paths: Vec<PathBuf>,
    pub started: Option<Instant>,
}

impl QueueItem {
    pub fn is_active(&self) -> bool {
        matches!(
            self.state,
            JobState::Queued | JobState::Loading | JobState::Rendering { .. }
        )
    }
}

/// A finished image in the strip.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultItem {
    pub job: u64,
    pub path: PathBuf,
    pub picture: Picture,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub level: Level,
}

/// A preset as the presets panel lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetRow {
    pub name: String,
    pub builtin: bool,
    /// What it sets, in words ("steps 30, cfg 5").
    pub summary: String,
}

/// A past render as the gallery lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct GalleryRow {
    pub path: PathBuf,
    pub time: String,
    pub recipe: crate::recipe::Recipe,
    pub favourite: bool,
}

/// A model as the picker lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// What the model field takes: a catalog or registered name, or a name on the remote host.
    pub name: String,
    /// Version, size, where it is: one line.
    pub detail: String,
    /// Ready to render; otherwise `hint` says what to do.
    pub ready: bool,
    pub default: bool,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    None,
    Help,
    /// Ctrl-S: the name to save the current settings as.
    SavePreset(Editor),
    Presets {
        filter: Editor,
        selected: usize,
        /// Asked before deleting: the name awaiting y/n.
        confirm_delete: Option<String>,
        /// The new name being typed for the selected preset (F2).
        rename: Option<Editor>,
    },
    Gallery {
        filter: Editor,
        selected: usize,
        /// Asked before moving an image to the trash.
        confirm_delete: Option<PathBuf>,
    },
    /// The model picker: catalog and registered models (the host's, over --remote).
    Models {
        filter: Editor,
        selected: usize,
    },
}

/// What the status bar shows about the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStatus {
    pub device: Option<String>,
    pub dtype: Option<String>,
    pub model: Option<String>,
    pub loading: Option<String>,
    /// The component loading now and the share of the load done.
    pub load_stage: Option<(String, f32)>,
    /// The loaded model's native size.
    pub native: Option<(u32, u32)>,
    pub rss_mb: Option<u64>,
    /// On CUDA: what this process holds on the GPU, and the GPU's total, in MB.
    pub vram_mb: Option<(u64, u64)>,
    /// Steps per second of the running job, and the seconds its image still needs.
    pub it_s: Option<f64>,
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub prompt: Editor,
    pub negative: Editor,
    pub params: Params,
    pub focus: Focus,
    pub field: Field,
    /// Text being typed into the selected parameter (Enter applies it).
    pub field_input: Option<String>,
    /// Why the last value typed into a parameter was refused.
    pub field_error: Option<String>,
    pub queue: Vec<QueueItem>,
    pub queue_selected: usize,
    pub next_id: u64,
    pub results: Vec<ResultItem>,
    /// The result shown (index into `results`), and the one compared with it (A/B).
    pub shown: usize,
    pub compare: Option<usize>,
    /// The latest step preview of the running job.
    pub live: Option<Picture>,
    pub last_seed: Option<u64>,
    pub status: EngineStatus,
    pub message: Option<Message>,
    pub overlay: Overlay,
    pub presets: Vec<PresetRow>,
    pub gallery: Vec<GalleryRow>,
    /// What the model picker lists (None until it was read).
    pub models: Option<Vec<ModelRow>>,
    pub token_count: (usize, usize),
    pub quit: bool,
    /// The preview fills the screen.
    pub zoom: bool,
    /// The full-screen preview's magnification and pan (fit when not full screen).
    pub magnify: super::zoom::Zoom,
    /// When the current step's timing started (for it/s).
    pub step_clock: Option<(Instant, usize)>,
}

impl App {
    pub fn new(params: Params, prompt: &str, negative: &str) -> Self {
        Self {
            prompt: Editor::new(prompt),
            negative: Editor::new(negative),
            params,
            focus: Focus::Prompt,
            field: Field::Model,
            field_input: None,
            field_error: None,
            queue: Vec::new(),
            queue_selected: 0,
            next_id: 1,
            results: Vec::new(),
            shown: 0,
            compare: None,
            live: None,
            last_seed: None,
            status: EngineStatus::default(),
            message: None,
            overlay: Overlay::None,
            presets: Vec::new(),
            gallery: Vec::new(),
            models: None,
            token_count: (0, 0),
            quit: false,
            zoom: false,
            magnify: super::zoom::Zoom::default(),
            step_clock: None,
        }
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            level: Level::Info,
        });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.message = Some(Message {
            text: text.into(),
            level: Level::Error,
        });
    }

    pub fn job(&mut self, id: u64) -> Option<&mut QueueItem> {
        self.queue.iter_mut().find(|j| j.id == id)
    }

    /// The job the worker is on (the first active one: the worker runs jobs in order).
    pub fn running(&self) -> Option<&QueueItem> {
        self.queue.iter().find(|j| {
            matches!(j.state, JobState::Loading | JobState::Rendering { .. }) && !j.cancelling
        })
    }

    /// The presets matching the panel's filter.
    pub fn filtered_presets(&self) -> Vec<&PresetRow> {
        let filter = match &self.overlay {
            Overlay::Presets { filter, .. } => filter.text().to_lowercase(),
            _ => String::new(),
        };
        self.presets
            .iter()
            .filter(|p| filter.is_empty() || p.name.to_lowercase().contains(&filter))
            .collect()
    }

    /// The models matching the picker's filter: ready ones first, then the rest, each in
    /// the listing's order.
    pub fn filtered_models(&self) -> Vec<&ModelRow> {
        let filter = match &self.overlay {
            Overlay::Models { filter, .. } => filter.text().to_lowercase(),
            _ => String::new(),
        };
        let mut rows: Vec<&ModelRow> = self
            .models
            .iter()
            .flatten()
            .filter(|m| {
                filter.is_empty()
                    || m.name.to_lowercase().contains(&filter)
                    || m.detail.to_lowercase().contains(&filter)
            })
            .collect();
        rows.sort_by_key(|m| !m.ready);
        rows
    }

    /// The gallery rows matching its search (prompt, negative prompt, model), favourites first.
    pub fn filtered_gallery(&self) -> Vec<&GalleryRow> {
        let filter = match &self.overlay {
            Overlay::Gallery { filter, .. } => filter.text().to_lowercase(),
            _ => String::new(),
        };
        let mut rows: Vec<&GalleryRow> = self
            .gallery
            .iter()
            .filter(|g| {
                let r = &g.recipe;
                filter.is_empty()
                    || [&r.prompt, &r.negative_prompt, &r.model]
                        .iter()
                        .any(|f| f.to_lowercase().contains(&filter))
            })
            .collect();
        rows.sort_by_key(|g| !g.favourite);
        rows
    }
}
