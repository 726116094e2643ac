//! `easel batch status PLAN.toml --out DIR`: which images of a plan are done, missing or failed,
//! across every shard that wrote into the folder. Exit status 0 only when all are done.
use super::manifest::{self, Manifest, Status};
use super::{state, LoadedPlan, StatusArgs};
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Missing images listed by path before the rest are counted.
const LIST_MAX: usize = 20;

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
    let loaded = LoadedPlan::read(&args.plan)?;
    let out_dir = loaded.out_dir(&args.out);
    let state = state::read(&out_dir)?;
    let expansion = loaded.expand(state.as_ref())?;
    let manifest = Manifest::read(&out_dir)
        .with_context(|| format!("cannot read {}", manifest::path(&out_dir).display()))?;
    let latest = manifest.latest();
    let mut done = 0;
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut by_shard: BTreeMap<String, usize> = BTreeMap::new();
    for image in &expansion.images {
        if manifest::is_done(&latest, &out_dir, &image.path, &image.recipe_hash) {
            done += 1;
            if let Some(r) = latest.get(image.path.as_str()) {
                let who = r.shard.clone().unwrap_or_else(|| "unsharded".into());
                *by_shard.entry(who).or_default() += 1;
            }
            continue;
        }
        match latest.get(image.path.as_str()) {
            Some(r) if r.status == Status::Failed && r.recipe_hash == image.recipe_hash => {
                failed.push((image.path.clone(), r.message.clone().unwrap_or_default()))
            }
            _ => missing.push(image.path.clone()),
        }
    }
    let sheets = super::sheets::count(&expansion.sheets, &out_dir, &manifest);
    let unseeded: usize = expansion.unseeded.iter().map(|u| u.images).sum();
    let total = expansion.images.len() + unseeded;
    let complete = done == total;
    if args.json {
        println!(
            "{}",
            json!({
                "plan": loaded.name,
                "out": out_dir.display().to_string(),
                "images": total,
                "done": done,
                "missing": missing.len() + unseeded,
                "failed": failed.len(),
                "complete": complete,
                "by_shard": by_shard,
                "failed_images": failed.iter().map(|(p, m)| json!({"path": p, "message": m})).collect::<Vec<_>>(),
                "missing_images": missing,
                "torn_manifest_lines": manifest.torn,
                "sheets": {"made": sheets.made, "waiting": sheets.waiting, "ready": sheets.ready},
            })
        );
    } else {
        println!(
            "{} in {}: {done} of {total} images done, {} missing, {} failed",
            loaded.name,
            out_dir.display(),
            missing.len() + unseeded,
            failed.len()
        );
        if !by_shard.is_empty() {
            let parts: Vec<String> = by_shard.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            println!("done by shard: {}", parts.join(", "));
        }
        if !expansion.sheets.is_empty() {
            println!(
                "contact sheets: {} made, {} waiting for cells, {} ready to draw (the next run draws them)",
                sheets.made, sheets.waiting, sheets.ready
            );
        }
        for (path, message) in &failed {
            println!("failed  {path}: {message}");
        }
        for path in missing.iter().take(LIST_MAX) {
            println!("missing {path}");
        }
        if missing.len() > LIST_MAX {
            println!("missing ... and {} more", missing.len() - LIST_MAX);
        }
        if unseeded > 0 {
            println!("missing {unseeded} image(s) whose random seeds are not drawn yet (the plan has not run)");
        }
        if !complete {
            println!(
                "run `easel batch {}` with the same --out (and --shard) to finish",
                loaded.name
            );
        }
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
