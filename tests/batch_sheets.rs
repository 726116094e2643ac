//! Contact sheets in a batch: a grid or prompt-matrix job's sheet is drawn by whichever shard
//! records its last cell, equals the sheet `easel generate` draws for the same recipe, is not
//! redrawn by a rerun, and a missing one is reported by `batch status` and drawn again.
mod batch_support;

use batch_support::*;
use std::collections::BTreeSet;
use std::path::Path;

const PLAN: &str = r#"
[[jobs]]
name = "grid"
prompt = "a lighthouse at dusk"
grid_x = "cfg=3,5"
grid_y = "steps=1,2"
seed = 4

[[jobs]]
name = "cats"
prompt = "a cat|hat|scarf"
prompt_matrix = true
seeds = [1, 2]
"#;

const SHEETS: [&str; 3] = ["grid-4-grid.png", "cats-1-matrix.png", "cats-2-matrix.png"];

fn plan_in(dir: &Path) -> std::path::PathBuf {
    write_plan(
        dir,
        &format!(
            "[defaults]\nmodel = \"{}\"\nsteps = 2\nwidth = 32\nheight = 32\n{PLAN}",
            tiny()
        ),
    )
}

fn shard_paths(home: &Path, plan: &Path, out: &Path, shard: &str) -> BTreeSet<String> {
    let dry = output(
        easel(home)
            .args(["batch", "--dry-run", "--json", "--shard", shard])
            .arg(plan)
            .arg("--out")
            .arg(out),
    );
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    of_kind(&events(&dry), "image")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

fn run_shard(home: &Path, plan: &Path, out: &Path, shard: &str) -> Vec<serde_json::Value> {
    let run = output(
        easel(home)
            .args(["batch", "--json", "--shard", shard])
            .arg(plan)
            .arg("--out")
            .arg(out),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    events(&run)
}

/// The sheet's cells, as its note names them.
fn sheet_cells(path: &Path) -> Vec<String> {
    let chunks = easel::output::png::read_text_chunks(path).unwrap();
    let (_, note) = chunks
        .iter()
        .find(|(k, _)| k == easel::cli::sheet::SHEET_KEY)
        .expect("the sheet has its note");
    let note: serde_json::Value = serde_json::from_str(note).unwrap();
    note["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn rgb(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

#[test]
fn the_shard_that_finishes_a_sheet_draws_it_as_generate_would() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let out = root.path().join("out");
    let plan = plan_in(root.path());

    let dry = output(easel(&home).args(["batch", "--dry-run"]).arg(&plan));
    assert!(
        text(&dry.stdout).contains("3 contact sheet(s)"),
        "{}",
        text(&dry.stdout)
    );

    // Shard 1 alone: a sheet appears only when all its cells were in that shard.
    let first = shard_paths(&home, &plan, &out, "1/2");
    let events = run_shard(&home, &plan, &out, "1/2");
    let drawn: BTreeSet<String> = of_kind(&events, "sheet")
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    let mut waiting = 0;
    for name in SHEETS {
        let path = out.join(name);
        let cells_here = !path.exists() || sheet_cells(&path).iter().all(|c| first.contains(c));
        assert!(cells_here, "{name} was drawn before all its cells were");
        assert_eq!(
            path.exists(),
            drawn.contains(&path.display().to_string()),
            "{name}: a sheet event for each sheet drawn"
        );
        if !path.exists() {
            waiting += 1;
        }
    }
    assert!(
        waiting > 0,
        "the shard split should leave a sheet to shard 2"
    );
    let status = batch_status(&home, &plan, &out);
    assert!(
        text(&status.stdout).contains(&format!(
            "contact sheets: {} made, {waiting} waiting for cells",
            3 - waiting
        )),
        "{}",
        text(&status.stdout)
    );

    // Shard 2 records the last cells: every sheet is there, each with its cells in order.
    run_shard(&home, &plan, &out, "2/2");
    for name in SHEETS {
        assert!(out.join(name).is_file(), "{name} is missing");
    }
    assert_eq!(
        sheet_cells(&out.join("grid-4-grid.png")),
        [
            "grid-0-4.png",
            "grid-1-4.png",
            "grid-2-4.png",
            "grid-3-4.png"
        ]
    );

    // The same grid through `easel generate` draws the same sheet from the same cells.
    let generated = root.path().join("generated");
    let run = output(
        easel(&home)
            .args(["generate", "a lighthouse at dusk", "--model"])
            .arg(tiny())
            .args([
                "--steps",
                "2",
                "--width",
                "32",
                "--height",
                "32",
                "--seed",
                "4",
                "--grid-x",
                "cfg=3,5",
                "--grid-y",
                "steps=1,2",
                "--out",
            ])
            .arg(&generated),
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let sheet = pngs(&generated)
        .into_keys()
        .find(|k| k.ends_with("-grid.png"))
        .expect("generate drew a sheet");
    assert_eq!(
        rgb(&generated.join(sheet)),
        rgb(&out.join("grid-4-grid.png"))
    );

    // A rerun renders nothing and leaves the sheets alone; a lost sheet is reported and redrawn.
    let before = std::fs::read(out.join("cats-2-matrix.png")).unwrap();
    let modified = std::fs::metadata(out.join("cats-2-matrix.png"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_file(out.join("cats-1-matrix.png")).unwrap();
    let status = batch_status(&home, &plan, &out);
    assert!(
        text(&status.stdout).contains("2 made, 0 waiting for cells, 1 ready to draw"),
        "{}",
        text(&status.stdout)
    );
    let events = run_shard(&home, &plan, &out, "1/1");
    assert!(of_kind(&events, "done").is_empty(), "nothing renders again");
    let drawn: Vec<&str> = of_kind(&events, "sheet")
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(drawn.len(), 1, "{drawn:?}");
    assert!(drawn[0].ends_with("cats-1-matrix.png"));
    assert_eq!(
        std::fs::read(out.join("cats-2-matrix.png")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::metadata(out.join("cats-2-matrix.png"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
}
