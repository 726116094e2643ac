//! The easel binary: everything lives in the library; this only reports errors.
use std::process::ExitCode;

fn main() -> ExitCode {
    match easel::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", easel::cli::format_error(&err));
            ExitCode::FAILURE
        }
    }
}
