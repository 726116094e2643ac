//! The presets library: the styles.csv reader against Python's csv module, stacking through the
//! store, and read-modify-write from many threads.
use easel::engine::schedulers::SamplerKind;
use easel::presets::styles::{parse_csv, parse_records, read_styles, StyleRow};
use easel::presets::{apply_named, Preset, PresetStore};
use easel::recipe::RecipePatch;
use serde_json::Value;
use std::path::PathBuf;

fn reference() -> (String, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    let csv = std::fs::read_to_string(dir.join("styles/styles.csv"))
        .expect("styles.csv: run scripts/make-fixtures --only presets_ref");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("styles_ref.json")).unwrap())
            .unwrap();
    (csv, json)
}

#[test]
fn styles_csv_reads_as_pythons_csv_module_reads_it() {
    let (csv, want) = reference();
    // Python gives blank lines as empty records; DictReader (and A1111) skip them.
    let want_records: Vec<Vec<String>> = want["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|r| !r.is_empty())
        .collect();
    let got: Vec<Vec<String>> = parse_records(&csv, "styles.csv")
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(got, want_records);

    let rows = parse_csv(&csv, "styles.csv").unwrap();
    let want_rows = want["rows"].as_array().unwrap();
    assert_eq!(rows.len(), want_rows.len());
    for (row, want) in rows.iter().zip(want_rows) {
        for (column, value) in want["fields"].as_object().unwrap() {
            // Python's None for a short row reads as "".
            let want_value = value.as_str().unwrap_or("");
            assert_eq!(row.get(column), Some(want_value), "line {}", row.line);
        }
    }

    // A1111's rules on top: comment rows and rows without a name are left out.
    let styles = read_styles(&csv, "styles.csv").unwrap();
    let names: Vec<(&str, &str)> = styles
        .iter()
        .filter_map(|s| match s {
            StyleRow::Style { style, name, .. } => Some((style.as_str(), name.as_str())),
            StyleRow::Skipped { .. } => None,
        })
        .collect();
    let want_names: Vec<&str> = want_rows
        .iter()
        .map(|r| r["fields"]["name"].as_str().unwrap())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    assert_eq!(
        names.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        want_names
    );
    assert!(names.contains(&("Ünïcode 狐 style", "ünïcode-狐-style")));
    assert!(names.contains(&("Pixel \"Art\"", "pixel-art")));
    let StyleRow::Style { preset, .. } = styles
        .iter()
        .find(|s| matches!(s, StyleRow::Style { name, .. } if name == "two-lines"))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(preset.patch.negative_prompt.as_deref(), Some("a\r\nb"));
    // What is stored reads back the same, line breaks and quotes included.
    for s in &styles {
        if let StyleRow::Style { name, preset, .. } = s {
            assert_eq!(
                Preset::parse(&preset.to_toml(name), name).unwrap(),
                **preset
            );
        }
    }
}

fn store() -> (tempfile::TempDir, PresetStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = PresetStore::new(dir.path().join("presets"), dir.path().join("trash"));
    (dir, store)
}

#[test]
fn named_presets_stack_in_order_under_the_flags() {
    let (_dir, store) = store();
    let style = Preset {
        patch: RecipePatch {
            prompt: Some("{prompt}, painted in oils".into()),
            negative_prompt: Some("photo".into()),
            steps: Some(40),
            ..Default::default()
        },
        ..Default::default()
    };
    store.save("oils", &style, false).unwrap();
    let names = vec!["oils".to_string(), "sd15-draft".to_string()];
    let flags = RecipePatch {
        prompt: Some("a harbor".into()),
        seed: Some(3),
        ..Default::default()
    };
    let (r, stack) = apply_named(&store, &names, &RecipePatch::default(), &flags).unwrap();
    assert_eq!(stack.len(), 2);
    assert!(!stack[0].is_builtin() && stack[1].is_builtin());
    assert_eq!(r.prompt.as_deref(), Some("a harbor, painted in oils"));
    // sd15-draft's negative has no {prompt}: it is added after what came before.
    let draft = stack[1].preset.patch.negative_prompt.clone().unwrap();
    assert_eq!(r.negative_prompt.unwrap(), format!("photo, {draft}"));
    assert_eq!(
        r.steps, stack[1].preset.patch.steps,
        "the later preset wins"
    );
    assert_eq!(r.sampler, Some(SamplerKind::EulerAncestral));
    assert_eq!(r.seed, Some(3));

    let flags = RecipePatch {
        steps: Some(5),
        ..flags
    };
    let (r, _) = apply_named(&store, &names, &RecipePatch::default(), &flags).unwrap();
    assert_eq!(r.steps, Some(5), "flags win over presets");
    let missing = apply_named(&store, &["nope".into()], &RecipePatch::default(), &flags);
    assert!(missing.unwrap_err().to_string().contains("no preset named"));
}

#[test]
fn read_modify_write_from_many_threads_loses_no_update() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let mut start = Preset::default();
    start.patch.steps = Some(1);
    start.extra.insert("hires_scale".into(), 2.into());
    store.save("counter", &start, false).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    store
                        .update("counter", true, |old| {
                            let mut p = old.expect("the file always parses");
                            p.patch.steps = p.patch.steps.map(|s| s + 1);
                            Ok(p)
                        })
                        .unwrap();
                    store
                        .save(&format!("t{t}-{i}"), &Preset::default(), false)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let counter = store.get("counter").unwrap().preset;
    assert_eq!(counter.patch.steps, Some(81), "every increment landed");
    assert_eq!(counter.extra["hires_scale"], toml::Value::Integer(2));
    let listing = store.list();
    assert!(listing.problems.is_empty(), "{:?}", listing.problems);
    let mine = listing.entries.iter().filter(|e| !e.is_builtin()).count();
    assert_eq!(mine, 81);
    // Each increment kept the version it replaced.
    assert_eq!(std::fs::read_dir(store.trash_dir()).unwrap().count(), 80);
}
