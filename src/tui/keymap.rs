//! Keys to actions. Defaults below; `<config>/keymap.toml` may rebind any named action:
//! `render = ["f5", "ctrl-enter"]`. Keys not bound to a named action type text or move.
use super::update::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::HashMap;

/// Named actions, their default keys, and what the help overlay says of them.
pub const DEFAULTS: &[(&str, &[&str], &str)] = &[
    ("render", &["ctrl-enter", "f5"], "render (queues if busy)"),
    ("cancel", &["esc"], "close / cancel the render"),
    ("quit", &["ctrl-q"], "quit (session is kept)"),
    ("help", &["f1"], "help (? outside editors)"),
    ("save_preset", &["ctrl-s"], "save settings as preset"),
    ("presets", &["ctrl-p", "f3"], "presets panel"),
    ("gallery", &["ctrl-g", "f4"], "gallery of past renders"),
    ("models", &["ctrl-k"], "pick the model"),
    ("rename", &["f2"], "presets: rename selected"),
    ("update_preset", &["ctrl-u"], "presets: update selected"),
    ("zoom", &["f6"], "preview full screen, zoom"),
    ("favourite", &["ctrl-f"], "gallery: mark favourite"),
    ("open", &["ctrl-o"], "gallery: open the file"),
    ("focus_next", &["tab"], "next panel"),
    ("focus_prev", &["backtab"], "previous panel"),
    ("undo", &["ctrl-z"], "undo"),
    ("redo", &["ctrl-y"], "redo"),
    ("weight_up", &["ctrl-up"], "weight of word +0.1"),
    ("weight_down", &["ctrl-down"], "weight of word -0.1"),
    ("word_left", &["ctrl-left", "alt-b"], "previous word"),
    ("word_right", &["ctrl-right", "alt-f"], "next word"),
    (
        "delete_word",
        &["ctrl-w", "ctrl-backspace"],
        "delete word before",
    ),
    ("home", &["home", "ctrl-a"], "start of line"),
    ("end", &["end", "ctrl-e"], "end of line"),
    ("seed_lock", &["ctrl-l"], "lock seed / new each time"),
    ("seed_reuse", &["ctrl-r"], "reuse last seed, locked"),
    ("result_prev", &["f7"], "previous result"),
    ("result_next", &["f8"], "next result"),
    ("compare", &["f9"], "A/B compare (pin, pick)"),
];

fn named(name: &str) -> Option<Action> {
    Some(match name {
        "render" => Action::Render,
        "cancel" => Action::Cancel,
        "quit" => Action::Quit,
        "help" => Action::Help,
        "save_preset" => Action::SavePreset,
        "presets" => Action::Presets,
        "gallery" => Action::Gallery,
        "models" => Action::Models,
        "rename" => Action::Rename,
        "update_preset" => Action::UpdatePreset,
        "zoom" => Action::Zoom,
        "favourite" => Action::Favourite,
        "open" => Action::Open,
        "focus_next" => Action::FocusNext,
        "focus_prev" => Action::FocusPrev,
        "undo" => Action::Undo,
        "redo" => Action::Redo,
        "weight_up" => Action::WeightUp,
        "weight_down" => Action::WeightDown,
        "word_left" => Action::WordLeft,
        "word_right" => Action::WordRight,
        "delete_word" => Action::DeleteWord,
        "home" => Action::Home,
        "end" => Action::End,
        "seed_lock" => Action::SeedLock,
        "seed_reuse" => Action::SeedReuse,
        "result_prev" => Action::ResultPrev,
        "result_next" => Action::ResultNext,
        "compare" => Action::Compare,
        _ => return None,
    })
}

/// A key as the keymap names it: modifiers (ctrl-, alt-, shift-) and a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    code: KeyCode,
    mods: KeyModifiers,
}

pub fn parse_key(spec: &str) -> Result<Key, String> {
    let spec = spec.trim().to_lowercase();
    let mut mods = KeyModifiers::NONE;
    let mut rest = spec.as_str();
    loop {
        if let Some(r) = rest.strip_prefix("ctrl-") {
            mods |= KeyModifiers::CONTROL;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("alt-") {
            mods |= KeyModifiers::ALT;
            rest = r;
        } else if let Some(r) = rest.strip_prefix("shift-") {
            mods |= KeyModifiers::SHIFT;
            rest = r;
        } else {
            break;
        }
    }
    let code = match rest {
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "tab" => KeyCode::Tab,
        "backtab" => KeyCode::BackTab,
        "backspace" => KeyCode::Backspace,
        "delete" | "del" => KeyCode::Delete,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "pageup" => KeyCode::PageUp,
        "pagedown" => KeyCode::PageDown,
        f if f.starts_with('f') && f.len() > 1 => KeyCode::F(
            f[1..]
                .parse()
                .map_err(|_| format!("unknown key \"{spec}\""))?,
        ),
        c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap_or(' ')),
        _ => {
            return Err(format!(
                "unknown key \"{spec}\": try ctrl-s, f5, alt-enter, esc"
            ))
        }
    };
    Ok(Key { code, mods })
}

#[derive(Debug, Clone)]
pub struct Keymap {
    bound: HashMap<Key, Action>,
    /// For the help overlay: each named action's keys and description.
    pub help: Vec<(String, String)>,
}

