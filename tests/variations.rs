//! Variations on the real binary with the tiny model (32x32, 1 step): seed sweeps with
//! wildcards, the prompt matrix, and X/Y grids with their contact sheets.
use easel::output::png::{read_recipe, read_text_chunks};
use easel::recipe::Recipe;
use easel::variations::wildcards::Wildcards;
use serde_json::Value;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

fn easel(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(args)
        .env("EASEL_HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("easel runs")
}

/// `generate` with the tiny model at 32x32, 1 step, on the CPU, then `extra`.
fn generate(home: &Path, extra: &[&str]) -> Output {
    let model = tiny_sd1();
    let mut args = vec![
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--steps",
        "1",
        "-W",
        "32",
        "-H",
        "32",
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    easel(home, &args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

struct Rgb {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

fn decode(path: &Path) -> Rgb {
    let file = std::fs::File::open(path).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    Rgb {
        w: info.width as usize,
        h: info.height as usize,
        px: buf,
    }
}

/// Where `cell` appears, pixel for pixel, inside `sheet`.
fn find(sheet: &Rgb, cell: &Rgb) -> Option<(usize, usize)> {
    let row = |img: &Rgb, x: usize, y: usize, w: usize| {
        let start = (y * img.w + x) * 3;
        img.px[start..start + w * 3].to_vec()
    };
    let first = row(cell, 0, 0, cell.w);
    for y in 0..=sheet.h.checked_sub(cell.h)? {
        for x in 0..=sheet.w - cell.w {
            if row(sheet, x, y, cell.w) == first
                && (1..cell.h).all(|r| row(sheet, x, y + r, cell.w) == row(cell, 0, r, cell.w))
            {
                return Some((x, y));
            }
        }
    }
    None
}

fn recipe(path: &Path) -> Recipe {
    read_recipe(path).unwrap().expect("an easel recipe")
}

#[test]
fn seed_sweep_with_wildcards() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let wildcards = home.join("config/wildcards");
    std::fs::create_dir_all(&wildcards).unwrap();
    std::fs::write(
        wildcards.join("animal.txt"),
        "# animals\nfox\n\n  owl  \nheron\n",
    )
    .unwrap();
    let template = "a {red|green|blue} __animal__";
    let out_file = root.path().join("sweep.png");
    let out = generate(
        &home,
        &[
            template,
            "--seed",
            "100",
            "--batch",
            "8",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let paths: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    let want: Vec<PathBuf> = (1..=8)
        .map(|i| root.path().join(format!("sweep-{i}.png")))
        .collect();
    assert_eq!(paths, want);
    let mut prompts = std::collections::BTreeSet::new();
    for (i, p) in paths.iter().enumerate() {
        let r = recipe(p);
        let seed = 100 + i as u64;
        assert_eq!((r.seed, r.batch_size, r.index), (seed, 1, 0));
        assert_eq!(r.prompt_template.as_deref(), Some(template));
        let words: Vec<&str> = r.prompt.split(' ').collect();
        assert_eq!(words.len(), 3, "{}", r.prompt);
        assert!(["red", "green", "blue"].contains(&words[1]), "{}", r.prompt);
        assert!(["fox", "owl", "heron"].contains(&words[2]), "{}", r.prompt);
        // The pick is the seed's: the library's expansion of the template with this seed.
        assert_eq!(
            r.prompt,
            Wildcards::new(&wildcards).expand(template, seed).unwrap()
        );
        let chunks = read_text_chunks(p).unwrap();
        let params = &chunks.iter().find(|(k, _)| k == "parameters").unwrap().1;
        assert!(
            params.starts_with(&format!("{}\nSteps: 1", r.prompt)),
            "{params}"
        );
        prompts.insert(r.prompt);
    }
    assert!(prompts.len() > 1, "picks should vary with the seed");

    // Image 4 of the sweep is reproduced alone from its own PNG.
    let lone = root.path().join("lone.png");
    let out = easel(
        &home,
        &[
            "generate",
            "--from",
            paths[3].to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            lone.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(recipe(&lone).prompt, recipe(&paths[3]).prompt);
    assert_eq!(recipe(&lone).prompt_template, None);
    assert!(decode(&lone).px == decode(&paths[3]).px);

    let out = generate(
        &home,
        &[
            "a __nope__",
            "--out",
            root.path().join("x/").to_str().unwrap(),
        ],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&wildcards.join("nope.txt").display().to_string()),
        "{stderr}"
    );
    assert!(!root.path().join("x").exists());
}

#[test]
fn prompt_matrix_renders_every_combination() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let sheet_path = root.path().join("m.png");
    let out = generate(
        &home,
        &[
            "a fox|in snow|at night",
            "--prompt-matrix",
            "--seed",
            "5",
            "--json",
            "--out",
            sheet_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reports = json_lines(&out);
    assert_eq!(reports.len(), 5);
    let cells: Vec<PathBuf> = reports[..4]
        .iter()
        .map(|r| PathBuf::from(r["path"].as_str().unwrap()))
        .collect();
    let prompts: Vec<String> = cells.iter().map(|p| recipe(p).prompt).collect();
    assert_eq!(
        prompts,
        [
            "a fox",
            "a fox, in snow",
            "a fox, at night",
            "a fox, in snow, at night"
        ]
    );
    assert!(cells.iter().all(|p| recipe(p).seed == 5));
    let sheet = &reports[4];
    assert_eq!(sheet["sheet"], sheet_path.display().to_string());
    assert_eq!(
        (&sheet["kind"], &sheet["columns"], &sheet["rows"]),
        (&Value::from("matrix"), &Value::from(2), &Value::from(2))
    );
    let image = decode(&sheet_path);
    assert_eq!(
        (sheet["width"].as_u64(), sheet["height"].as_u64()),
        (Some(image.w as u64), Some(image.h as u64))
    );
    let at: Vec<(usize, usize)> = cells
        .iter()
        .map(|c| find(&image, &decode(c)).expect("every cell on the sheet"))
        .collect();
    // Columns: "in snow" absent, present; rows: "at night" absent, present.
    assert!(at[0].1 == at[1].1 && at[1].0 > at[0].0, "{at:?}");
    assert!(at[2].0 == at[0].0 && at[2].1 > at[0].1, "{at:?}");
    assert_eq!(at[3], (at[1].0, at[2].1));
    let info = easel(&home, &["info", sheet_path.to_str().unwrap()]);
    let stderr = text(&info.stderr);
    assert!(!info.status.success());
    assert!(
        stderr.contains("is a contact sheet") && stderr.contains("m-1.png"),
        "{stderr}"
    );
}

#[test]
fn grid_writes_cells_and_a_labeled_sheet() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let dir = root.path().join("grid");
    let out = generate(
        &home,
        &[
            "a red fox",
            "--seed",
            "3",
            "--grid-x",
            "cfg=4,7,10",
            "--grid-y",
            "sampler=euler_a,ddim",
            "--json",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reports = json_lines(&out);
    assert_eq!(reports.len(), 7);
    let cells: Vec<PathBuf> = reports[..6]
        .iter()
        .map(|r| PathBuf::from(r["path"].as_str().unwrap()))
        .collect();
    let settings: Vec<(f64, String, u64)> = cells
        .iter()
        .map(|p| {
            let r = recipe(p);
            (r.cfg, r.sampler.name().to_string(), r.seed)
        })
        .collect();
    let expected: Vec<(f64, String, u64)> = ["euler_a", "ddim"]
        .iter()
        .flat_map(|s| [4.0, 7.0, 10.0].map(|c| (c, s.to_string(), 3)))
        .collect();
    assert_eq!(settings, expected);
    let sheet = &reports[6];
    assert_eq!(sheet["kind"], "grid");
    assert_eq!(
        (sheet["columns"].as_u64(), sheet["rows"].as_u64()),
        (Some(3), Some(2))
    );
    let sheet_path = PathBuf::from(sheet["sheet"].as_str().unwrap());
    assert_eq!(sheet_path.parent(), Some(dir.as_path()));
    assert!(sheet_path.to_string_lossy().ends_with("-3-grid.png"));
    let image = decode(&sheet_path);
    let at: Vec<(usize, usize)> = cells
        .iter()
        .map(|c| find(&image, &decode(c)).expect("every cell on the sheet"))
        .collect();
    for r in 0..2 {
        for c in 0..3 {
            let (x, y) = at[r * 3 + c];
            assert_eq!(y, at[r * 3].1, "{at:?}");
            assert_eq!(x, at[c].0, "{at:?}");
        }
    }
    assert!(at[0].0 < at[1].0 && at[1].0 < at[2].0 && at[0].1 < at[3].1);
    // Labels: ink above the first row (column labels) and left of the first column (row labels).
    let dark = |x0: usize, x1: usize, y0: usize, y1: usize| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| image.px[(y * image.w + x) * 3] < 100)
            .count()
    };
    assert!(dark(at[0].0, image.w, 0, at[0].1) > 50);
    assert!(dark(0, at[0].0, at[0].1, image.h) > 50);
    // The right and bottom margins are one gap each: the sheet ends just after the last cell.
    let gap = at[1].0 - at[0].0 - 32;
    assert_eq!(image.w, at[2].0 + 32 + gap);
    assert_eq!(image.h, at[3].1 + 32 + gap);
}

#[test]
fn grid_cells_of_different_sizes_are_centred() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let sheet_path = root.path().join("sizes.png");
    let out = generate(
        &home,
        &[
            "a red fox",
            "--grid-x",
            "size=32x32,48x40",
            "--grid-y",
            "seed=1,2",
            "--out",
            sheet_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cells: Vec<PathBuf> = (1..=4)
        .map(|i| root.path().join(format!("sizes-{i}.png")))
        .collect();
    let printed: Vec<PathBuf> = text(&out.stdout).lines().map(PathBuf::from).collect();
    assert_eq!(printed[..4], cells[..]);
    assert_eq!(printed[4], sheet_path);
    let sizes: Vec<(usize, usize, u64)> = cells
        .iter()
        .map(|p| {
            let img = decode(p);
            (img.w, img.h, recipe(p).seed)
        })
        .collect();
    assert_eq!(sizes, [(32, 32, 1), (48, 40, 1), (32, 32, 2), (48, 40, 2)]);
    let image = decode(&sheet_path);
    let at: Vec<(usize, usize)> = cells
        .iter()
        .map(|c| find(&image, &decode(c)).expect("every cell on the sheet"))
        .collect();
    // Boxes are 48x40: the 32x32 cells sit 8 px in and 4 px down inside theirs.
    let gap = at[2].1 - at[0].1 - 40;
    assert_eq!(at[1].1 + 4, at[0].1);
    assert_eq!(at[0].0 - 8 + 48 + gap, at[1].0);
    assert_eq!(at[3], (at[1].0, at[1].1 + 40 + gap));
    assert_eq!(image.w, at[1].0 + 48 + gap);
}

#[test]
fn variation_mistakes_are_refused_before_loading() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out_dir = root.path().join("out");
    let o = out_dir.to_str().unwrap();
    for (args, message) in [
        (
            vec!["a fox", "--prompt-matrix", "--out", o],
            "optional parts after `|`",
        ),
        (
            vec!["a fox|b", "--prompt-matrix", "--batch", "2", "--out", o],
            "--batch",
        ),
        (
            vec!["a fox", "--grid-x", "prompt_sr=cat,dog", "--out", o],
            "\"cat\" occurs in neither",
        ),
        (
            vec!["a fox", "--grid-x", "colour=red", "--out", o],
            "unknown grid field",
        ),
        (
            vec!["a fox", "--grid-x", "model=no-such-model", "--out", o],
            "no-such-model does not exist",
        ),
    ] {
        let out = generate(&home, &args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("loading"), "{args:?}: {stderr}");
        assert!(!out_dir.exists());
    }
}
