//! The studio's state machine, driven with actions and no terminal: what each action does to
//! the state and which effects it asks the runtime for.
use easel::recipe::RecipePatch;
use easel::tui::app::{App, Focus, JobState, Overlay};
use easel::tui::params::{Field, Params};
use easel::tui::update::{update, Action, Effect};
use easel::worker::{Event, Picture};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn app_with_model() -> App {
    let params = Params {
        model: Some("models/tiny".into()),
        ..Params::default()
    };
    App::new(params, "", "")
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        update(app, Action::Insert(c));
    }
}

fn submitted(effects: &[Effect]) -> Vec<easel::worker::Job> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Submit(j) => Some(j.clone()),
            _ => None,
        })
        .collect()
}

fn ev(app: &mut App, event: Event) -> Vec<Effect> {
    update(app, Action::Worker(event, Instant::now()))
}

fn picture() -> Picture {
    Picture {
        width: 2,
        height: 1,
        rgb: vec![1, 2, 3, 4, 5, 6],
    }
}

#[test]
fn render_submits_the_recipe_and_the_queue_follows_the_worker() {
    let mut app = app_with_model();
    type_text(&mut app, "a red fox");
    let effects = update(&mut app, Action::Render);
    let jobs = submitted(&effects);
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.patch.prompt.as_deref(), Some("a red fox"));
    assert_eq!(job.patch.model.as_deref(), Some("models/tiny"));
    assert_eq!(
        job.patch.seed, None,
        "an unlocked seed is drawn by the worker"
    );
    assert!(effects.contains(&Effect::SaveSession));
    assert_eq!(app.queue[0].state, JobState::Queued);

    let t0 = Instant::now();
    ev(
        &mut app,
        Event::Loading {
            model: "models/tiny".into(),
        },
    );
    assert_eq!(app.queue[0].state, JobState::Loading);
    ev(
        &mut app,
        Event::LoadStage {
            component: "unet".into(),
            progress: 0.12,
        },
    );
    assert_eq!(app.status.load_stage, Some(("unet".to_string(), 0.12)));
    ev(
        &mut app,
        Event::Loaded {
            model: "models/tiny".into(),
            device: "cpu".into(),
            dtype: "fp32".into(),
            seconds: 1.0,
            native: (64, 64),
        },
    );
    assert_eq!(app.status.device.as_deref(), Some("cpu"));
    ev(
        &mut app,
        Event::Started {
            id: job.id,
            seed: 42,
        },
    );
    assert_eq!(app.last_seed, Some(42));
    for step in 1..=3 {
        update(
            &mut app,
            Action::Worker(
                Event::Progress {
                    id: job.id,
                    image: 0,
                    images: 1,
                    step,
                    steps: 4,
                    preview: Some(picture()),
                },
                t0 + Duration::from_millis(500 * step as u64),
            ),
        );
    }
    assert_eq!(
        app.queue[0].state,
        JobState::Rendering {
            image: 0,
            images: 1,
            step: 3,
            steps: 4
        }
    );
    assert!(app.live.is_some());
    let rate = app.status.it_s.unwrap();
    assert!((rate - 2.0).abs() < 1e-9, "two steps in one second: {rate}");
    assert!((app.status.eta_s.unwrap() - 0.5).abs() < 1e-9);
    let path = PathBuf::from("outputs/x-42-0.png");
    ev(
        &mut app,
        Event::Image {
            id: job.id,
            path: path.clone(),
            picture: picture(),
            seconds: 2.0,
        },
    );
    ev(
        &mut app,
        Event::Done {
            id: job.id,
            paths: vec![path.clone()],
        },
    );
    assert_eq!(app.queue[0].state, JobState::Done);
    assert_eq!(app.results[0].path, path);
    assert!(app.live.is_none());
    assert!(app
        .message
        .as_ref()
        .unwrap()
        .text
        .contains("outputs/x-42-0.png"));
}

