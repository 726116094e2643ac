//! The studio's screens drawn into ratatui's TestBackend and compared with the committed
//! snapshots (tests/snapshots/), at 80x24 and 160x48.
use easel::tui::app::{App, Focus, JobState, Overlay, PresetRow};
use easel::tui::editor::Editor;
use easel::tui::keymap::Keymap;
use easel::tui::params::{Field, Params};
use easel::tui::tokens::TokenCounter;
use easel::tui::update::{update, Action};
use easel::tui::view::{draw, Theme};
use easel::worker::{Event, Picture};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::PathBuf;
use std::time::Instant;

fn screen(app: &App, width: u16, height: u16) -> String {
    let keymap = Keymap::new(None).unwrap();
    let mut term = Terminal::new(TestBackend::new(width, height)).unwrap();
    term.draw(|f| draw(f, app, &keymap.help, None, Theme { color: false }))
        .unwrap();
    format!("{}", term.backend())
}

fn studio() -> App {
    let params = Params {
        model: Some("tests/fixtures/tiny-sd1".into()),
        ..Params::default()
    };
    let mut app = App::new(params, "a red fox in the snow, (detailed:1.2)", "blurry");
    let n = TokenCounter::new().count(app.prompt.text()).unwrap();
    app.token_count = (n, 1);
    app
}

fn rendering() -> App {
    let mut app = studio();
    let now = Instant::now();
    update(&mut app, Action::Render);
    update(&mut app, Action::Render);
    for e in [
        Event::Loaded {
            model: "tests/fixtures/tiny-sd1".into(),
            device: "cpu".into(),
            dtype: "fp32".into(),
            seconds: 1.5,
            native: (64, 64),
        },
        Event::Started { id: 1, seed: 7 },
        Event::Progress {
            id: 1,
            image: 0,
            images: 1,
            step: 5,
            steps: 20,
            preview: Some(Picture {
                width: 1,
                height: 1,
                rgb: vec![0, 0, 0],
            }),
        },
    ] {
        update(&mut app, Action::Worker(e, now));
    }
    app.status.rss_mb = Some(512);
    app
}

fn finished() -> App {
    let mut app = rendering();
    let path = PathBuf::from("outputs/20260101-120000-7-0.png");
    let picture = Picture {
        width: 64,
        height: 64,
        rgb: vec![0; 64 * 64 * 3],
    };
    let now = Instant::now();
    update(
        &mut app,
        Action::Worker(
            Event::Image {
                id: 1,
                path: path.clone(),
                picture,
                seconds: 3.0,
            },
            now,
        ),
    );
    update(
        &mut app,
        Action::Worker(
            Event::Done {
                id: 1,
                paths: vec![path],
            },
            now,
        ),
    );
    app
}

