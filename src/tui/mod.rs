//! The studio: a terminal UI to write, tune, render and compare. State and `update` are pure
//! (app.rs, update.rs); this file is the runtime that owns the terminal, carries out effects
//! and feeds worker events back. It never touches tch: the worker owns the engine.
pub mod app;
pub mod editor;
pub mod gallery;
pub mod images;
pub mod keymap;
pub mod models;
pub mod open;
pub mod params;
pub mod presets;
pub mod session;
pub mod terminal;
pub mod tokens;
pub mod update;
pub mod view;
pub mod weight;
pub mod zoom;

use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::paths::Paths;
use crate::presets::PresetStore;
use crate::worker::{Worker, WorkerConfig, WorkerHandle};
use app::App;
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use images::{Graphics, Images};
use keymap::Keymap;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use session::Session;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use update::{update, Action, Effect};

/// The redraw budget: input and worker events are looked at least this often.
const FRAME: Duration = Duration::from_millis(50);
/// How soon after a change the session file is rewritten.
const AUTOSAVE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct TuiOptions {
    pub model: Option<PathBuf>,
    pub presets: Vec<String>,
    pub graphics: Graphics,
    /// A model to start with when none is chosen (scripts/run offers the tiny test model).
    pub demo_model: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub device: DeviceChoice,
    pub dtype: DtypeChoice,
    /// Render on another host over ssh (when `remote.remote` is set).
    pub remote: crate::remote::RemoteArgs,
    /// TAESD for the step previews (a folder on the host with --remote).
    pub preview_decoder: Option<PathBuf>,
    /// `--low-memory`, `--vae-tiling`, `--fast-decoder` (sent to a remote worker too).
    pub memory: crate::cli::memory_flags::MemoryArgs,
}

/// Everything the studio starts from, without the terminal (tests build this too).
pub struct Studio {
    pub app: App,
    pub keymap: Keymap,
    pub session_path: Option<PathBuf>,
    pub store: Option<PresetStore>,
    pub paths: Option<Paths>,
}

impl Studio {
    pub fn open(options: &TuiOptions) -> Result<Self, String> {
        let paths = Paths::discover().ok();
        let session_path = paths.as_ref().map(|p| p.data.join("session.json"));
        let (session, warning) = match &session_path {
            Some(p) => Session::load(p),
            None => (Session::default(), None),
        };
        let keymap_path = paths.as_ref().map(|p| p.config.join("keymap.toml"));
        let keymap_text = keymap_path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok());
        let keymap = Keymap::new(keymap_text.as_deref()).map_err(|e| {
            let path = keymap_path
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!("{e}\n  in {path}: fix it, or move it away to use the default keys")
        })?;
        let mut app = App::new(session.params, &session.prompt, &session.negative_prompt);
        if let Some(w) = warning {
            app.error(w);
        }
        if let Some(m) = &options.model {
            app.params.model = Some(m.display().to_string());
        }
        if app.params.model.is_none() {
            // `easel models default NAME` comes before the demo model.
            app.params.model = crate::models::default_name().ok().flatten();
        }
        if app.params.model.is_none() {
            if let Some(demo) = &options.demo_model {
                app.params.model = Some(demo.display().to_string());
                app.info(format!(
                    "no model chosen: using the tiny random-weight demo model {} (it paints noise); \
                     set a real one in Parameters > model",
                    demo.display()
                ));
            } else {
                app.info("no model yet: Tab to Parameters > model, type a name from `easel models list`, a diffusers folder or a .safetensors file, Enter");
            }
        }
        let store = paths.as_ref().map(PresetStore::open);
        if let Some(store) = &store {
            for name in &options.presets {
                let entry = store.get(name).map_err(|e| e.to_string())?;
                update(
                    &mut app,
                    Action::PresetLoaded {
                        name: name.clone(),
                        patch: entry.preset.patch,
                    },
                );
            }
        }
        Ok(Self {
            app,
            keymap,
            session_path,
            store,
            paths,
        })
    }

    fn session(&self) -> Session {
        Session {
            prompt: self.app.prompt.text().to_string(),
            negative_prompt: self.app.negative.text().to_string(),
            params: self.app.params.clone(),
        }
    }

    fn save_session(&self) -> Result<(), String> {
        let Some(path) = &self.session_path else {
            return Ok(());
        };
        self.session().save(path)
    }
}