#[test]
fn several_renders_queue_and_esc_cancels_the_running_one() {
    let mut app = app_with_model();
    let a = submitted(&update(&mut app, Action::Render))[0].id;
    let b = submitted(&update(&mut app, Action::Render))[0].id;
    assert_ne!(a, b);
    assert!(app.message.as_ref().unwrap().text.contains("1 ahead"));
    ev(&mut app, Event::Started { id: a, seed: 1 });
    let effects = update(&mut app, Action::Cancel);
    assert_eq!(effects, vec![Effect::Cancel(a)]);
    assert!(app.queue[0].cancelling);
    ev(
        &mut app,
        Event::Cancelled {
            id: a,
            paths: vec![],
        },
    );
    assert_eq!(app.queue[0].state, JobState::Cancelled);
    // The queued one can be removed from the queue panel.
    update(&mut app, Action::FocusNext);
    update(&mut app, Action::FocusNext);
    update(&mut app, Action::FocusNext);
    assert_eq!(app.focus, Focus::Queue);
    update(&mut app, Action::Down);
    assert_eq!(update(&mut app, Action::Delete), vec![Effect::Cancel(b)]);
    // A finished one is removed outright; stale events for it are dropped.
    update(&mut app, Action::Up);
    update(&mut app, Action::Delete);
    assert!(app.queue.iter().all(|j| j.id != a));
    ev(
        &mut app,
        Event::Done {
            id: a,
            paths: vec![],
        },
    );
    assert!(app.queue.iter().all(|j| j.id != a));
}

#[test]
fn render_without_model_or_with_a_bad_value_is_refused_with_the_reason() {
    let mut app = App::new(Params::default(), "a fox", "");
    assert!(update(&mut app, Action::Render).is_empty());
    assert!(app.message.as_ref().unwrap().text.contains("no model"));
    let mut app = app_with_model();
    app.focus = Focus::Params;
    app.field = Field::Steps;
    update(&mut app, Action::Backspace);
    type_text(&mut app, "0");
    update(&mut app, Action::Enter);
    assert!(app
        .field_error
        .as_ref()
        .unwrap()
        .contains("steps must be between 1 and 1000"));
    assert_eq!(
        app.field_input.as_deref(),
        Some("0"),
        "the refused text stays for fixing"
    );
    assert_eq!(app.params.steps, 20);
    assert!(update(&mut app, Action::Render).is_empty());
    update(&mut app, Action::Backspace);
    type_text(&mut app, "12");
    update(&mut app, Action::Enter);
    assert_eq!((app.params.steps, app.field_error.clone()), (12, None));
    update(&mut app, Action::Down);
    type_text(&mut app, "abc");
    update(&mut app, Action::Enter);
    assert!(app
        .field_error
        .as_ref()
        .unwrap()
        .contains("cfg takes a number"));
    update(&mut app, Action::Cancel);
    assert_eq!(app.field_input, None);
    // A worker failure is shown and marks the job.
    let id = submitted(&update(&mut app, Action::Render))[0].id;
    ev(
        &mut app,
        Event::Failed {
            id,
            message: "cannot load the model models/tiny: gone".into(),
        },
    );
    assert!(matches!(app.queue[0].state, JobState::Failed(_)));
    assert!(app.message.as_ref().unwrap().text.contains("gone"));
}

#[test]
fn seed_lock_new_and_reuse() {
    let mut app = app_with_model();
    update(&mut app, Action::SeedReuse);
    assert!(app
        .message
        .as_ref()
        .unwrap()
        .text
        .contains("no seed to reuse"));
    let id = submitted(&update(&mut app, Action::Render))[0].id;
    ev(&mut app, Event::Started { id, seed: 1234 });
    update(&mut app, Action::SeedReuse);
    assert!(app.params.seed_locked);
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.seed, Some(1234));
    update(&mut app, Action::SeedLock);
    assert!(!app.params.seed_locked);
    assert_eq!(
        submitted(&update(&mut app, Action::Render))[0].patch.seed,
        None
    );
}

