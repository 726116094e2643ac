//! `easel preset ...` and `easel generate --preset`, run as the real binary with EASEL_HOME in a
//! temporary folder.
use easel::engine::schedulers::SamplerKind;
use easel::output::png::read_recipe;
use easel::presets::{Preset, BUILTINS};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("easel-presets-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn presets(&self) -> PathBuf {
        self.path().join("config/presets")
    }

    fn trash(&self) -> PathBuf {
        self.path().join("data/trash/presets")
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
        cmd.env("EASEL_HOME", self.path())
            .env_remove("VISUAL")
            .env_remove("EDITOR")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed:\n{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
        err
    }

    fn file(&self, name: &str) -> PathBuf {
        self.presets().join(format!("{name}.toml"))
    }

    fn write(&self, name: &str, text: &[u8]) -> PathBuf {
        std::fs::create_dir_all(self.presets()).unwrap();
        let path = self.file(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn preset(&self, name: &str) -> Preset {
        let text = std::fs::read_to_string(self.file(name)).unwrap();
        Preset::parse(&text, name).unwrap()
    }

    fn trash_files(&self) -> Vec<PathBuf> {
        files(&self.trash())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The names `list` prints, first word of each line.
fn listed(home: &Home) -> Vec<String> {
    home.ok(&["preset", "list"])
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn builtins_are_listed_shown_and_exported() {
    let home = Home::new();
    let names = listed(&home);
    let mut builtin_names: Vec<String> = BUILTINS.iter().map(|(n, _)| n.to_string()).collect();
    builtin_names.sort();
    assert_eq!(names, builtin_names);
    assert!(names.len() >= 12);
    for want in [
        "photographic",
        "portrait",
        "cinematic",
        "anime",
        "pixel-art",
        "sd15-draft",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}");
    }
    let list = home.ok(&["preset", "list"]);
    assert!(list.lines().all(|l| l.contains("built-in")), "{list}");

    let rows = json_lines(&home.ok(&["preset", "list", "--json"]));
    assert_eq!(rows.len(), BUILTINS.len());
    let cinematic = rows.iter().find(|r| r["name"] == "cinematic").unwrap();
    assert_eq!(cinematic["source"], "built-in");
    assert_eq!(cinematic["path"], Value::Null);
    assert_eq!(cinematic["recipe"]["width"], 768);
    assert!(cinematic["recipe"].get("seed").is_none());

    for (name, body) in BUILTINS {
        let shown = home.ok(&["preset", "show", name]);
        let (first, rest) = shown.split_once('\n').unwrap();
        assert!(
            first.starts_with(&format!("# {name}: built into easel")),
            "{first}"
        );
        assert_eq!(rest, *body);
        let p = Preset::parse(&shown, name).unwrap();
        assert!(p.sets_anything(), "{name}");
    }
    let (name, body) = BUILTINS[0];
    assert_eq!(home.ok(&["preset", "export", name]), body);
    let v: Value = serde_json::from_str(&home.ok(&["preset", "show", "anime", "--json"])).unwrap();
    assert_eq!(
        v["toml"],
        easel::presets::builtin::builtin("anime").unwrap()
    );
    assert_eq!(v["recipe"]["sampler"], "euler_a");
    assert!(!home.presets().exists(), "reading writes nothing");
}

#[test]
fn save_show_rename_export_import_and_rm_round_trip() {
    let home = Home::new();
    let out = home.ok(&[
        "preset",
        "save",
        "golden",
        "--prompt",
        "{prompt}, golden hour, 50mm",
        "-n",
        "harsh light",
        "--sampler",
        "Euler",
        "--steps",
        "28",
        "--cfg",
        "6.5",
        "-W",
        "640",
        "-H",
        "448",
        "-d",
        "warm evening light",
        "--tag",
        "photo",
        "--tag",
        "warm",
    ]);
    assert!(out.contains("saved preset golden"), "{out}");
    let p = home.preset("golden");
    assert_eq!(p.description.as_deref(), Some("warm evening light"));
    assert_eq!(p.tags, ["photo", "warm"]);
    assert_eq!(p.patch.sampler, Some(SamplerKind::Euler));
    assert_eq!((p.patch.steps, p.patch.cfg), (Some(28), Some(6.5)));
    assert_eq!((p.patch.width, p.patch.height), (Some(640), Some(448)));

    let v: Value = serde_json::from_str(&home.ok(&["preset", "show", "golden", "--json"])).unwrap();
    assert_eq!(v["source"], "user");
    assert_eq!(v["path"], home.file("golden").display().to_string());
    assert_eq!(v["recipe"]["prompt"], "{prompt}, golden hour, 50mm");
    assert_eq!(v["recipe"]["negative_prompt"], "harsh light");
    let rows = json_lines(&home.ok(&["preset", "list", "--json"]));
    assert_eq!(rows.len(), BUILTINS.len() + 1);
    let list = home.ok(&["preset", "list"]);
    let line = list.lines().find(|l| l.starts_with("golden ")).unwrap();
    assert!(
        line.contains("user") && line.contains("warm evening light"),
        "{line}"
    );

    // No silent overwrite.
    let before = std::fs::read(home.file("golden")).unwrap();
    let err = home.fails(&["preset", "save", "golden", "--steps", "5"]);
    assert!(
        err.contains("already have a preset named \"golden\"") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(home.file("golden")).unwrap(), before);
    assert!(home.trash_files().is_empty());
    let err = home.fails(&["preset", "save", "empty"]);
    assert!(err.contains("nothing to save"), "{err}");
    let err = home.fails(&["preset", "save", "bad", "--steps", "0"]);
    assert!(err.contains("steps must be between 1 and 1000"), "{err}");
    assert!(!home.file("empty").exists() && !home.file("bad").exists());

    // Export to a file and back in under another name: the same bytes.
    let exported = home.path().join("golden-copy.toml");
    home.ok(&["preset", "export", "golden", exported.to_str().unwrap()]);
    assert_eq!(std::fs::read(&exported).unwrap(), before);
    assert_eq!(
        home.ok(&["preset", "export", "golden"]).as_bytes(),
        &before[..]
    );
    let err = home.fails(&["preset", "export", "golden", exported.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    let out = home.ok(&["preset", "import", exported.to_str().unwrap()]);
    assert!(out.contains("imported preset golden-copy"), "{out}");
    assert_eq!(std::fs::read(home.file("golden-copy")).unwrap(), before);
    let err = home.fails(&["preset", "import", exported.to_str().unwrap()]);
    assert!(
        err.contains("already have a preset named \"golden-copy\""),
        "{err}"
    );
    home.ok(&[
        "preset",
        "import",
        exported.to_str().unwrap(),
        "--name",
        "golden2",
    ]);
    assert_eq!(std::fs::read(home.file("golden2")).unwrap(), before);

    // Standard input needs a name.
    let mut child = home
        .cmd()
        .args(["preset", "import", "-", "--name", "piped"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"schema_version = 1\nsteps = 9\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(home.preset("piped").patch.steps, Some(9));
    assert!(home.fails(&["preset", "import", "-"]).contains("--name"));

    // A bad file is refused whole.
    let bad = home.path().join("bad.toml");
    std::fs::write(&bad, "schema_version = 1\ncfg = \"high\"\n").unwrap();
    let err = home.fails(&["preset", "import", bad.to_str().unwrap()]);
    assert!(err.contains("bad.toml:2:7"), "{err}");
    assert!(!home.file("bad").exists());

    // Replace with --force: the old version goes to the trash.
    home.ok(&["preset", "save", "golden", "--steps", "5", "--force"]);
    let p = home.preset("golden");
    assert_eq!(p.patch.steps, Some(5));
    assert_eq!(p.patch.prompt, None, "save replaces the recipe fields");
    assert_eq!(p.description.as_deref(), Some("warm evening light"), "kept");
    let trash = home.trash_files();
    assert_eq!(trash.len(), 1);
    assert_eq!(std::fs::read(&trash[0]).unwrap(), before);

    // Rename keeps the bytes.
    let bytes = std::fs::read(home.file("golden")).unwrap();
    let out = home.ok(&["preset", "rename", "golden", "dusk"]);
    assert!(out.contains("renamed golden to dusk"), "{out}");
    assert!(!home.file("golden").exists());
    assert_eq!(std::fs::read(home.file("dusk")).unwrap(), bytes);
    let err = home.fails(&["preset", "rename", "dusk", "golden2"]);
    assert!(err.contains("--force"), "{err}");
    let err = home.fails(&["preset", "rename", "nosuch", "x"]);
    assert!(err.contains("no preset named \"nosuch\""), "{err}");

    // rm keeps a copy.
    let out = home.ok(&["preset", "rm", "dusk"]);
    assert!(out.contains("removed preset dusk"), "{out}");
    assert!(!home.file("dusk").exists());
    assert!(home
        .trash_files()
        .iter()
        .any(|t| std::fs::read(t).unwrap() == bytes));
    let err = home.fails(&["preset", "rm", "dusk"]);
    assert!(err.contains("no preset named \"dusk\""), "{err}");
    let err = home.fails(&["preset", "show", "golden-cpy"]);
    assert!(err.contains("did you mean golden-copy?"), "{err}");
    let names = listed(&home);
    assert!(names.contains(&"golden-copy".to_string()) && !names.contains(&"dusk".to_string()));
}

#[test]
fn a_users_preset_shadows_the_builtin() {
    let home = Home::new();
    let err = home.fails(&["preset", "rm", "anime"]);
    assert!(
        err.contains("\"anime\" is a built-in preset and cannot be removed"),
        "{err}"
    );
    let err = home.fails(&["preset", "rename", "anime", "manga"]);
    assert!(
        err.contains("cannot be renamed") && err.contains("export anime"),
        "{err}"
    );

    let out = home.run(&["preset", "save", "anime", "--steps", "11", "-d", "mine"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("hides the built-in preset anime"));
    let list = home.ok(&["preset", "list"]);
    let lines: Vec<&str> = list.lines().filter(|l| l.starts_with("anime ")).collect();
    assert_eq!(lines.len(), 1, "{list}");
    assert!(lines[0].contains("user, hides built-in") && lines[0].contains("mine"));
    let v: Value = serde_json::from_str(&home.ok(&["preset", "show", "anime", "--json"])).unwrap();
    assert_eq!(
        (v["source"].as_str(), v["shadows_builtin"].as_bool()),
        (Some("user"), Some(true))
    );
    assert_eq!(v["recipe"]["steps"], 11);
    assert!(home
        .ok(&["preset", "show", "anime"])
        .contains(&home.file("anime").display().to_string()));

    let out = home.ok(&["preset", "rm", "anime"]);
    assert!(
        out.contains("built-in preset anime is in use again"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&home.ok(&["preset", "show", "anime", "--json"])).unwrap();
    assert_eq!(v["source"], "built-in");
}

#[test]
fn names_are_checked_before_touching_files() {
    let home = Home::new();
    let outside = home.path().join("escaped.toml");
    for (name, why) in [
        ("../escaped", "not a path"),
        ("a/b", "not a path"),
        ("..", "\"..\""),
        ("two words", "not allowed"),
        ("cinematic.toml", "leave out the .toml"),
        ("", "empty"),
        (".hidden", "start with a letter or a digit"),
    ] {
        let err = home.fails(&["preset", "save", name, "--steps", "5"]);
        assert!(
            err.contains("is not a usable preset name") && err.contains(why),
            "{name}: {err}"
        );
    }
    for args in [
        &["preset", "show", "../escaped"][..],
        &["preset", "rm", "../escaped"],
        &["preset", "rename", "anime", "../escaped"],
        &["preset", "edit", "../escaped"],
    ] {
        let err = home.fails(args);
        assert!(
            err.contains("is not a usable preset name"),
            "{args:?}: {err}"
        );
    }
    assert!(!outside.exists());
    assert!(files(&home.presets())
        .iter()
        .all(|p| p.ends_with(".presets.lock")));
}

#[test]
fn a_broken_file_is_reported_with_line_and_column_and_left_alone() {
    let home = Home::new();
    home.ok(&["preset", "save", "good", "--steps", "7"]);
    let syntax = b"schema_version = 1\nprompt = \"{prompt}, unclosed\nsteps = 20\n".to_vec();
    let value = b"# mine\nschema_version = 1\nsteps = 0\n".to_vec();
    let newer = b"schema_version = 99\nsteps = 20\nhyper = true\n".to_vec();
    let latin1 = b"schema_version = 1\nprompt = \"caf\xe9\"\n".to_vec();
    let broken = [
        ("syntax", &syntax, "syntax.toml:2:"),
        (
            "value",
            &value,
            "value.toml:3:9: steps must be between 1 and 1000",
        ),
        (
            "newer",
            &newer,
            "newer.toml:1:18: schema_version 99 is newer",
        ),
        ("latin1", &latin1, "latin1.toml:2:14: this is not UTF-8"),
        ("photographic", &value, "photographic.toml:3:9"),
    ];
    for (name, bytes, _) in &broken {
        home.write(name, bytes);
    }
    let out = home.run(&["preset", "list"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        names.contains(&"good") && names.contains(&"anime"),
        "{stdout}"
    );
    for (name, _, at) in &broken {
        assert!(!names.contains(name), "{name} listed:\n{stdout}");
        assert!(stderr.contains(at), "{at} not in:\n{stderr}");
    }
    assert_eq!(stderr.matches("warning:").count(), broken.len(), "{stderr}");
    let json = home.run(&["preset", "list", "--json"]);
    assert_eq!(json_lines(&text(&json.stdout)).len(), names.len());

    for (name, _, at) in &broken {
        assert!(home.fails(&["preset", "show", name]).contains(at));
        assert!(home.fails(&["preset", "export", name]).contains(at));
        let err = home.fails(&["generate", "a fox", "--preset", name, "-m", "m"]);
        assert!(err.contains(at), "{err}");
    }
    // Saving without --force does not touch it either.
    assert!(home
        .fails(&["preset", "save", "value", "--steps", "3"])
        .contains("--force"));
    for (name, bytes, _) in &broken {
        assert_eq!(
            &std::fs::read(home.file(name)).unwrap(),
            *bytes,
            "{name} changed"
        );
    }
    // An explicit --force replaces it, and the broken text is kept in the trash.
    home.ok(&["preset", "save", "value", "--steps", "3", "--force"]);
    assert_eq!(home.preset("value").patch.steps, Some(3));
    let trash = home.trash_files();
    assert_eq!(trash.len(), 1);
    assert_eq!(std::fs::read(&trash[0]).unwrap(), value);
}

#[test]
fn unknown_fields_survive_rename_save_and_edit() {
    let home = Home::new();
    let original = "# from a newer easel\n\
                    schema_version = 1\n\
                    description = \"film look\"\n\
                    hires_scale = 2\n\
                    steps = 20\n\
                    stepz = 4\n\
                    \n\
                    [[loras]]\n\
                    name = \"film\" # the LoRA\n\
                    weight = 0.7\n";
    home.write("film", original.as_bytes());
    let out = home.run(&["preset", "list"]);
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("film.toml").count(),
        1,
        "warned once: {stderr}"
    );
    assert!(
        stderr.contains(
            "kept but not used by this easel: hires_scale, stepz (did you mean steps?), loras"
        ),
        "{stderr}"
    );

    home.ok(&["preset", "rename", "film", "film2"]);
    assert_eq!(
        std::fs::read_to_string(home.file("film2")).unwrap(),
        original
    );

    let out = home.run(&[
        "preset", "save", "film2", "--steps", "30", "--cfg", "5", "--force",
    ]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("kept fields this easel does not use: hires_scale"));
    let p = home.preset("film2");
    assert_eq!((p.patch.steps, p.patch.cfg), (Some(30), Some(5.0)));
    assert_eq!(p.description.as_deref(), Some("film look"));
    let kept: toml::Table =
        toml::from_str(&std::fs::read_to_string(home.file("film2")).unwrap()).unwrap();
    let before: toml::Table = toml::from_str(original).unwrap();
    for key in ["hires_scale", "stepz", "loras"] {
        assert_eq!(kept[key], before[key], "{key}");
    }

    // An edit that touches another line leaves them too.
    let editor = home.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^cfg = 5.0$/cfg = 4.5/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&editor);
    let out = home
        .cmd()
        .args(["preset", "edit", "film2"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p = home.preset("film2");
    assert_eq!(p.patch.cfg, Some(4.5));
    assert_eq!(p.extra.len(), 3);
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn edit_copies_builtins_on_change_and_keeps_broken_edits() {
    let home = Home::new();
    let edit = |name: &str, script: &str, var: &str| {
        let editor = home.path().join("ed.sh");
        std::fs::write(&editor, format!("#!/bin/sh\n{script}\n")).unwrap();
        make_executable(&editor);
        home.cmd()
            .args(["preset", "edit", name])
            .env(var, &editor)
            .output()
            .unwrap()
    };
    // Looking without changing copies nothing.
    let out = edit("watercolor", "true", "EDITOR");
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("no changes to watercolor"));
    assert!(!home.file("watercolor").exists());

    let out = edit(
        "watercolor",
        "sed -i 's/^steps = 25$/steps = 40/' \"$1\"",
        "VISUAL",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mine = std::fs::read_to_string(home.file("watercolor")).unwrap();
    let builtin = easel::presets::builtin::builtin("watercolor").unwrap();
    assert_eq!(mine, builtin.replace("steps = 25\n", "steps = 40\n"));
    let v: Value =
        serde_json::from_str(&home.ok(&["preset", "show", "watercolor", "--json"])).unwrap();
    assert_eq!(
        (v["source"].as_str(), v["recipe"]["steps"].as_u64()),
        (Some("user"), Some(40))
    );

    // A broken edit is saved as written, reported with line and column, and skipped.
    let out = edit(
        "watercolor",
        "sed -i 's/^steps = 40$/steps = forty/' \"$1\"",
        "EDITOR",
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let at = format!("{}:", home.file("watercolor").display());
    assert!(
        stderr.contains(&at) && stderr.contains("preset edit watercolor"),
        "{stderr}"
    );
    let broken = std::fs::read_to_string(home.file("watercolor")).unwrap();
    assert!(broken.contains("steps = forty"));
    assert!(text(&home.run(&["preset", "list"]).stderr).contains(&at));
    let out = edit(
        "watercolor",
        "sed -i 's/^steps = forty$/steps = 41/' \"$1\"",
        "EDITOR",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(home.preset("watercolor").patch.steps, Some(41));

    // A new name starts from a template; an editor that fails changes nothing.
    let out = edit(
        "fresh",
        "sed -i 's/^# steps = 20$/steps = 6/' \"$1\"",
        "EDITOR",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(home.preset("fresh").patch.steps, Some(6));
    let before = std::fs::read(home.file("fresh")).unwrap();
    let out = edit("fresh", "echo 'steps = 1' >> \"$1\"; exit 3", "EDITOR");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("exited with status 3") && stderr.contains("kept in"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(home.file("fresh")).unwrap(), before);
}

/// A styles.csv as AUTOMATIC1111 writes it, then edited by hand.
const STYLES_CSV: &str = "\u{feff}name,prompt,negative_prompt\r\n\
Cinematic Photo,\"cinematic still of {prompt}, 35mm, \"\"moody\"\", film grain\",\"cartoon, anime, lowres\"\r\n\
Watercolor,\"watercolor painting, soft washes, paper texture\",\r\n\
Negative only,,\"text, watermark, signature\"\r\n\
\r\n\
# notes,not a style,\r\n\
Nothing at all,,\r\n\
anime,\"anime key visual of {prompt}, cel shading\",\"photo, 3d\"\r\n\
Film: Noir!, \"{prompt}, black and white, high contrast\", color\r\n\
film noir,\"{prompt}, noir, later row wins\",\r\n";

#[test]
fn automatic1111_styles_csv_becomes_presets() {
    let home = Home::new();
    let csv = home.path().join("styles.csv");
    std::fs::write(&csv, STYLES_CSV).unwrap();
    let out = home.ok(&["preset", "import-styles", csv.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    let imported: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("imported "))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(
        imported,
        [
            "cinematic-photo",
            "watercolor",
            "negative-only",
            "anime",
            "film-noir"
        ],
        "{out}"
    );
    assert!(
        out.contains("skipped  line 6, style \"# notes\": a comment row"),
        "{out}"
    );
    assert!(
        out.contains("skipped  line 7, style \"Nothing at all\": it has neither"),
        "{out}"
    );
    assert!(
        out.contains("skipped  line 9, style \"Film: Noir!\": row 10 makes the same preset name"),
        "{out}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("imported anime") && l.contains("hides the built-in")));
    assert_eq!(lines.last(), Some(&"5 imported, 3 skipped"));

    let p = home.preset("cinematic-photo");
    assert_eq!(
        p.patch.prompt.as_deref(),
        Some("cinematic still of {prompt}, 35mm, \"moody\", film grain")
    );
    assert_eq!(
        p.patch.negative_prompt.as_deref(),
        Some("cartoon, anime, lowres")
    );
    assert_eq!(
        p.description.as_deref(),
        Some("AUTOMATIC1111 style \"Cinematic Photo\"")
    );
    assert_eq!(p.tags, ["a1111-style"]);
    assert_eq!(home.preset("watercolor").patch.negative_prompt, None);
    assert_eq!(home.preset("negative-only").patch.prompt, None);
    assert_eq!(
        home.preset("film-noir").patch.prompt.as_deref(),
        Some("{prompt}, noir, later row wins")
    );

    // Importing again replaces nothing without --force.
    let before = std::fs::read(home.file("anime")).unwrap();
    std::fs::write(&csv, STYLES_CSV.replace("cel shading", "flat colors")).unwrap();
    let out = home.ok(&["preset", "import", "--a1111-styles", csv.to_str().unwrap()]);
    assert!(out.contains("0 imported, 8 skipped"), "{out}");
    assert!(
        out.contains("you already have a preset anime (--force replaces it)"),
        "{out}"
    );
    assert_eq!(std::fs::read(home.file("anime")).unwrap(), before);
    let out = home.ok(&["preset", "import-styles", csv.to_str().unwrap(), "--force"]);
    assert!(out.contains("5 imported, 3 skipped"), "{out}");
    assert!(home
        .preset("anime")
        .patch
        .prompt
        .unwrap()
        .contains("flat colors"));

    let err = home.fails(&["preset", "import", csv.to_str().unwrap()]);
    assert!(err.contains("import-styles"), "{err}");
    std::fs::write(&csv, "name,prompt\nx,\"never closed\n").unwrap();
    let err = home.fails(&["preset", "import-styles", csv.to_str().unwrap()]);
    assert!(
        err.contains("styles.csv:2:1") && err.contains("never closed"),
        "{err}"
    );
}

#[test]
fn parallel_writers_lose_nothing() {
    let home = Home::new();
    let writers: usize = 12;
    let mut children = Vec::new();
    for round in 0..2 {
        for i in 0..writers {
            // Half write their own preset, half fight over one.
            // Own presets get the same bytes each round; every write of "shared" differs.
            let (name, steps, prompt) = if i % 2 == 0 {
                (
                    format!("own-{i}"),
                    10 + i,
                    format!("{{prompt}}, writer {i}"),
                )
            } else {
                let prompt = format!("{{prompt}}, writer {i}, round {round}");
                ("shared".to_string(), 100 + round * 20 + i, prompt)
            };
            let mut cmd = home.cmd();
            cmd.args([
                "preset",
                "save",
                &name,
                "--steps",
                &steps.to_string(),
                "--force",
            ])
            .args(["-p", &prompt])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            children.push(cmd.spawn().unwrap());
        }
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for i in (0..writers).step_by(2) {
        assert_eq!(home.preset(&format!("own-{i}")).patch.steps, Some(10 + i));
    }
    let shared = home.preset("shared");
    let steps = shared.patch.steps.unwrap();
    let (round, i) = ((steps - 100) / 20, (steps - 100) % 20);
    assert_eq!(
        shared.patch.prompt.unwrap(),
        format!("{{prompt}}, writer {i}, round {round}"),
        "one writer's file, whole"
    );
    // Every replaced version of "shared" is in the trash, whole: 2 rounds of 6 writers, and the
    // first write replaced nothing. Rewriting the same bytes keeps no copy.
    let trash = home.trash_files();
    assert_eq!(trash.len(), writers - 1, "{trash:?}");
    for t in &trash {
        let p = Preset::parse(&std::fs::read_to_string(t).unwrap(), "trash").unwrap();
        assert!(p.patch.steps.unwrap() >= 100);
    }
    let names: Vec<String> = files(&home.presets())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        writers / 2 + 2,
        "no temporary files left: {names:?}"
    );

    // Without --force exactly one of several racing writers gets the name.
    let children: Vec<_> = (0..6)
        .map(|i| {
            home.cmd()
                .args(["preset", "save", "race", "--steps", &(i + 1).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let won: Vec<bool> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.success())
        .collect();
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let winner = won.iter().position(|w| *w).unwrap() + 1;
    assert_eq!(home.preset("race").patch.steps, Some(winner));
}

#[test]
fn generate_applies_stacked_presets_under_the_flags() {
    let home = Home::new();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1");
    home.ok(&[
        "preset",
        "save",
        "look",
        "-p",
        "photo of {prompt}",
        "-n",
        "blurry",
        "--sampler",
        "ddim",
        "--steps",
        "9",
        "--cfg",
        "3.5",
        "--seed",
        "11",
    ]);
    home.ok(&[
        "preset",
        "save",
        "small",
        "-p",
        "film grain",
        "--steps",
        "2",
        "-W",
        "64",
        "-H",
        "64",
        "--cfg",
        "4",
    ]);
    let out_png = home.path().join("fox.png");
    let out = home.run(&[
        "generate",
        "a fox",
        "-m",
        model.to_str().unwrap(),
        "--preset",
        "look",
        "--preset",
        "small",
        "--cfg",
        "5",
        "-n",
        "text",
        "--device",
        "cpu",
        "--out",
        out_png.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("presets: look, small"), "{stderr}");
    let r = read_recipe(&out_png).unwrap().expect("an easel recipe");
    assert_eq!(r.prompt, "photo of a fox, film grain");
    assert_eq!(r.negative_prompt, "text, blurry");
    assert_eq!(r.sampler, SamplerKind::Ddim, "from look");
    assert_eq!(r.steps, 2, "small comes later and wins");
    assert_eq!(r.cfg, 5.0, "the flag wins");
    assert_eq!(r.seed, 11);
    assert_eq!((r.width, r.height), (64, 64));
    assert_eq!(r.model, model.display().to_string());
    let err = home.fails(&["generate", "a fox", "-m", "m", "--preset", "nope"]);
    assert!(err.contains("no preset named \"nope\""), "{err}");
}
