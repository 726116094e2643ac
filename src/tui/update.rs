//! Actions in, effects out: the studio's state machine. `update` performs no I/O; the runtime
//! (tui::run) carries out the effects and feeds results back as actions.
use super::app::{
    App, Focus, GalleryRow, JobState, ModelRow, Overlay, PresetRow, QueueItem, ResultItem,
    STRIP_LEN,
};
use super::editor::Editor;
use super::params::Field;
use crate::presets::merge_prompt;
use crate::recipe::{Recipe, RecipePatch};
use crate::worker::{Event, Job, Picture};
use std::path::PathBuf;
use std::time::Instant;

/// The weight step of Ctrl-Up/Down, as AUTOMATIC1111's default.
pub const WEIGHT_STEP: f64 = 0.1;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Insert(char),
    Paste(String),
    Backspace,
    Delete,
    DeleteWord,
    Enter,
    Left,
    Right,
    Up,
    Down,
    WordLeft,
    WordRight,
    Home,
    End,
    Undo,
    Redo,
    WeightUp,
    WeightDown,
    FocusNext,
    FocusPrev,
    Render,
    /// Esc: closes what is open, else cancels the running job.
    Cancel,
    Quit,
    Help,
    SavePreset,
    Presets,
    Gallery,
    /// The model picker.
    Models,
    /// In the presets panel: rename the selected preset.
    Rename,
    /// In the presets panel: store the current settings into the selected preset.
    UpdatePreset,
    /// Shows the preview over the whole screen (again: back).
    Zoom,
    /// In the gallery: mark or unmark the selected render as a favourite.
    Favourite,
    Open,
    /// An effect went well; the text says what happened.
    Notice(String),
    SeedLock,
    SeedReuse,
    ResultPrev,
    ResultNext,
    /// Pins the shown result as A for a side-by-side compare (again: off).
    Compare,
    Worker(Event, Instant),
    PresetList(Vec<PresetRow>),
    PresetLoaded {
        name: String,
        patch: RecipePatch,
    },
    PresetSaved(String),
    PresetDeleted(String),
    PresetRenamed {
        old: String,
        new: String,
    },
    GalleryList(Vec<GalleryRow>),
    ModelList(Vec<ModelRow>),
    /// A past render's recipe, loaded into the editors, and its pixels when readable.
    EntryLoaded {
        path: PathBuf,
        recipe: Recipe,
        picture: Option<Picture>,
    },
    Trashed {
        path: PathBuf,
        trashed: PathBuf,
    },
    /// An effect the runtime could not carry out, in words for the user.
    EffectFailed(String),
    Memory(u64),
    /// GPU memory (this process's, the device's total) in MB; None where it cannot be read.
    Vram(Option<(u64, u64)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Submit(Job),
    Cancel(u64),
    ListPresets,
    LoadPreset(String),
    SavePreset { name: String, patch: RecipePatch },
    DeletePreset(String),
    UpdatePreset { name: String, patch: RecipePatch },
    RenamePreset { old: String, new: String },
    ListGallery,
    ListModels,
    LoadEntry { path: PathBuf, recipe: Recipe },
    TrashImage(PathBuf),
    SetFavourite { path: PathBuf, on: bool },
    OpenFile(PathBuf),
    SaveSession,
    Quit,
}