#[test]
fn presets_save_then_load_stacks_onto_the_editors() {
    let mut app = app_with_model();
    type_text(&mut app, "a red fox");
    app.params.steps = 30;
    update(&mut app, Action::SavePreset);
    assert!(matches!(app.overlay, Overlay::SavePreset(_)));
    type_text(&mut app, "bad name/");
    update(&mut app, Action::Enter);
    assert!(
        matches!(app.overlay, Overlay::SavePreset(_)),
        "a bad name keeps the dialog open"
    );
    for _ in 0.."bad name/".len() {
        update(&mut app, Action::Backspace);
    }
    type_text(&mut app, "fox");
    let effects = update(&mut app, Action::Enter);
    let Effect::SavePreset { name, patch } = &effects[0] else {
        panic!("{effects:?}")
    };
    assert_eq!(name, "fox");
    assert_eq!(
        (patch.steps, patch.prompt.as_deref()),
        (Some(30), Some("a red fox"))
    );
    assert_eq!(
        update(&mut app, Action::PresetSaved("fox".into())),
        vec![Effect::ListPresets]
    );

    // Loading a style preset wraps the prompt being written and layers its fields.
    assert_eq!(update(&mut app, Action::Presets), vec![Effect::ListPresets]);
    update(
        &mut app,
        Action::PresetList(vec![
            easel::tui::app::PresetRow {
                name: "ink".into(),
                builtin: false,
                summary: String::new(),
            },
            easel::tui::app::PresetRow {
                name: "fox".into(),
                builtin: false,
                summary: String::new(),
            },
        ]),
    );
    type_text(&mut app, "in");
    assert_eq!(app.filtered_presets().len(), 1);
    assert_eq!(
        update(&mut app, Action::Enter),
        vec![Effect::LoadPreset("ink".into())]
    );
    let style = RecipePatch {
        prompt: Some("ink drawing of {prompt}".into()),
        cfg: Some(5.0),
        ..Default::default()
    };
    update(
        &mut app,
        Action::PresetLoaded {
            name: "ink".into(),
            patch: style,
        },
    );
    assert_eq!(app.prompt.text(), "ink drawing of a red fox");
    assert_eq!((app.params.cfg, app.params.steps), (5.0, 30));
    update(&mut app, Action::Undo);
    assert_eq!(
        app.prompt.text(),
        "a red fox",
        "loading a preset is one undoable edit"
    );

    // Delete asks first.
    update(&mut app, Action::Presets);
    update(
        &mut app,
        Action::PresetList(vec![easel::tui::app::PresetRow {
            name: "fox".into(),
            builtin: false,
            summary: String::new(),
        }]),
    );
    assert!(update(&mut app, Action::Delete).is_empty());
    assert_eq!(
        update(&mut app, Action::Insert('y')),
        vec![Effect::DeletePreset("fox".into())]
    );
}

#[test]
fn editor_keys_weight_nudge_and_quit() {
    let mut app = app_with_model();
    type_text(&mut app, "a red fox");
    update(&mut app, Action::WeightUp);
    assert_eq!(app.prompt.text(), "a red (fox:1.1)");
    update(&mut app, Action::WeightUp);
    assert_eq!(app.prompt.text(), "a red (fox:1.2)");
    // The cursor stays on the word, so nudges repeat; End leaves the group.
    update(&mut app, Action::End);
    update(&mut app, Action::Paste("\r\nsnow".into()));
    assert_eq!(app.prompt.text(), "a red (fox:1.2)\nsnow");
    update(&mut app, Action::Down);
    assert_eq!(
        app.focus,
        Focus::Negative,
        "Down from the last line moves on"
    );
    type_text(&mut app, "blur");
    assert_eq!(app.negative.text(), "blur");
    update(&mut app, Action::Help);
    assert_eq!(app.overlay, Overlay::Help);
    update(&mut app, Action::Cancel);
    assert_eq!(app.overlay, Overlay::None);
    let id = submitted(&update(&mut app, Action::Render))[0].id;
    let effects = update(&mut app, Action::Quit);
    assert_eq!(
        effects,
        vec![Effect::Cancel(id), Effect::SaveSession, Effect::Quit]
    );
    assert!(app.quit);
}