#[test]
fn main_screen() {
    let app = studio();
    insta::assert_snapshot!("main_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("main_160x48", screen(&app, 160, 48));
    // Smaller than anyone should use: cramped, but drawn without a panic.
    let tiny = screen(&app, 30, 8);
    assert!(tiny.contains("F1 help"), "{tiny}");
}

#[test]
fn rendering_with_a_queue() {
    let app = rendering();
    assert!(matches!(app.queue[0].state, JobState::Rendering { .. }));
    insta::assert_snapshot!("rendering_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("rendering_160x48", screen(&app, 160, 48));
}

#[test]
fn finished_result_and_its_path() {
    let app = finished();
    let s = screen(&app, 80, 24);
    assert!(s.contains("done: outputs/20260101-120000-7-0.png"), "{s}");
    insta::assert_snapshot!("finished_80x24", s);
}

#[test]
fn refused_parameter_shows_the_reason() {
    let mut app = studio();
    app.focus = Focus::Params;
    app.field = Field::Steps;
    update(&mut app, Action::Insert('0'));
    update(&mut app, Action::Enter);
    insta::assert_snapshot!("refused_80x24", screen(&app, 80, 24));
}

#[test]
fn help_and_presets_overlays() {
    let mut app = studio();
    update(&mut app, Action::Help);
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("help_160x48", screen(&app, 160, 48));
    app.overlay = Overlay::Presets {
        filter: Editor::new(""),
        selected: 1,
        confirm_delete: None,
        rename: None,
    };
    app.presets = vec![
        PresetRow {
            name: "fast".into(),
            builtin: true,
            summary: "steps 12, cfg 5".into(),
        },
        PresetRow {
            name: "ink".into(),
            builtin: false,
            summary: "prompt \"ink drawing of {prompt}\"".into(),
        },
    ];
    insta::assert_snapshot!("presets_80x24", screen(&app, 80, 24));
    update(&mut app, Action::Cancel);
    update(&mut app, Action::Gallery);
    let recipe = easel::recipe::Recipe::from_json(
        r#"{"schema_version":1,"model":"m","prompt":"a red fox","sampler":"euler_a","steps":4,
            "cfg":7.5,"seed":7,"width":64,"height":64,"batch_size":1,"device":"cpu","dtype":"fp32"}"#,
    )
    .unwrap();
    update(
        &mut app,
        Action::GalleryList(vec![easel::tui::app::GalleryRow {
            path: PathBuf::from("outputs/20260101-120000-7-0.png"),
            time: "2026-01-01T12:00:00.000+00:00".into(),
            recipe,
            favourite: true,
        }]),
    );
    insta::assert_snapshot!("gallery_80x24", screen(&app, 80, 24));
    update(&mut app, Action::Cancel);
    update(&mut app, Action::Models);
    let row = |name: &str, detail: &str, ready: bool, default: bool| easel::tui::app::ModelRow {
        name: name.into(),
        detail: detail.into(),
        ready,
        default,
        hint: (!ready).then(|| format!("download it first with `easel models pull {name}`")),
    };
    update(
        &mut app,
        Action::ModelList(vec![
            row(
                "sd15",
                "SD 1.x  ~4.3 GB  not pulled  Stable Diffusion 1.5",
                false,
                false,
            ),
            row("sdxl", "SDXL  6.9 GB  ready  SDXL base 1.0", true, true),
            row("mine", "SD 1.x  2.1 GB  ready  /data/mine", true, false),
        ]),
    );
    update(&mut app, Action::Down);
    update(&mut app, Action::Down);
    insta::assert_snapshot!("models_80x24", screen(&app, 80, 24));
}

#[test]
fn weighting_syntax_is_not_counted_as_tokens() {
    let counter = TokenCounter::new();
    let plain = counter.count("a red fox, detailed").unwrap();
    assert_eq!(counter.count("a (red:1.3) fox, [detailed]"), Some(plain));
    assert_eq!(
        counter.count("a red fox <lora:ink:0.5>, detailed"),
        Some(plain)
    );
    assert!(plain > 0);
}

/// The status bar follows a model load component by component, ends it when the load fails,
/// and shows GPU memory once a CUDA device reports it.
#[test]
fn status_bar_shows_load_progress_and_gpu_memory() {
    let mut app = studio();
    let now = Instant::now();
    update(&mut app, Action::Render);
    let at = |app: &mut App, e: Event| {
        update(app, Action::Worker(e, now));
    };
    at(
        &mut app,
        Event::Loading {
            model: "/models/sdxl-base".into(),
        },
    );
    assert!(screen(&app, 160, 48).contains("loading sdxl-base |"));
    at(
        &mut app,
        Event::LoadStage {
            component: "unet".into(),
            progress: 0.24,
        },
    );
    assert!(screen(&app, 160, 48).contains("loading sdxl-base: unet 24%"));
    at(
        &mut app,
        Event::Failed {
            id: 1,
            message: "cannot load the model /models/sdxl-base: no unet/config.json".into(),
        },
    );
    let failed = screen(&app, 160, 48);
    assert!(!failed.contains("loading sdxl-base"), "{failed}");
    assert!(failed.contains("no unet/config.json"), "{failed}");

    at(
        &mut app,
        Event::Loaded {
            model: "/models/sdxl-base".into(),
            device: "cuda:0".into(),
            dtype: "fp16".into(),
            seconds: 9.0,
            native: (1024, 1024),
        },
    );
    assert!(!screen(&app, 160, 48).contains("VRAM"));
    update(&mut app, Action::Vram(Some((7350, 143771))));
    let shown = screen(&app, 160, 48);
    assert!(
        shown.contains("cuda:0 fp16") && shown.contains("VRAM 7350/143771 MB"),
        "{shown}"
    );
}

/// F6 fills the screen with the preview; there +/- magnify, the arrows pan, and typing goes
/// nowhere (the editors are hidden); F6 again goes back with the view fitted.
#[test]
fn full_screen_preview_zooms_and_pans() {
    let mut app = finished();
    let prompt = app.prompt.text().to_string();
    update(&mut app, Action::Zoom);
    assert!(screen(&app, 80, 24).contains("(fit; +/- zoom)"));
    update(&mut app, Action::Insert('+'));
    update(&mut app, Action::Insert('+'));
    assert_eq!(app.magnify.level, 4);
    let centered = app.magnify.region(64, 64);
    update(&mut app, Action::Right);
    update(&mut app, Action::Down);
    let moved = app.magnify.region(64, 64);
    assert!(moved.0 > centered.0 && moved.1 > centered.1, "{moved:?}");
    update(&mut app, Action::Insert('-'));
    assert_eq!(app.magnify.level, 2);
    update(&mut app, Action::Insert('x'));
    assert_eq!(
        app.prompt.text(),
        prompt,
        "typing in full screen edits nothing"
    );
    let shown = screen(&app, 80, 24);
    assert!(shown.contains("(2x; arrows pan, 0 fits)"), "{shown}");
    assert!(!shown.contains("Prompt"), "{shown}");
    update(&mut app, Action::Zoom);
    assert_eq!(app.magnify.level, 1);
    assert!(screen(&app, 80, 24).contains("Prompt"));
}