pub fn update(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::Worker(event, at) => worker_event(app, event, at),
        Action::PresetList(rows) => {
            app.presets = rows;
            clamp_preset_selection(app);
            vec![]
        }
        Action::PresetLoaded { name, patch } => {
            load_preset(app, &name, &patch);
            vec![Effect::SaveSession]
        }
        Action::PresetSaved(name) => {
            app.info(format!("saved preset {name}"));
            vec![Effect::ListPresets]
        }
        Action::PresetRenamed { old, new } => {
            app.info(format!("renamed preset {old} to {new}"));
            vec![Effect::ListPresets]
        }
        Action::PresetDeleted(name) => {
            app.info(format!("deleted preset {name} (moved to the trash)"));
            vec![Effect::ListPresets]
        }
        Action::GalleryList(rows) => {
            app.gallery = rows;
            let n = app.filtered_gallery().len();
            if let Overlay::Gallery { selected, .. } = &mut app.overlay {
                *selected = (*selected).min(n.saturating_sub(1));
            }
            vec![]
        }
        Action::ModelList(rows) => {
            app.models = Some(rows);
            // The picker opens on the model in use.
            let current = app.params.model.clone();
            let at = app
                .filtered_models()
                .iter()
                .position(|m| Some(&m.name) == current.as_ref());
            if let Overlay::Models { selected, .. } = &mut app.overlay {
                *selected = at.unwrap_or(0);
            }
            vec![]
        }
        Action::EntryLoaded {
            path,
            recipe,
            picture,
        } => {
            app.prompt.set_text(&recipe.prompt);
            app.negative.set_text(&recipe.negative_prompt);
            app.params.load_recipe(&recipe);
            if let Some(picture) = picture {
                app.results.insert(
                    0,
                    ResultItem {
                        job: 0,
                        path: path.clone(),
                        picture,
                    },
                );
                app.results.truncate(STRIP_LEN);
                app.shown = 0;
                app.compare = None;
            }
            app.info(format!("loaded the recipe of {}", path.display()));
            vec![Effect::SaveSession]
        }
        Action::Trashed { path, trashed } => {
            app.gallery.retain(|g| g.path != path);
            let n = app.filtered_gallery().len();
            if let Overlay::Gallery { selected, .. } = &mut app.overlay {
                *selected = (*selected).min(n.saturating_sub(1));
            }
            app.results.retain(|r| r.path != path);
            app.shown = app.shown.min(app.results.len().saturating_sub(1));
            app.compare = None;
            app.info(format!("moved {} to {}", path.display(), trashed.display()));
            vec![]
        }
        Action::EffectFailed(text) => {
            app.error(text);
            vec![]
        }
        Action::Notice(text) => {
            app.info(text);
            vec![]
        }
        Action::Memory(mb) => {
            app.status.rss_mb = Some(mb);
            vec![]
        }
        Action::Vram(vram) => {
            app.status.vram_mb = vram;
            vec![]
        }
        Action::Quit => quit(app),
        Action::Help => {
            app.overlay = match app.overlay {
                Overlay::Help => Overlay::None,
                _ => Overlay::Help,
            };
            vec![]
        }
        Action::Render => render(app),
        other => match app.overlay.clone() {
            Overlay::None => main_screen(app, other),
            Overlay::Help => {
                if matches!(other, Action::Cancel | Action::Enter | Action::Insert('?')) {
                    app.overlay = Overlay::None;
                }
                vec![]
            }
            Overlay::SavePreset(editor) => save_overlay(app, editor, other),
            Overlay::Presets { .. } => presets_overlay(app, other),
            Overlay::Gallery { .. } => gallery_overlay(app, other),
            Overlay::Models { .. } => models_overlay(app, other),
        },
    }
}

fn quit(app: &mut App) -> Vec<Effect> {
    app.quit = true;
    let mut effects: Vec<Effect> = app
        .queue
        .iter()
        .filter(|j| j.is_active())
        .map(|j| Effect::Cancel(j.id))
        .collect();
    effects.push(Effect::SaveSession);
    effects.push(Effect::Quit);
    effects
}

fn render(app: &mut App) -> Vec<Effect> {
    if let Some(text) = app.field_input.take() {
        if let Err(e) = app.params.set(app.field, &text) {
            app.field_input = Some(text);
            app.field_error = Some(e.clone());
            app.error(format!("not rendered: {e}"));
            return vec![];
        }
        app.field_error = None;
    }
    if app.params.model.is_none() {
        app.error("no model: Ctrl-K picks one, or type a model name, folder or file into the model field (Tab to it)");
        return vec![];
    }
    let id = app.next_id;
    app.next_id += 1;
    let patch = app.params.patch(app.prompt.text(), app.negative.text());
    let job = Job {
        id,
        patch,
        count: app.params.batch,
        loras: app.params.loras.clone(),
        ..Default::default()
    };
    app.queue.push(QueueItem {
        id,
        prompt: app.prompt.text().to_string(),
        count: app.params.batch,
        seed: app.params.seed_locked.then_some(app.params.seed),
        tag: app.params.job_tag(),
        state: JobState::Queued,
        cancelling: false,
        paths: Vec::new(),
        started: None,
    });
    let ahead = app.queue.iter().filter(|j| j.is_active()).count() - 1;
    if ahead > 0 {
        app.info(format!("queued job {id} ({ahead} ahead)"));
    } else {
        app.info(format!("rendering job {id}"));
    }
    vec![Effect::Submit(job), Effect::SaveSession]
}