#[test]
fn gallery_search_favourite_load_and_trash() {
    let mut app = app_with_model();
    assert_eq!(update(&mut app, Action::Gallery), vec![Effect::ListGallery]);
    let row = |name: &str, prompt: &str, seed: u64| {
        let mut recipe = easel::recipe::Recipe::from_json(
            r#"{"schema_version":1,"model":"m","prompt":"","sampler":"ddim","steps":9,"cfg":3.0,
                "seed":0,"width":64,"height":64,"batch_size":1,"device":"cpu","dtype":"fp32"}"#,
        )
        .unwrap();
        recipe.prompt = prompt.into();
        recipe.seed = seed;
        easel::tui::app::GalleryRow {
            path: PathBuf::from(name),
            time: "2026-01-01T12:00:00.000+00:00".into(),
            recipe,
            favourite: false,
        }
    };
    update(
        &mut app,
        Action::GalleryList(vec![
            row("a.png", "a red fox", 1),
            row("b.png", "a lighthouse", 2),
        ]),
    );
    type_text(&mut app, "LIGHT");
    assert_eq!(app.filtered_gallery().len(), 1);
    assert_eq!(
        update(&mut app, Action::Favourite),
        vec![Effect::SetFavourite {
            path: "b.png".into(),
            on: true
        }]
    );
    for _ in 0..5 {
        update(&mut app, Action::Backspace);
    }
    assert_eq!(
        app.filtered_gallery()[0].path,
        PathBuf::from("b.png"),
        "favourites first"
    );
    update(&mut app, Action::Down);
    assert!(
        update(&mut app, Action::Delete).is_empty(),
        "trashing asks first"
    );
    assert!(update(&mut app, Action::Insert('n')).is_empty());
    update(&mut app, Action::Delete);
    assert_eq!(
        update(&mut app, Action::Insert('y')),
        vec![Effect::TrashImage("a.png".into())]
    );
    update(
        &mut app,
        Action::Trashed {
            path: "a.png".into(),
            trashed: "trash/a.png".into(),
        },
    );
    assert_eq!(app.gallery.len(), 1);
    assert_eq!(
        update(&mut app, Action::Open),
        vec![Effect::OpenFile("b.png".into())],
        "Ctrl-O opens the selected render's file"
    );
    let effects = update(&mut app, Action::Enter);
    let Some(Effect::LoadEntry { recipe, .. }) = effects.first().cloned() else {
        panic!("{effects:?}")
    };
    update(
        &mut app,
        Action::EntryLoaded {
            path: "b.png".into(),
            recipe,
            picture: Some(picture()),
        },
    );
    assert_eq!(app.prompt.text(), "a lighthouse");
    assert_eq!(
        (app.params.seed, app.params.seed_locked, app.params.steps),
        (2, true, 9)
    );
    assert_eq!(app.params.size, Some((64, 64)));
    assert_eq!(app.results[0].path, PathBuf::from("b.png"));
}

#[test]
fn loras_are_typed_checked_and_sent_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let ink = dir.path().join("ink.safetensors");
    std::fs::write(&ink, b"").unwrap();
    let mut app = app_with_model();
    app.focus = Focus::Params;
    app.field = Field::Loras;
    type_text(&mut app, "nope.safetensors:0.5");
    update(&mut app, Action::Enter);
    assert!(app
        .field_error
        .as_ref()
        .unwrap()
        .contains("nope.safetensors does not exist"));
    update(&mut app, Action::Cancel);
    type_text(&mut app, &format!("{}:0.5", ink.display()));
    update(&mut app, Action::Enter);
    assert_eq!(app.field_error, None);
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.loras.len(), 1);
    assert_eq!(
        (job.loras[0].path.as_str(), job.loras[0].weight),
        (ink.to_str().unwrap(), 0.5)
    );
}

/// Types `text` into the selected parameter and presses Enter; the refusal, if any.
fn enter_field(app: &mut App, field: Field, text: &str) -> Option<String> {
    app.focus = Focus::Params;
    app.field = field;
    update(app, Action::Cancel);
    type_text(app, text);
    update(app, Action::Enter);
    app.field_error.clone()
}

