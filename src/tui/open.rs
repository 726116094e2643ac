//! "Open the file" from the gallery: on a desktop session the system's opener shows the image;
//! over SSH (or with no display) there is nothing to open it on, so the path goes to the local
//! clipboard through the terminal (OSC 52, which terminals pass over SSH) and to the status bar.
use base64::Engine;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opener {
    /// A program that opens a file in the desktop's viewer.
    Program(&'static str),
    /// Copy the path to the clipboard of the terminal's machine.
    Clipboard,
}

/// Picks how to open a file from the environment (`var` reads a variable).
pub fn choose(var: &dyn Fn(&str) -> Option<String>, macos: bool) -> Opener {
    let set = |name: &str| var(name).is_some_and(|v| !v.is_empty());
    if set("SSH_CONNECTION") || set("SSH_TTY") {
        return Opener::Clipboard;
    }
    if macos {
        return Opener::Program("open");
    }
    if set("DISPLAY") || set("WAYLAND_DISPLAY") {
        Opener::Program("xdg-open")
    } else {
        Opener::Clipboard
    }
}

/// The escape sequence that asks the terminal to put `text` on the clipboard.
pub fn osc52(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}

/// Opens `path` as `choose` decides; the message says what happened and always names the path.
pub fn open(path: &Path) -> Result<String, String> {
    let shown = path.display().to_string();
    if !path.is_file() {
        return Err(format!("{shown} is gone (moved or deleted outside easel)"));
    }
    let env = |name: &str| std::env::var(name).ok();
    match choose(&env, cfg!(target_os = "macos")) {
        Opener::Program(program) => {
            // Detached, quiet: the viewer must not write over the studio's screen.
            let spawned = Command::new(program)
                .arg(path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(_) => Ok(format!("opened {shown} with {program}")),
                Err(e) => Err(format!(
                    "cannot run {program} to open {shown}: {e} (the path is shown here to copy)"
                )),
            }
        }
        Opener::Clipboard => {
            let mut out = std::io::stdout();
            let _ = out.write_all(osc52(&shown).as_bytes());
            let _ = out.flush();
            Ok(format!(
                "{shown} (path copied to the clipboard if the terminal allows it)"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_desktop_opens_and_ssh_copies_the_path() {
        assert_eq!(
            choose(&with(&[("DISPLAY", ":0")]), false),
            Opener::Program("xdg-open")
        );
        assert_eq!(
            choose(&with(&[("WAYLAND_DISPLAY", "wayland-0")]), false),
            Opener::Program("xdg-open")
        );
        assert_eq!(choose(&with(&[]), true), Opener::Program("open"));
        assert_eq!(choose(&with(&[]), false), Opener::Clipboard);
        // Over SSH the path is of more use than a viewer drawn back over X forwarding.
        let ssh = [
            ("DISPLAY", "localhost:10.0"),
            ("SSH_CONNECTION", "10.0.0.2 5 10.0.0.1 22"),
        ];
        assert_eq!(choose(&with(&ssh), false), Opener::Clipboard);
        assert_eq!(
            choose(&with(&[("SSH_TTY", "/dev/pts/3")]), true),
            Opener::Clipboard
        );
        assert_eq!(choose(&with(&[("DISPLAY", "")]), false), Opener::Clipboard);
    }

    #[test]
    fn osc52_carries_the_path_in_base64() {
        assert_eq!(osc52("/tmp/a b.png"), "\x1b]52;c;L3RtcC9hIGIucG5n\x07");
    }

    #[test]
    fn a_missing_file_says_so() {
        let err = open(Path::new("/nonexistent/easel/x.png")).unwrap_err();
        assert!(
            err.contains("/nonexistent/easel/x.png") && err.contains("gone"),
            "{err}"
        );
    }
}