fn cancel_running(app: &mut App) -> Vec<Effect> {
    let Some(id) = app.running().map(|j| j.id).or_else(|| {
        app.queue
            .iter()
            .find(|j| j.is_active() && !j.cancelling)
            .map(|j| j.id)
    }) else {
        app.info("nothing to cancel");
        return vec![];
    };
    if let Some(job) = app.job(id) {
        job.cancelling = true;
    }
    app.info(format!("cancelling job {id}"));
    vec![Effect::Cancel(id)]
}

fn focused_editor(app: &mut App) -> Option<&mut Editor> {
    match app.focus {
        Focus::Prompt => Some(&mut app.prompt),
        Focus::Negative => Some(&mut app.negative),
        _ => None,
    }
}

fn cycle_focus(app: &mut App, forward: bool) {
    let all = Focus::CYCLE;
    let i = all.iter().position(|f| *f == app.focus).unwrap_or(0);
    let n = all.len();
    app.focus = all[if forward {
        (i + 1) % n
    } else {
        (i + n - 1) % n
    }];
    commit_field(app);
}

fn main_screen(app: &mut App, action: Action) -> Vec<Effect> {
    match action {
        Action::FocusNext => cycle_focus(app, true),
        Action::FocusPrev => cycle_focus(app, false),
        Action::Cancel => {
            if app.field_input.take().is_some() {
                app.field_error = None;
                return vec![];
            }
            return cancel_running(app);
        }
        Action::SavePreset => app.overlay = Overlay::SavePreset(Editor::new("")),
        Action::Presets => {
            app.overlay = Overlay::Presets {
                filter: Editor::new(""),
                selected: 0,
                confirm_delete: None,
                rename: None,
            };
            return vec![Effect::ListPresets];
        }
        Action::Zoom => {
            app.zoom = !app.zoom;
            app.magnify = Default::default();
        }
        // Full screen hides the editors: +/- magnify and the arrows pan instead.
        Action::Insert('+' | '=') if app.zoom => app.magnify.zoom_in(),
        Action::Insert('-') if app.zoom => app.magnify.zoom_out(),
        Action::Insert('0') if app.zoom => app.magnify = Default::default(),
        Action::Left if app.zoom => app.magnify.pan(-1, 0),
        Action::Right if app.zoom => app.magnify.pan(1, 0),
        Action::Up if app.zoom => app.magnify.pan(0, -1),
        Action::Down if app.zoom => app.magnify.pan(0, 1),
        _ if app.zoom
            && matches!(
                action,
                Action::Insert(_)
                    | Action::Backspace
                    | Action::Delete
                    | Action::Enter
                    | Action::Paste(_)
            ) =>
        {
            app.info("full-screen preview: +/- zoom, arrows pan, 0 fits, F6 goes back to editing");
        }
        Action::Models => return open_models(app),
        Action::Gallery => {
            app.overlay = Overlay::Gallery {
                filter: Editor::new(""),
                selected: 0,
                confirm_delete: None,
            };
            return vec![Effect::ListGallery];
        }
        Action::SeedLock => {
            app.params.seed_locked = !app.params.seed_locked;
            if app.params.seed_locked {
                if let Some(s) = app.last_seed {
                    app.params.seed = s;
                }
                app.info(format!("seed locked at {}", app.params.seed));
            } else {
                app.info("a new seed each render");
            }
        }
        Action::SeedReuse => match app.last_seed {
            Some(s) => {
                app.params.seed = s;
                app.params.seed_locked = true;
                app.info(format!("seed {s} reused and locked"));
            }
            None => app.error("no seed to reuse yet: render something first"),
        },
        Action::ResultPrev | Action::ResultNext => {
            let n = app.results.len();
            if n > 0 {
                app.shown = if action == Action::ResultNext {
                    (app.shown + 1) % n
                } else {
                    (app.shown + n - 1) % n
                };
            }
        }
        Action::Compare => {
            app.compare = match app.compare {
                Some(_) => None,
                None if app.results.len() >= 2 => Some(app.shown),
                None => {
                    app.error("A/B compare needs two results");
                    None
                }
            };
        }
        other => {
            return match app.focus {
                Focus::Prompt | Focus::Negative => {
                    editor_action(app, other);
                    vec![]
                }
                // The model field picks from a list; typing a name or path still works.
                Focus::Params
                    if app.field == Field::Model
                        && app.field_input.is_none()
                        && matches!(other, Action::Enter | Action::Left | Action::Right) =>
                {
                    open_models(app)
                }
                Focus::Params => {
                    params_action(app, other);
                    vec![]
                }
                Focus::Queue => queue_action(app, other),
            };
        }
    }
    vec![]
}