#[test]
fn img2img_fields_are_checked_in_place_and_sent_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let (photo, hat) = (dir.path().join("photo.png"), dir.path().join("hat.png"));
    std::fs::write(&photo, b"").unwrap();
    std::fs::write(&hat, b"").unwrap();
    let (photo_s, hat_s) = (photo.display().to_string(), hat.display().to_string());
    let mut app = app_with_model();
    type_text(&mut app, "a red hat");

    // Refused in place, with the reason; the typed text stays for fixing.
    let err = enter_field(&mut app, Field::Mask, &hat_s).unwrap();
    assert!(err.contains("needs an init image"), "{err}");
    assert_eq!(app.field_input.as_deref(), Some(hat_s.as_str()));
    assert_eq!(app.params.mask, None);
    let missing = dir.path().join("nope.png").display().to_string();
    let err = enter_field(&mut app, Field::InitImage, &missing).unwrap();
    assert_eq!(err, format!("no such file: {missing}"));
    let home = std::env::var("HOME").unwrap();
    let err = enter_field(&mut app, Field::InitImage, "~/easel-no-such-init.png").unwrap();
    assert_eq!(err, format!("no such file: {home}/easel-no-such-init.png"));
    for bad in ["0", "1.5", "-0.2", "NaN", "lots"] {
        let err = enter_field(&mut app, Field::Strength, bad).unwrap();
        assert!(err.contains("strength"), "{bad}: {err}");
    }
    assert_eq!(app.params.strength, 0.75, "the default stays");
    let err = enter_field(&mut app, Field::MaskBlur, "-1").unwrap();
    assert!(err.contains("mask blur takes a whole number"), "{err}");
    let err = enter_field(&mut app, Field::MaskBlur, "300").unwrap();
    assert!(err.contains("mask blur must be between 0 and 256"), "{err}");
    assert!(app.params.init_image.is_none());
    update(&mut app, Action::Cancel);

    // Still text-to-image: the job carries no img2img settings.
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.init(), None);
    assert_eq!((job.patch.strength, job.patch.mask.as_ref()), (None, None));
    assert_eq!(app.queue[0].tag, None);

    assert_eq!(enter_field(&mut app, Field::InitImage, &photo_s), None);
    assert_eq!(app.params.show(Field::InitImage), photo_s);
    assert_eq!(app.params.show(Field::Size), "from init image");
    assert_eq!(enter_field(&mut app, Field::Strength, "0.6"), None);
    update(&mut app, Action::Right);
    assert_eq!(app.params.strength, 0.65, "Right steps by 0.05");
    let job = &submitted(&update(&mut app, Action::Render))[0];
    let init = job.patch.init().unwrap();
    assert_eq!(
        (init.image.as_str(), init.strength, init.mask.as_ref()),
        (photo_s.as_str(), 0.65, None)
    );
    assert_eq!(app.queue[1].tag.as_deref(), Some("img2img 0.65"));

    assert_eq!(enter_field(&mut app, Field::Mask, &hat_s), None);
    assert_eq!(enter_field(&mut app, Field::MaskBlur, "8"), None);
    app.field = Field::KeepUnmasked;
    update(&mut app, Action::Insert(' '));
    assert_eq!(app.params.show(Field::KeepUnmasked), "on");
    update(&mut app, Action::Left);
    assert!(!app.params.keep_unmasked, "Left/Right toggle too");
    update(&mut app, Action::Insert(' '));
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.prompt.as_deref(), Some("a red hat"));
    assert_eq!(
        job.patch.init(),
        Some(easel::recipe::RecipeInit {
            image: photo_s.clone(),
            strength: 0.65,
            mask: Some(hat_s.clone()),
            mask_blur: 8,
            keep_unmasked: true,
        })
    );
    assert_eq!(app.queue[2].tag.as_deref(), Some("inpaint 0.65"));

    // "none" clears the init image, and its mask with it.
    assert_eq!(enter_field(&mut app, Field::InitImage, "none"), None);
    assert_eq!(
        (app.params.init_image.as_ref(), app.params.mask.as_ref()),
        (None, None)
    );
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.init(), None);
}

