//! Presets: named, possibly partial recipes in TOML files a person can edit, stacked onto a
//! render AUTOMATIC1111-style (`{prompt}` in a preset's prompt marks where the user's goes).
//! Built-ins ship in the binary; the user's own live one file each in `<config>/presets/`.
pub mod builtin;
pub mod error;
pub mod file;
pub mod merge;
pub mod name;
pub mod store;
pub mod styles;

pub use builtin::BUILTINS;
pub use error::{PresetError, Result};
pub use file::{Preset, PRESET_SCHEMA_VERSION};
pub use merge::{merge_prompt, resolve};
pub use name::{check_name, slug};
pub use store::{EditBase, Entry, Listing, PresetStore, Removed, Saved, Source};

use crate::recipe::RecipePatch;

/// Loads the presets named on a command line, in order, for `resolve`.
pub fn load_stack(store: &PresetStore, names: &[String]) -> Result<Vec<Entry>> {
    names.iter().map(|n| store.get(n)).collect()
}

/// The recipe fields after the named presets: `below` < presets (in order) < `flags`.
pub fn apply_named(
    store: &PresetStore,
    names: &[String],
    below: &RecipePatch,
    flags: &RecipePatch,
) -> Result<(RecipePatch, Vec<Entry>)> {
    let stack = load_stack(store, names)?;
    let presets: Vec<&Preset> = stack.iter().map(|e| &e.preset).collect();
    Ok((merge::resolve(below, &presets, flags), stack))
}