fn editor_action(app: &mut App, action: Action) {
    let focus = app.focus;
    let Some(e) = focused_editor(app) else {
        return;
    };
    let mut leave: Option<bool> = None;
    match action {
        Action::Insert(c) => e.insert_char(c),
        Action::Paste(s) => e.insert_str(&s),
        Action::Backspace => e.backspace(),
        Action::Delete => e.delete(),
        Action::DeleteWord => e.delete_word_back(),
        Action::Enter => e.insert_char('\n'),
        Action::Left => e.left(),
        Action::Right => e.right(),
        Action::Up if !e.vertical(-1) => leave = Some(false),
        Action::Down if !e.vertical(1) => leave = Some(true),
        Action::WordLeft => e.word_left(),
        Action::WordRight => e.word_right(),
        Action::Home => e.home(),
        Action::End => e.end(),
        Action::Undo => {
            e.undo();
        }
        Action::Redo => {
            e.redo();
        }
        Action::WeightUp | Action::WeightDown => {
            let step = if action == Action::WeightUp {
                WEIGHT_STEP
            } else {
                -WEIGHT_STEP
            };
            if !e.nudge_weight(step) {
                app.error("put the cursor on a word to change its weight");
            }
        }
        _ => {}
    }
    // Down from the prompt's last line goes to the negative prompt, Up comes back.
    match (leave, focus) {
        (Some(true), Focus::Prompt) => app.focus = Focus::Negative,
        (Some(false), Focus::Negative) => app.focus = Focus::Prompt,
        _ => {}
    }
}

fn commit_field(app: &mut App) {
    if let Some(text) = app.field_input.take() {
        match app.params.set(app.field, &text) {
            Ok(()) => app.field_error = None,
            Err(e) => app.field_error = Some(e),
        }
    }
}

fn params_action(app: &mut App, action: Action) {
    let fields = Field::ALL;
    let i = fields.iter().position(|f| *f == app.field).unwrap_or(0);
    match action {
        Action::Up | Action::Down => {
            commit_field(app);
            let n = fields.len();
            app.field = fields[if action == Action::Down {
                (i + 1) % n
            } else {
                (i + n - 1) % n
            }];
        }
        Action::Left | Action::Right if app.field_input.is_none() => {
            match app.params.step(app.field, action == Action::Right) {
                Ok(()) => app.field_error = None,
                Err(e) => app.field_error = Some(e),
            }
        }
        Action::Insert(' ') if app.field == Field::Seed && app.field_input.is_none() => {
            update(app, Action::SeedLock);
        }
        Action::Insert(' ') if app.field == Field::KeepUnmasked && app.field_input.is_none() => {
            app.params.keep_unmasked = !app.params.keep_unmasked;
            app.field_error = None;
        }
        Action::Insert(c) => app.field_input.get_or_insert_with(String::new).push(c),
        Action::Paste(s) => app
            .field_input
            .get_or_insert_with(String::new)
            .push_str(s.trim()),
        Action::Backspace => {
            if let Some(t) = &mut app.field_input {
                t.pop();
            }
        }
        Action::Enter => {
            if let Some(text) = app.field_input.take() {
                match app.params.set(app.field, &text) {
                    Ok(()) => {
                        app.field_error = None;
                        app.info(format!(
                            "{} set to {}",
                            app.field.label(),
                            app.params.show(app.field)
                        ));
                    }
                    Err(e) => {
                        // Refused in place: the text stays for fixing, with the reason (also
                        // in the message line, which has room for all of it).
                        app.field_input = Some(text);
                        app.error(e.clone());
                        app.field_error = Some(e);
                    }
                }
            }
        }
        _ => {}
    }
}

