//! The presets panel's rows: each preset with what it changes, in words.
use super::app::PresetRow;
use crate::presets::PresetStore;
use crate::recipe::RecipePatch;

pub fn rows(store: &PresetStore) -> Vec<PresetRow> {
    store
        .list()
        .entries
        .into_iter()
        .map(|e| PresetRow {
            builtin: e.is_builtin(),
            summary: summary(&e.preset.patch),
            name: e.name,
        })
        .collect()
}

/// "prompt \"..., {prompt}\", steps 30, cfg 5": the fields a preset sets.
pub fn summary(p: &RecipePatch) -> String {
    let mut parts = Vec::new();
    let mut add = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{key} {v}"));
        }
    };
    add("model", p.model.clone());
    add("prompt", p.prompt.as_ref().map(|s| format!("{s:?}")));
    add(
        "negative",
        p.negative_prompt.as_ref().map(|s| format!("{s:?}")),
    );
    add("sampler", p.sampler.map(|s| s.name().to_string()));
    add("schedule", p.schedule.map(|s| s.name().to_string()));
    add("steps", p.steps.map(|v| v.to_string()));
    add("cfg", p.cfg.map(|v| v.to_string()));
    add("seed", p.seed.map(|v| v.to_string()));
    add("width", p.width.map(|v| v.to_string()));
    add("height", p.height.map(|v| v.to_string()));
    add("batch", p.batch_size.map(|v| v.to_string()));
    add("clip skip", p.clip_skip.map(|v| v.to_string()));
    if parts.is_empty() {
        "nothing".to_string()
    } else {
        parts.join(", ")
    }
}
