//! The transport: the system `ssh` (its config, keys and agent as they are) running
//! `easel worker --stdio` on the host. `EASEL_SSH` replaces the `ssh` command line, for a
//! config file (`ssh -F FILE`), a jump host, or a wrapper.
use super::RemoteError;
use std::process::Command;

/// The environment variable holding the ssh command line (words split as a shell would,
/// with '...' and "..." quoting; no variables or globs).
pub const SSH_ENV: &str = "EASEL_SSH";

/// `ssh -T -- HOST '<easel>' worker --stdio`, with `ssh` from `ssh_line`.
pub fn command(ssh_line: &str, host: &str, easel: &str) -> Result<Command, RemoteError> {
    check_host(host)?;
    let words = split_words(ssh_line).ok_or_else(|| RemoteError::BadSsh(ssh_line.to_string()))?;
    let (program, args) = words
        .split_first()
        .ok_or_else(|| RemoteError::BadSsh(ssh_line.to_string()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .args(["-T", "--", host])
        .arg(remote_command(easel));
    Ok(cmd)
}

/// The ssh command line: `EASEL_SSH` when set and not empty, else `ssh`.
pub fn ssh_line() -> String {
    std::env::var(SSH_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "ssh".into())
}

/// A destination ssh would not mistake for an option.
pub fn check_host(host: &str) -> Result<(), RemoteError> {
    let bad = host.is_empty()
        || host.starts_with('-')
        || host.ends_with('@')
        || host.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(RemoteError::BadHost(host.to_string()));
    }
    Ok(())
}

/// What the host's shell runs: the easel path quoted for it (a leading `~/` still expands
/// there), then the worker's arguments.
pub fn remote_command(easel: &str) -> String {
    let (home, rest) = match easel.strip_prefix("~/") {
        Some(rest) => ("~/", rest),
        None => ("", easel),
    };
    format!("{home}{} worker --stdio", shell_quote(rest))
}

/// One POSIX shell word.
pub fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Words as a POSIX shell splits them, with quotes and backslashes; None for an open quote.
pub fn split_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_as_a_shell_would() {
        assert_eq!(
            split_words(r#"ssh -F '/tmp/a b/config' -o "User=x y" a\ b"#).unwrap(),
            vec!["ssh", "-F", "/tmp/a b/config", "-o", "User=x y", "a b"]
        );
        assert_eq!(split_words("  ssh  ").unwrap(), vec!["ssh"]);
        assert_eq!(split_words("''").unwrap(), vec![""]);
        assert!(split_words("ssh 'open").is_none());
    }

    #[test]
    fn remote_command_is_quoted_for_the_hosts_shell() {
        assert_eq!(remote_command("easel"), "'easel' worker --stdio");
        assert_eq!(
            remote_command("/opt/it's/easel"),
            r"'/opt/it'\''s/easel' worker --stdio"
        );
        assert_eq!(
            remote_command("~/bin/easel"),
            "~/'bin/easel' worker --stdio"
        );
    }

    #[test]
    fn hosts_that_look_like_options_are_refused() {
        for bad in ["", "-oProxyCommand=x", "a b", "user@"] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
        assert!(check_host("me@gpu-1.example.org").is_ok());
        let cmd = command("ssh -F cfg", "me@gpu", "easel").unwrap();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "ssh");
        assert_eq!(
            args,
            vec!["-F", "cfg", "-T", "--", "me@gpu", "'easel' worker --stdio"]
        );
    }
}