fn queue_action(app: &mut App, action: Action) -> Vec<Effect> {
    let n = app.queue.len();
    match action {
        Action::Up if app.queue_selected > 0 => app.queue_selected -= 1,
        Action::Down if app.queue_selected + 1 < n => app.queue_selected += 1,
        Action::Delete | Action::Backspace => {
            let Some(job) = app.queue.get(app.queue_selected).cloned() else {
                return vec![];
            };
            if job.is_active() {
                if let Some(j) = app.job(job.id) {
                    j.cancelling = true;
                }
                return vec![Effect::Cancel(job.id)];
            }
            app.queue.retain(|j| j.id != job.id);
            app.queue_selected = app.queue_selected.min(app.queue.len().saturating_sub(1));
        }
        _ => {}
    }
    vec![]
}

fn save_overlay(app: &mut App, mut editor: Editor, action: Action) -> Vec<Effect> {
    match action {
        Action::Cancel => {
            app.overlay = Overlay::None;
            return vec![];
        }
        Action::Enter => {
            let name = editor.text().trim().to_string();
            if let Err(e) = crate::presets::check_name(&name) {
                app.error(e.to_string());
                return vec![];
            }
            app.overlay = Overlay::None;
            let patch = preset_patch(app);
            return vec![Effect::SavePreset { name, patch }];
        }
        Action::Insert(c) => editor.insert_char(c),
        Action::Paste(s) => editor.insert_str(&s),
        Action::Backspace => editor.backspace(),
        Action::Left => editor.left(),
        Action::Right => editor.right(),
        _ => {}
    }
    app.overlay = Overlay::SavePreset(editor);
    vec![]
}

/// What a preset saved from the studio holds: the editors and every parameter (the seed only
/// when locked).
fn preset_patch(app: &App) -> RecipePatch {
    let mut patch = app.params.patch(app.prompt.text(), app.negative.text());
    patch.batch_size = Some(app.params.batch);
    patch
}

fn clamp_preset_selection(app: &mut App) {
    let n = app.filtered_presets().len();
    if let Overlay::Presets { selected, .. } = &mut app.overlay {
        *selected = (*selected).min(n.saturating_sub(1));
    }
}

fn presets_overlay(app: &mut App, action: Action) -> Vec<Effect> {
    let names: Vec<String> = app
        .filtered_presets()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    let patch = preset_patch(app);
    let Overlay::Presets {
        filter,
        selected,
        confirm_delete,
        rename,
    } = &mut app.overlay
    else {
        return vec![];
    };
    if let Some(name) = confirm_delete.take() {
        if matches!(action, Action::Insert('y' | 'Y')) {
            return vec![Effect::DeletePreset(name)];
        }
        app.info("kept");
        return vec![];
    }
    let current = names.get(*selected).cloned();
    if let Some(editor) = rename {
        match action {
            Action::Cancel => *rename = None,
            Action::Enter => {
                let new = editor.text().trim().to_string();
                if let Err(e) = crate::presets::check_name(&new) {
                    app.error(e.to_string());
                    return vec![];
                }
                *rename = None;
                if let Some(old) = current {
                    return vec![Effect::RenamePreset { old, new }];
                }
            }
            Action::Insert(c) => editor.insert_char(c),
            Action::Paste(s) => editor.insert_str(&s),
            Action::Backspace => editor.backspace(),
            Action::Left => editor.left(),
            Action::Right => editor.right(),
            _ => {}
        }
        return vec![];
    }
    match action {
        Action::Cancel => app.overlay = Overlay::None,
        Action::Up => *selected = selected.saturating_sub(1),
        Action::Down => *selected = (*selected + 1).min(names.len().saturating_sub(1)),
        Action::Enter => {
            if let Some(name) = current {
                app.overlay = Overlay::None;
                return vec![Effect::LoadPreset(name)];
            }
        }
        Action::Delete => *confirm_delete = current,
        Action::Rename => *rename = current.map(|n| Editor::new(&n)),
        Action::UpdatePreset => {
            if let Some(name) = current {
                return vec![Effect::UpdatePreset { name, patch }];
            }
        }
        Action::Insert(c) => {
            filter.insert_char(c);
            *selected = 0;
        }
        Action::Backspace => {
            filter.backspace();
            *selected = 0;
        }
        _ => {}
    }
    vec![]
}