#[test]
fn gallery_recipes_fill_the_img2img_fields_and_sessions_keep_them() {
    let mut app = app_with_model();
    app.params.mask_blur = 2;
    let recipe = |init: Option<easel::recipe::RecipeInit>| {
        let mut r = easel::recipe::Recipe::from_json(
            r#"{"schema_version":1,"model":"m","prompt":"a hat","sampler":"ddim","steps":9,
                "cfg":3.0,"seed":5,"width":64,"height":64,"batch_size":1,"device":"cpu",
                "dtype":"fp32"}"#,
        )
        .unwrap();
        r.init = init;
        r
    };
    let init = easel::recipe::RecipeInit {
        image: "in.png".into(),
        strength: 0.4,
        mask: Some("mask.png".into()),
        mask_blur: 0,
        keep_unmasked: true,
    };
    update(
        &mut app,
        Action::EntryLoaded {
            path: "a.png".into(),
            recipe: recipe(Some(init.clone())),
            picture: None,
        },
    );
    let p = &app.params;
    assert_eq!(
        (
            p.init_image.as_deref(),
            p.strength,
            p.mask.as_deref(),
            p.mask_blur,
            p.keep_unmasked
        ),
        (Some("in.png"), 0.4, Some("mask.png"), 0, true)
    );
    // Rendering it again asks for the same init image, mask and settings.
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.init(), Some(init));

    // The session file keeps them; a session written before them still loads.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("session.json");
    let session = easel::tui::session::Session {
        prompt: "p".into(),
        negative_prompt: String::new(),
        params: app.params.clone(),
    };
    session.save(&file).unwrap();
    assert_eq!(easel::tui::session::Session::load(&file), (session, None));
    std::fs::write(
        &file,
        r#"{"prompt":"old","params":{"steps":12,"seed":3,"seed_locked":true}}"#,
    )
    .unwrap();
    let (old, warning) = easel::tui::session::Session::load(&file);
    assert_eq!(warning, None);
    assert_eq!(old.params.steps, 12);
    assert_eq!(
        (
            old.params.init_image,
            old.params.strength,
            old.params.mask_blur,
            old.params.keep_unmasked
        ),
        (None, 0.75, 4, false)
    );

    // A text-to-image recipe clears them, so that it renders again as it was.
    update(
        &mut app,
        Action::EntryLoaded {
            path: "b.png".into(),
            recipe: recipe(None),
            picture: None,
        },
    );
    assert_eq!(
        (app.params.init_image.as_ref(), app.params.mask.as_ref()),
        (None, None)
    );
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.init(), None);
}

fn model_row(name: &str, ready: bool) -> easel::tui::app::ModelRow {
    easel::tui::app::ModelRow {
        name: name.into(),
        detail: if ready {
            "SD 1.x  ready"
        } else {
            "SDXL  not pulled"
        }
        .into(),
        ready,
        default: false,
        hint: (!ready).then(|| format!("download it first with `easel models pull {name}`")),
    }
}

#[test]
fn the_model_picker_lists_filters_and_sets_only_ready_models() {
    let mut app = app_with_model();
    // Ctrl-K opens it and asks for the list; the list opens on the model in use.
    assert_eq!(update(&mut app, Action::Models), vec![Effect::ListModels]);
    assert!(matches!(app.overlay, Overlay::Models { .. }));
    update(
        &mut app,
        Action::ModelList(vec![
            model_row("sdxl", false),
            model_row("alpha", true),
            model_row("models/tiny", true),
        ]),
    );
    let names: Vec<&str> = app
        .filtered_models()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["alpha", "models/tiny", "sdxl"], "ready ones first");
    assert!(matches!(app.overlay, Overlay::Models { selected: 1, .. }));

    // One not downloaded is refused with what to do; the picker stays open.
    type_text(&mut app, "sdx");
    assert_eq!(app.filtered_models().len(), 1);
    assert_eq!(update(&mut app, Action::Enter), vec![]);
    let message = app.message.clone().unwrap().text;
    assert!(
        message.contains("sdxl is not ready") && message.contains("easel models pull sdxl"),
        "{message}"
    );
    assert!(matches!(app.overlay, Overlay::Models { .. }));
    assert_eq!(app.params.model.as_deref(), Some("models/tiny"));

    // A ready one is the model from now on; the session keeps it.
    for _ in 0..3 {
        update(&mut app, Action::Backspace);
    }
    type_text(&mut app, "alp");
    assert_eq!(update(&mut app, Action::Enter), vec![Effect::SaveSession]);
    assert_eq!(app.overlay, Overlay::None);
    assert_eq!(app.params.model.as_deref(), Some("alpha"));
    type_text(&mut app, "a fox");
    let job = &submitted(&update(&mut app, Action::Render))[0];
    assert_eq!(job.patch.model.as_deref(), Some("alpha"));

    // Enter (or an arrow) on the model field opens it too; Esc closes it unchanged; a path
    // typed into the field still works.
    app.focus = Focus::Params;
    app.field = Field::Model;
    assert_eq!(update(&mut app, Action::Right), vec![Effect::ListModels]);
    update(&mut app, Action::Cancel);
    assert_eq!(app.overlay, Overlay::None);
    assert_eq!(update(&mut app, Action::Enter), vec![Effect::ListModels]);
    update(&mut app, Action::Cancel);
    type_text(&mut app, "/data/my-model");
    update(&mut app, Action::Enter);
    assert_eq!(app.params.model.as_deref(), Some("/data/my-model"));
    assert_eq!(app.overlay, Overlay::None);
}