/// Opens the studio on this terminal and runs until the user quits.
pub fn run(options: TuiOptions) -> Result<(), String> {
    let mut studio = Studio::open(&options)?;
    let local = || {
        Worker::spawn(WorkerConfig {
            device: options.device,
            dtype: options.dtype,
            out_dir: options.out_dir.clone(),
            history: studio.paths.as_ref().map(Paths::history),
            embeddings: studio
                .paths
                .as_ref()
                .map(Paths::embeddings)
                .filter(|p| p.is_dir())
                .into_iter()
                .collect(),
            lora_dir: studio.paths.as_ref().map(Paths::loras),
            preview_every: 1,
            preview_decoder: options.preview_decoder.clone(),
            memory: options.memory.requested(),
            fast_decoder: options.memory.fast_decoder.clone(),
            vae: None,
            model_config: None,
        })
        .map_err(|e| format!("cannot start the render worker: {e}"))
    };
    let history = studio.paths.as_ref().map(Paths::history);
    let (worker, connected): (Box<dyn WorkerHandle>, _) =
        match options.remote.options(&options.out_dir, history) {
            Some(remote) => {
                let remote = connect_remote(remote, &options)?;
                let summary = remote.summary();
                (Box::new(remote), Some(summary))
            }
            None => (Box::new(local()?), None),
        };
    if let Some(summary) = connected {
        studio.app.info(summary);
    }
    let stop =
        terminal::termination_flag().map_err(|e| format!("cannot watch for signals: {e}"))?;
    let guard =
        terminal::TerminalGuard::enter().map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let mut images = Images::probe(options.graphics);
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| format!("cannot set up the terminal: {e}"))?;
    let theme = view::Theme::from_env();
    // Building the tokenizer takes a moment: off the UI thread, so the first frame is not late.
    let mut counter_thread = Some(std::thread::spawn(tokens::TokenCounter::new));
    let mut counter: Option<tokens::TokenCounter> = None;
    let mut counted = String::from("\u{0}");
    let mut last_memory = Instant::now() - Duration::from_secs(10);
    let mut last_vram = Instant::now() - Duration::from_secs(10);
    let mut vram_probe: Option<std::thread::JoinHandle<Option<(u64, u64)>>> = None;
    let mut dirty = true;
    // Saved a moment after each change too, so a crash or a killed terminal loses little.
    let mut saved = studio.session();
    let mut last_save = Instant::now();
    // A panic here has restored the terminal (terminal.rs's hook): save the session still.
    let looped = std::panic::catch_unwind(AssertUnwindSafe(|| loop {
        let mut actions = Vec::new();
        // Drain a burst of input, then the worker's events, then draw once.
        // An error here means the terminal is gone (a closed pty): quit, saving the session,
        // instead of spinning on a poll that returns at once.
        match event::poll(FRAME) {
            Ok(true) => loop {
                match event::poll(Duration::ZERO) {
                    Ok(true) => match event::read() {
                        Ok(e) => actions.extend(term_action(&studio, e, &mut dirty)),
                        Err(_) => {
                            actions.push(Action::Quit);
                            break;
                        }
                    },
                    Ok(false) => break,
                    Err(_) => {
                        actions.push(Action::Quit);
                        break;
                    }
                }
            },
            Ok(false) => {}
            Err(_) => actions.push(Action::Quit),
        }
        while let Some(e) = worker.try_event() {
            actions.push(Action::Worker(e, Instant::now()));
        }
        if stop.load(Ordering::SeqCst) || terminal::hung_up() {
            actions.push(Action::Quit);
        }
        if last_memory.elapsed() > Duration::from_secs(1) {
            last_memory = Instant::now();
            if let Some(mb) = crate::memory::rss_mb() {
                actions.push(Action::Memory(mb));
            }
        }
        // nvidia-smi takes a moment: asked off the UI thread, every few seconds, on CUDA only.
        if vram_probe.as_ref().is_some_and(|t| t.is_finished()) {
            if let Some(vram) = vram_probe.take().and_then(|t| t.join().ok()) {
                actions.push(Action::Vram(vram));
            }
        }
        let cuda = studio
            .app
            .status
            .device
            .clone()
            .filter(|d| d.starts_with("cuda"));
        if let Some(device) = cuda {
            if vram_probe.is_none() && last_vram.elapsed() > Duration::from_secs(3) {
                last_vram = Instant::now();
                vram_probe = Some(std::thread::spawn(move || crate::memory::gpu_mb(&device)));
            }
        }
        let mut quit = false;
        for action in actions {
            dirty = true;
            let mut queue = update(&mut studio.app, action);
            while !queue.is_empty() {
                let effect = queue.remove(0);
                if effect == Effect::Quit {
                    quit = true;
                    continue;
                }
                if let Some(next) = perform(&studio, &*worker, effect) {
                    queue.extend(update(&mut studio.app, next));
                }
            }
        }
        if quit {
            break Ok(());
        }
        if last_save.elapsed() > AUTOSAVE {
            let now = studio.session();
            if now != saved {
                if let Err(e) = studio.save_session() {
                    studio.app.error(e);
                    dirty = true;
                }
                saved = now;
                last_save = Instant::now();
            }
        }
        if counter_thread.as_ref().is_some_and(|t| t.is_finished()) {
            counter = counter_thread.take().and_then(|t| t.join().ok());
            counted = String::from("\u{0}");
        }
        if let Some(counter) = &counter {
            if studio.app.prompt.text() != counted {
                counted = studio.app.prompt.text().to_string();
                let n = counter.count(&counted).unwrap_or(0);
                studio.app.token_count = (n, n.div_ceil(tokens::WINDOW).max(1));
                dirty = true;
            }
        }
        dirty |= images.poll();
        if dirty {
            dirty = false;
            if let Err(e) = term.draw(|f| {
                view::draw(
                    f,
                    &studio.app,
                    &studio.keymap.help,
                    Some(&mut images),
                    theme,
                )
            }) {
                break Err(format!("cannot draw: {e}"));
            }
        }
    }));
    let result = looped.unwrap_or_else(|_| {
        Err(
            "the studio crashed: this is a bug, please report it with the message above \
             (the prompt and settings are saved)"
                .into(),
        )
    });
    let saved = studio.save_session();
    drop(term);
    drop(guard);
    if !worker.shutdown_within(Duration::from_secs(3)) {
        // Still loading or writing: leave no half-written PNG behind as the process ends.
        crate::output::atomic::remove_inflight();
    }
    result.and(saved)
}