fn gallery_overlay(app: &mut App, action: Action) -> Vec<Effect> {
    let rows: Vec<GalleryRow> = app.filtered_gallery().into_iter().cloned().collect();
    let Overlay::Gallery {
        filter,
        selected,
        confirm_delete,
    } = &mut app.overlay
    else {
        return vec![];
    };
    if let Some(path) = confirm_delete.take() {
        if matches!(action, Action::Insert('y' | 'Y')) {
            return vec![Effect::TrashImage(path)];
        }
        app.info("kept");
        return vec![];
    }
    let row = rows.get(*selected);
    match action {
        Action::Cancel => app.overlay = Overlay::None,
        Action::Up => *selected = selected.saturating_sub(1),
        Action::Down => *selected = (*selected + 1).min(rows.len().saturating_sub(1)),
        Action::Enter => {
            if let Some(row) = row {
                let effect = Effect::LoadEntry {
                    path: row.path.clone(),
                    recipe: row.recipe.clone(),
                };
                app.overlay = Overlay::None;
                return vec![effect];
            }
        }
        Action::Delete => *confirm_delete = row.map(|r| r.path.clone()),
        Action::Open => {
            if let Some(row) = row {
                return vec![Effect::OpenFile(row.path.clone())];
            }
        }
        Action::Favourite => {
            if let Some(row) = row {
                let (path, on) = (row.path.clone(), !row.favourite);
                if let Some(g) = app.gallery.iter_mut().find(|g| g.path == path) {
                    g.favourite = on;
                }
                return vec![Effect::SetFavourite { path, on }];
            }
        }
        Action::Insert(c) => {
            filter.insert_char(c);
            *selected = 0;
        }
        Action::Paste(s) => {
            filter.insert_str(&s);
            *selected = 0;
        }
        Action::Backspace => {
            filter.backspace();
            *selected = 0;
        }
        _ => {}
    }
    vec![]
}

fn open_models(app: &mut App) -> Vec<Effect> {
    app.overlay = Overlay::Models {
        filter: Editor::new(""),
        selected: 0,
    };
    vec![Effect::ListModels]
}

fn models_overlay(app: &mut App, action: Action) -> Vec<Effect> {
    let rows: Vec<ModelRow> = app.filtered_models().into_iter().cloned().collect();
    let Overlay::Models { filter, selected } = &mut app.overlay else {
        return vec![];
    };
    match action {
        Action::Cancel => app.overlay = Overlay::None,
        Action::Up => *selected = selected.saturating_sub(1),
        Action::Down => *selected = (*selected + 1).min(rows.len().saturating_sub(1)),
        Action::Enter => match rows.get(*selected) {
            Some(row) if row.ready => {
                app.overlay = Overlay::None;
                app.params.model = Some(row.name.clone());
                app.field_error = None;
                app.info(format!(
                    "model set to {} (it loads at the next render)",
                    row.name
                ));
                return vec![Effect::SaveSession];
            }
            Some(row) => {
                let hint = row.hint.clone().unwrap_or_default();
                app.error(format!("{} is not ready: {hint}", row.name));
            }
            None => app.error(
                "no model matches: type a model folder or file into the model field instead",
            ),
        },
        Action::Insert(c) => {
            filter.insert_char(c);
            *selected = 0;
        }
        Action::Paste(text) => {
            filter.insert_str(&text);
            *selected = 0;
        }
        Action::Backspace => {
            filter.backspace();
            *selected = 0;
        }
        _ => {}
    }
    vec![]
}

