//! Prompt arguments that are not UTF-8. easel refuses them rather than render a lossy copy:
//! the PNG's recipe must hold the prompt the user typed, and a silently replaced character
//! would change the image with no word said. The message shows the text as easel read it and
//! how to convert it.
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use std::ffi::OsStr;

/// A UTF-8 text argument; `what` names it in the error ("the prompt").
#[derive(Debug, Clone, Copy)]
pub struct Utf8Text(pub &'static str);

impl TypedValueParser for Utf8Text {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        match value.to_str() {
            Some(text) => Ok(text.to_string()),
            None => {
                let shown = value.to_string_lossy();
                let message = format!(
                    "{} is not valid UTF-8 text ({shown:?}, unreadable bytes shown as \u{FFFD}): \
                     save or type it as UTF-8, for example convert a Latin-1 file with \
                     `iconv -f latin1 -t utf-8 prompt.txt`, or set a UTF-8 locale (LANG=C.UTF-8)\n",
                    self.0
                );
                Err(clap::Error::raw(ErrorKind::InvalidUtf8, message).with_cmd(cmd))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn utf8_passes_and_other_bytes_are_refused_with_the_text_shown() {
        let cmd = clap::Command::new("t");
        let parser = Utf8Text("the prompt");
        assert_eq!(
            parser.parse_ref(&cmd, None, OsStr::new("a fox")).unwrap(),
            "a fox"
        );
        let err = parser
            .parse_ref(&cmd, None, OsStr::from_bytes(b"a \xff fox"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("the prompt is not valid UTF-8"), "{err}");
        assert!(err.contains("a \u{FFFD} fox"), "{err}");
    }
}