/// Connects before the terminal is taken over, so ssh may still ask for a password.
fn connect_remote(
    mut remote: crate::remote::RemoteOptions,
    options: &TuiOptions,
) -> Result<crate::remote::RemoteWorker, String> {
    remote.device = Some(options.device.to_string());
    remote.dtype = Some(options.dtype.to_string());
    remote.preview_every = 1;
    remote.memory = options.memory.requested();
    // Folders on the host, as `easel generate --remote` takes its file flags.
    let given = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    remote.host_files = crate::remote::protocol::HostFiles {
        fast_decoder: given(&options.memory.fast_decoder),
        preview_decoder: given(&options.preview_decoder),
        ..Default::default()
    };
    eprintln!("connecting to {}", remote.host);
    crate::remote::RemoteWorker::connect(&remote).map_err(|e| e.to_string())
}

fn term_action(studio: &Studio, e: TermEvent, dirty: &mut bool) -> Option<Action> {
    match e {
        TermEvent::Key(k) if k.kind != KeyEventKind::Release => {
            if k.code == KeyCode::F(12) && crate::fault::ui_f12() {
                panic!("injected UI panic (EASEL_INJECT_PANIC=ui-f12)");
            }
            if k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL) {
                return Some(Action::Quit);
            }
            let action = studio.keymap.action(k)?;
            // `?` opens help where it cannot be text.
            let typing = matches!(studio.app.focus, app::Focus::Prompt | app::Focus::Negative)
                || studio.app.field_input.is_some()
                || studio.app.overlay != app::Overlay::None;
            if action == Action::Insert('?') && !typing {
                return Some(Action::Help);
            }
            Some(action)
        }
        TermEvent::Paste(s) => Some(Action::Paste(s)),
        TermEvent::Resize(..) => {
            *dirty = true;
            None
        }
        _ => None,
    }
}