fn load_preset(app: &mut App, name: &str, patch: &RecipePatch) {
    app.params.apply(patch);
    // Presets stack: a preset's prompt is a style around the one being written.
    if let Some(style) = &patch.prompt {
        let merged = merge_prompt(style, app.prompt.text());
        app.prompt.set_text(&merged);
    }
    if let Some(style) = &patch.negative_prompt {
        let merged = merge_prompt(style, app.negative.text());
        app.negative.set_text(&merged);
    }
    app.info(format!("loaded preset {name}"));
}

fn worker_event(app: &mut App, event: Event, at: Instant) -> Vec<Effect> {
    // Events of jobs no longer listed (removed) are stale: dropped.
    let known = |app: &App, id: u64| app.queue.iter().any(|j| j.id == id);
    match event {
        Event::Loading { model } => {
            app.status.loading = Some(model.clone());
            app.status.load_stage = None;
            if let Some(j) = app.queue.iter_mut().find(|j| j.state == JobState::Queued) {
                j.state = JobState::Loading;
            }
            app.info(format!("loading {model}"));
        }
        Event::LoadStage {
            component,
            progress,
        } => {
            app.status.load_stage = Some((component, progress));
        }
        Event::Loaded {
            model,
            device,
            dtype,
            seconds,
            native,
        } => {
            app.status.loading = None;
            app.status.load_stage = None;
            app.status.native = Some(native);
            app.status.model = Some(model.clone());
            app.status.device = Some(device);
            app.status.dtype = Some(dtype);
            app.info(format!("loaded {model} in {seconds:.1} s"));
        }
        Event::Started { id, seed } if known(app, id) => {
            app.last_seed = Some(seed);
            app.step_clock = None;
            if let Some(j) = app.job(id) {
                j.seed = Some(seed);
                j.started = Some(at);
                j.state = JobState::Rendering {
                    image: 0,
                    images: j.count,
                    step: 0,
                    steps: 0,
                };
            }
        }
        Event::Progress {
            id,
            image,
            images,
            step,
            steps,
            preview,
        } if known(app, id) => {
            if let Some(j) = app.job(id) {
                j.state = JobState::Rendering {
                    image,
                    images,
                    step,
                    steps,
                };
            }
            if preview.is_some() {
                app.live = preview;
            }
            let overall = image as usize * steps + step;
            match app.step_clock {
                Some((t0, s0)) if overall > s0 => {
                    let dt = at.duration_since(t0).as_secs_f64();
                    if dt > 0.0 {
                        let rate = (overall - s0) as f64 / dt;
                        app.status.it_s = Some(rate);
                        let left = (images as usize * steps).saturating_sub(overall);
                        app.status.eta_s = Some(left as f64 / rate);
                    }
                }
                _ => app.step_clock = Some((at, overall)),
            }
        }
        Event::Image {
            id, path, picture, ..
        } if known(app, id) => {
            if let Some(j) = app.job(id) {
                j.paths.push(path.clone());
            }
            app.results.insert(
                0,
                ResultItem {
                    job: id,
                    path: path.clone(),
                    picture,
                },
            );
            app.results.truncate(STRIP_LEN);
            app.shown = 0;
            app.compare = app.compare.map(|c| (c + 1).min(STRIP_LEN - 1));
            app.live = None;
            app.info(format!("wrote {}", path.display()));
        }
        Event::Note { message } => app.error(message),
        Event::Done { id, paths } if known(app, id) => {
            finish(app, id, JobState::Done);
            if let Some(last) = paths.last() {
                app.info(format!("done: {}", last.display()));
            }
        }
        Event::Failed { id, message } if known(app, id) => {
            finish(app, id, JobState::Failed(message.clone()));
            app.error(message);
        }
        Event::Cancelled { id, paths } if known(app, id) => {
            finish(app, id, JobState::Cancelled);
            app.info(format!(
                "job {id} cancelled ({} image(s) kept)",
                paths.len()
            ));
        }
        _ => {}
    }
    vec![]
}

fn finish(app: &mut App, id: u64, state: JobState) {
    if let Some(j) = app.job(id) {
        j.state = state;
        j.cancelling = false;
    }
    app.live = None;
    // A job that ends while its model loads (a failed load) ends the load too.
    app.status.loading = None;
    app.status.load_stage = None;
    app.status.it_s = None;
    app.status.eta_s = None;
    app.step_clock = None;
}
