//! How the studio is reached from the command line: bare `easel` outside a terminal prints the
//! help (naming the studio) instead of opening it; `easel tui --help` lists its flags.
use std::process::{Command, Stdio};

fn easel() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.stdin(Stdio::null());
    cmd.env("EASEL_HOME", env!("CARGO_TARGET_TMPDIR"));
    cmd
}

#[test]
fn bare_easel_in_a_pipe_prints_help() {
    let out = easel().output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: easel"), "{text}");
    assert!(text.contains("tui") && text.contains("studio"), "{text}");
}

#[test]
fn tui_flags_are_documented_and_checked() {
    let out = easel().args(["tui", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--preset",
        "--graphics",
        "kitty",
        "sixel",
        "iterm2",
        "halfblocks",
    ] {
        assert!(text.contains(flag), "{flag} in:\n{text}");
    }
    let bad = easel()
        .args(["tui", "--graphics", "ascii"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("possible values"));
}