/// Carries out one effect; what it found comes back as the next action.
fn perform(studio: &Studio, worker: &dyn WorkerHandle, effect: Effect) -> Option<Action> {
    let no_store = || {
        Action::EffectFailed(
            "easel has no folder for its files (presets, history): set EASEL_HOME to a folder it may use".into(),
        )
    };
    match effect {
        Effect::Submit(job) => worker.submit(job).err().map(Action::EffectFailed),
        Effect::Cancel(id) => {
            worker.cancel(id);
            None
        }
        Effect::SaveSession => studio.save_session().err().map(Action::EffectFailed),
        Effect::ListPresets => Some(match &studio.store {
            Some(store) => Action::PresetList(presets::rows(store)),
            None => no_store(),
        }),
        Effect::LoadPreset(name) => Some(match &studio.store {
            Some(store) => match store.get(&name) {
                Ok(entry) => Action::PresetLoaded {
                    name,
                    patch: entry.preset.patch,
                },
                Err(e) => Action::EffectFailed(e.to_string()),
            },
            None => no_store(),
        }),
        Effect::SavePreset { name, patch } => Some(match &studio.store {
            Some(store) => {
                let preset = crate::presets::Preset {
                    patch,
                    ..Default::default()
                };
                match store.save(&name, &preset, false) {
                    Ok(_) => Action::PresetSaved(name),
                    Err(crate::presets::PresetError::Exists(_)) => Action::EffectFailed(format!(
                        "a preset named {name} exists: pick another name, or select it in the \
                         presets panel (Ctrl-P) and press Ctrl-U to update it"
                    )),
                    Err(e) => Action::EffectFailed(e.to_string()),
                }
            }
            None => no_store(),
        }),
        Effect::UpdatePreset { name, patch } => Some(match &studio.store {
            // Description, tags and fields this easel does not know stay as they were.
            Some(store) => match store.update(&name, true, |old| {
                Ok(crate::presets::Preset {
                    patch,
                    ..old.unwrap_or_default()
                })
            }) {
                Ok(_) => Action::PresetSaved(name),
                Err(e) => Action::EffectFailed(e.to_string()),
            },
            None => no_store(),
        }),
        Effect::RenamePreset { old, new } => Some(match &studio.store {
            Some(store) => match store.rename(&old, &new, false) {
                Ok(_) => Action::PresetRenamed { old, new },
                Err(e) => Action::EffectFailed(e.to_string()),
            },
            None => no_store(),
        }),
        Effect::DeletePreset(name) => Some(match &studio.store {
            Some(store) => match store.remove(&name) {
                Ok(_) => Action::PresetDeleted(name),
                Err(e) => Action::EffectFailed(e.to_string()),
            },
            None => no_store(),
        }),
        Effect::ListGallery => Some(match &studio.paths {
            Some(paths) => match gallery::rows(paths) {
                Ok(rows) => Action::GalleryList(rows),
                Err(e) => Action::EffectFailed(e),
            },
            None => no_store(),
        }),
        Effect::ListModels => Some(match worker.models() {
            Some((host, names)) => Action::ModelList(models::remote(&host, &names)),
            None => match models::local() {
                Ok(rows) => Action::ModelList(rows),
                Err(e) => Action::EffectFailed(e),
            },
        }),
        Effect::LoadEntry { path, recipe } => {
            let picture = gallery::decode(&path).ok();
            Some(Action::EntryLoaded {
                path,
                recipe,
                picture,
            })
        }
        Effect::TrashImage(path) => Some(match &studio.paths {
            Some(paths) => match gallery::trash(paths, &path) {
                Ok(trashed) => Action::Trashed { path, trashed },
                Err(e) => Action::EffectFailed(e),
            },
            None => no_store(),
        }),
        Effect::SetFavourite { path, on } => match &studio.paths {
            Some(paths) => gallery::set_favourite(paths, &path, on)
                .err()
                .map(Action::EffectFailed),
            None => Some(no_store()),
        },
        Effect::OpenFile(path) => Some(match open::open(&path) {
            Ok(message) => Action::Notice(message),
            Err(e) => Action::EffectFailed(e),
        }),
        Effect::Quit => None,
    }
}
