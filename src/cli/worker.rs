//! `easel worker --stdio`: serve renders to a client on the other end of a pipe, which is what
//! `easel tui --remote HOST` and `easel generate --remote HOST` start through ssh.
use crate::remote::server::{self, ServeOptions};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

const ABOUT: &str = "\
The protocol: one JSON object per line. The client's first line is a hello
({\"type\":\"hello\",\"protocol\":1,\"easel\":\"VERSION\",\"session\":{...}}); the worker answers
with a welcome (its easel version, devices and models) or an error. Then `submit` queues a job
and `cancel` stops one; the worker sends each job's events (started, progress with a small
preview PNG, image with the finished PNG file, done, failed, cancelled) as they happen, and an
error for a request it cannot carry out. Closing stdin ends the session: a running job stops
within a step and the worker exits. Logs go to stderr only.";

#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = ABOUT)]
pub struct WorkerArgs {
    /// Speak the worker protocol as JSON lines on stdin and stdout (the only transport).
    #[arg(long, required = true)]
    pub stdio: bool,

    /// A folder of models that jobs may name by folder or file name (the handshake lists them).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,

    /// Where PNGs stay when the client asks to keep them (--keep-remote).
    #[arg(long, value_name = "DIR", default_value = crate::output::naming::DEFAULT_DIR)]
    pub out: PathBuf,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.models {
        if !dir.is_dir() {
            anyhow::bail!(
                "models folder {} does not exist: pass --models with a folder of models",
                dir.display()
            );
        }
    }
    let mut protocol_out = protocol_stdout()?;
    let options = ServeOptions {
        models: args.models,
        keep_dir: args.out,
    };
    let input = Box::new(std::io::BufReader::new(std::io::stdin()));
    let ended = server::serve(&options, input, &mut protocol_out).map_err(anyhow::Error::msg)?;
    let _ = protocol_out.flush();
    if !ended {
        // A normal exit tears down libtorch's globals under the render thread still inside
        // it (a model load), which then crashes noisily: leave without running destructors.
        let _ = std::io::stderr().flush();
        // SAFETY: _exit only ends the process; every file easel writes is complete or removed.
        unsafe { libc::_exit(0) };
    }
    Ok(ExitCode::SUCCESS)
}

/// The protocol's own handle on stdout, with fd 1 then pointed at stderr: anything else that
/// prints (libtorch's C++ warnings among them) lands in the log, not in the protocol.
fn protocol_stdout() -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    std::io::stdout().flush()?;
    // SAFETY: dup returns a new descriptor that nothing else owns; the File takes it over.
    let fd = unsafe { libc::dup(1) };
    if fd < 0 {
        anyhow::bail!(
            "cannot duplicate stdout: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fd is open and owned by no one else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: dup2 on two open descriptors; stdout's Rust handle stays valid (it writes fd 1).
    if unsafe { libc::dup2(2, 1) } < 0 {
        anyhow::bail!(
            "cannot redirect stdout: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(std::io::BufWriter::new(file))
}
