//! The model picker's rows: the catalog and registered models as `easel models list` sees
//! them (read from disk, never the network), or the models a remote host offers.
use super::app::ModelRow;
use crate::models::human_bytes;
use crate::models::listing::{self, Row, Status};
use crate::models::registry::Locations;

/// This machine's models: the catalog in its order, then registered ones.
pub fn local() -> Result<Vec<ModelRow>, String> {
    let loc = Locations::discover().map_err(|e| e.to_string())?;
    let rows = listing::rows(&loc).map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(row).collect())
}

/// The models in the remote worker's models folder, by the names its jobs take.
pub fn remote(host: &str, names: &[String]) -> Vec<ModelRow> {
    names
        .iter()
        .map(|name| ModelRow {
            name: name.clone(),
            detail: format!("on {host}"),
            ready: true,
            default: false,
            hint: None,
        })
        .collect()
}

fn row(r: Row) -> ModelRow {
    let mut detail = Vec::new();
    if let Some(v) = &r.version {
        detail.push(v.clone());
    }
    if let Some(size) = r.size {
        let approx = if r.size_exact { "" } else { "~" };
        detail.push(format!("{approx}{}", human_bytes(size)));
    }
    detail.push(r.status.label().to_string());
    if let Some(title) = &r.title {
        detail.push(title.clone());
    } else if let Some(location) = &r.location {
        detail.push(location.display().to_string());
    }
    let size = r
        .size
        .map(|s| format!(" ({})", human_bytes(s)))
        .unwrap_or_default();
    let hint = match r.status {
        Status::Ready => None,
        Status::NotPulled => Some(format!(
            "download it first with `easel models pull {}`{size} in a shell, then pick it here",
            r.name
        )),
        Status::Partial => Some(format!(
            "its download stopped part way: `easel models pull {}` resumes it",
            r.name
        )),
        Status::Missing if r.source == "local" => Some(format!(
            "its files are gone: `easel models rm {0}` forgets it, `easel models add PATH --name {0}` registers it again",
            r.name
        )),
        Status::Missing => Some(format!(
            "its files are gone: `easel models pull {0}` fetches them again, or `easel models rm {0}` forgets it",
            r.name
        )),
    };
    ModelRow {
        name: r.name,
        detail: detail.join("  "),
        ready: r.status == Status::Ready,
        default: r.default,
        hint,
    }
}
