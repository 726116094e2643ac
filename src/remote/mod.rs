//! Remote workers over SSH: `easel worker --stdio` serves the local worker as JSON lines
//! (server.rs), and `RemoteWorker` (client.rs) starts it on a host through the system `ssh` and
//! offers what the local worker offers, saving the finished PNGs here. protocol.rs is the
//! wire format both sides share.
pub mod client;
pub mod generate;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod ssh;

pub use client::{RemoteOptions, RemoteWorker};

/// The `--remote` flags that `easel generate` and `easel tui` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RemoteArgs {
    /// Render on this host over ssh ([USER@]HOST, as `ssh` takes it, with your ssh config, keys
    /// and agent); PNGs are saved here. Model, LoRA, --vae, --model-config, --embeddings and
    /// decoder paths are the host's (relative ones from the login folder there); init images
    /// and masks are sent from here. EASEL_SSH replaces the ssh command (for example
    /// "ssh -F my_config").
    #[arg(long, value_name = "[USER@]HOST")]
    pub remote: Option<String>,

    /// Where easel is on the remote host.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "easel",
        requires = "remote"
    )]
    pub remote_easel: String,

    /// Keep the PNGs on the remote host too (in `outputs/` of the login folder there).
    #[arg(long, requires = "remote")]
    pub keep_remote: bool,
}

impl RemoteArgs {
    /// The options of a connection whose PNGs go to `out_dir` here.
    pub fn options(
        &self,
        out_dir: &std::path::Path,
        history: Option<std::path::PathBuf>,
    ) -> Option<RemoteOptions> {
        Some(RemoteOptions {
            host: self.remote.clone()?,
            easel: self.remote_easel.clone(),
            keep: self.keep_remote,
            out_dir: out_dir.to_path_buf(),
            history,
            device: None,
            dtype: None,
            preview_every: 0,
            memory: Default::default(),
            host_files: Default::default(),
            ssh: None,
        })
    }
}

/// Why a connection could not be made; each says what to try next.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0:?} is not a host name for ssh: give [USER@]HOST, as `ssh` takes it")]
    BadHost(String),
    #[error(
        "EASEL_SSH={0:?} is not a command line: set it to something like \"ssh -F ~/.ssh/config\""
    )]
    BadSsh(String),
    #[error("cannot run {program}: {source} (install OpenSSH's client, or set EASEL_SSH to the ssh command to use)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {host} over ssh: {detail} (check the host name, your ssh config and keys: try `ssh {host}` by hand)")]
    Connect { host: String, detail: String },
    #[error("easel is not installed on {host} ({detail}): install it there, or pass --remote-easel with its path on {host}")]
    NotInstalled { host: String, detail: String },
    #[error("the easel worker on {host} stopped before the handshake: {detail}")]
    Ended { host: String, detail: String },
    #[error("{host} does not speak easel's remote protocol: {detail} (is --remote-easel an easel binary?)")]
    NotAWorker { host: String, detail: String },
    #[error("protocol version mismatch: easel {theirs_easel} on {host} speaks remote protocol {theirs}, this easel {ours_easel} speaks {ours}: install the same easel version on both machines")]
    Version {
        host: String,
        theirs: u32,
        theirs_easel: String,
        ours: u32,
        ours_easel: String,
    },
    #[error("{host} refused the connection: {message}")]
    Refused { host: String, message: String },
    #[error("no answer from {host} after {seconds} s: check that `ssh {host} easel worker --stdio` starts there")]
    Timeout { host: String, seconds: u64 },
    #[error("cannot talk to the ssh process for {host}: {source}")]
    Pipe {
        host: String,
        source: std::io::Error,
    },
}