impl Keymap {
    /// The defaults with `toml` (the keymap file's text, if any) on top.
    pub fn new(toml_text: Option<&str>) -> Result<Self, String> {
        let mut table: Vec<(String, Vec<String>, String)> = DEFAULTS
            .iter()
            .map(|(n, k, d)| {
                (
                    n.to_string(),
                    k.iter().map(|s| s.to_string()).collect(),
                    d.to_string(),
                )
            })
            .collect();
        let mut user_set = Vec::new();
        if let Some(text) = toml_text {
            let user: toml::Table = text
                .parse()
                .map_err(|e| format!("the keymap is not valid TOML: {e}"))?;
            for (name, keys) in user {
                let row = table.iter_mut().find(|r| r.0 == name).ok_or_else(|| {
                    let names: Vec<&str> = DEFAULTS.iter().map(|d| d.0).collect();
                    format!(
                        "the keymap names an unknown action \"{name}\": one of {}",
                        names.join(", ")
                    )
                })?;
                user_set.push(name.clone());
                row.1 = match keys {
                    toml::Value::String(s) => vec![s],
                    toml::Value::Array(a) => a
                        .into_iter()
                        .map(|v| match v {
                            toml::Value::String(s) => Ok(s),
                            _ => Err(format!("keymap: {name} takes key names like \"ctrl-s\"")),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => return Err(format!("keymap: {name} takes key names like \"ctrl-s\"")),
                };
            }
        }
        let mut bound = HashMap::new();
        let mut help = Vec::new();
        // The user's own bindings first, so a key they give an action leaves its default one.
        let user_rows = table.iter().filter(|r| user_set.contains(&r.0));
        let default_rows = table.iter().filter(|r| !user_set.contains(&r.0));
        for (name, keys, _) in user_rows.chain(default_rows) {
            let action = named(name).ok_or_else(|| format!("unknown action {name}"))?;
            for k in keys {
                bound.entry(parse_key(k)?).or_insert_with(|| action.clone());
            }
        }
        for (name, keys, desc) in &table {
            let action = named(name).ok_or_else(|| format!("unknown action {name}"))?;
            let keys: Vec<&String> = keys
                .iter()
                .filter(|k| parse_key(k).is_ok_and(|key| bound.get(&key) == Some(&action)))
                .collect();
            let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
            if !keys.is_empty() {
                help.push((keys.join(", "), desc.clone()));
            }
        }
        Ok(Self { bound, help })
    }

    pub fn action(&self, key: KeyEvent) -> Option<Action> {
        let mut mods = key.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT);
        // Shift is part of the character for text keys.
        if !matches!(key.code, KeyCode::Char(_)) {
            mods |= key.modifiers & KeyModifiers::SHIFT;
        }
        let code = match key.code {
            KeyCode::Char(c) if !mods.is_empty() => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        if let Some(a) = self.bound.get(&Key { code, mods }) {
            return Some(a.clone());
        }
        // Terminals without the enhanced keyboard protocol send Ctrl-Enter as Ctrl-J.
        if code == KeyCode::Char('j') && mods == KeyModifiers::CONTROL {
            return self
                .bound
                .get(&Key {
                    code: KeyCode::Enter,
                    mods,
                })
                .cloned();
        }
        if !mods.difference(KeyModifiers::SHIFT).is_empty() {
            return None;
        }
        Some(match key.code {
            KeyCode::Char(c) => Action::Insert(c),
            KeyCode::Enter => Action::Enter,
            KeyCode::Backspace => Action::Backspace,
            KeyCode::Delete => Action::Delete,
            KeyCode::Left => Action::Left,
            KeyCode::Right => Action::Right,
            KeyCode::Up => Action::Up,
            KeyCode::Down => Action::Down,
            KeyCode::Home => Action::Home,
            KeyCode::End => Action::End,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn defaults_user_overrides_and_text_keys() {
        let k = Keymap::new(None).unwrap();
        assert_eq!(
            k.action(key(KeyCode::F(5), KeyModifiers::NONE)),
            Some(Action::Render)
        );
        assert_eq!(
            k.action(key(KeyCode::Char('j'), KeyModifiers::CONTROL)),
            Some(Action::Render),
            "Ctrl-Enter as terminals without the keyboard protocol send it"
        );
        assert_eq!(
            k.action(key(KeyCode::Char('A'), KeyModifiers::SHIFT)),
            Some(Action::Insert('A'))
        );
        assert_eq!(
            k.action(key(KeyCode::Char('Q'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        // A key the user gives an action leaves the action that had it by default.
        let k = Keymap::new(Some("render = [\"ctrl-g\", \"f5\"]\nquit = \"alt-x\"")).unwrap();
        assert_eq!(
            k.action(key(KeyCode::Char('g'), KeyModifiers::CONTROL)),
            Some(Action::Render)
        );
        assert_eq!(
            k.action(key(KeyCode::F(4), KeyModifiers::NONE)),
            Some(Action::Gallery)
        );
        assert_eq!(
            k.action(key(KeyCode::Char('x'), KeyModifiers::ALT)),
            Some(Action::Quit)
        );
        assert_eq!(
            k.action(key(KeyCode::Char('q'), KeyModifiers::CONTROL)),
            None
        );
        assert!(k.help.iter().any(|(keys, _)| keys == "f4"), "{:?}", k.help);
        let err = Keymap::new(Some("paint = \"f5\"")).unwrap_err();
        assert!(
            err.contains("unknown action \"paint\"") && err.contains("render"),
            "{err}"
        );
        let err = Keymap::new(Some("render = \"hyper-x\"")).unwrap_err();
        assert!(err.contains("unknown key"), "{err}");
        assert!(Keymap::new(Some("render = ["))
            .unwrap_err()
            .contains("not valid TOML"));
    }
}
