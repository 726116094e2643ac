//! Helpers for the remote worker tests: the worker driven through pipes, a stand-in for ssh
//! that runs the remote command here, a real OpenSSH server on 127.0.0.1, and the reference
//! image that `easel generate` renders locally.
#![allow(dead_code)]
use easel::remote::protocol::{self, Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub fn easel_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_easel"))
}

pub fn tiny_sd1() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd1")
}

/// A 4-step render of the tiny model, `steps` steps, seed 7.
pub fn fox_patch(steps: usize) -> easel::recipe::RecipePatch {
    easel::recipe::RecipePatch {
        model: Some(tiny_sd1().display().to_string()),
        prompt: Some("a red fox".into()),
        steps: Some(steps),
        seed: Some(7),
        ..Default::default()
    }
}

pub fn hello(preview_every: usize) -> Request {
    Request::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        easel: "test".into(),
        session: protocol::Session {
            device: Some("cpu".into()),
            preview_every,
            ..Default::default()
        },
    }
}

/// `easel worker --stdio` with its stdin and stdout in our hands.
pub struct Pipe {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Pipe {
    pub fn start(extra: &[&str], home: &Path) -> Self {
        let mut cmd = Command::new(easel_bin());
        cmd.args(["worker", "--stdio"])
            .args(extra)
            .env("EASEL_HOME", home)
            .stderr(Stdio::inherit());
        Self::spawn(cmd)
    }

    /// `cmd`, an `easel worker --stdio` command line, with pipes on its stdin and stdout.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("easel worker starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    pub fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    pub fn send(&mut self, request: &Request) {
        let line = protocol::to_line(request);
        self.send_raw(line.trim_end());
    }

    /// The next reply; panics after `secs`.
    pub fn recv(&self, secs: u64) -> Reply {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("no reply within {secs} s: {e}"));
        protocol::parse_reply(&line).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Replies until `stop` says so; panics after `secs` in all.
    pub fn until(&self, secs: u64, mut stop: impl FnMut(&Reply) -> bool) -> Vec<Reply> {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = Duration::from_secs(secs).saturating_sub(start.elapsed());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!("no end within {secs} s ({e}); replies: {}", summary(&seen))
            });
            let reply = protocol::parse_reply(&line).unwrap_or_else(|e| panic!("{e}"));
            let done = stop(&reply);
            seen.push(reply);
            if done {
                return seen;
            }
        }
    }

    /// Closes stdin, as a dropped connection does.
    pub fn hang_up(&mut self) {
        self.stdin.take();
    }

    /// Waits up to `secs` for the process to end; its exit code (None: still running).
    pub fn exit_within(&mut self, secs: u64) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replies' types, for failure messages (images are long).
pub fn summary(replies: &[Reply]) -> String {
    replies
        .iter()
        .map(|r| {
            let json = protocol::to_line(r);
            json.chars().take(120).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 8-bit RGB pixels of a PNG.
pub fn rgb(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let p = protocol::decode_png(bytes).expect("a PNG");
    (p.width, p.height, p.rgb)
}

/// What `easel generate` renders here for the tiny model, prompt "a red fox", seed 7.
pub fn local_render(dir: &Path, steps: usize) -> PathBuf {
    let out = dir.join(format!("local-{steps}.png"));
    let status = Command::new(easel_bin())
        .args(["generate", "a red fox", "--seed", "7", "--device", "cpu"])
        .arg("--steps")
        .arg(steps.to_string())
        .arg("--model")
        .arg(tiny_sd1())
        .arg("--out")
        .arg(&out)
        .env("EASEL_HOME", dir.join("local-home"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("easel generate runs");
    assert!(status.success(), "easel generate renders the reference");
    out
}

/// A stand-in for ssh: skips ssh's options and the host, then runs the remote command with
/// `sh -c` here, as sshd would on the host (exec'd, so killing the transport ends the worker
/// as a killed ssh does).
pub fn fake_ssh(dir: &Path) -> PathBuf {
    let path = dir.join("fake-ssh");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         while [ $# -gt 0 ]; do case \"$1\" in --) shift; break;; -*) shift;; *) break;; esac; done\n\
         shift\n\
         exec sh -c \"exec $*\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn remote_options(
    host: &str,
    ssh: &str,
    out_dir: &Path,
    history: Option<PathBuf>,
) -> easel::remote::RemoteOptions {
    easel::remote::RemoteOptions {
        host: host.into(),
        easel: easel_bin().display().to_string(),
        keep: false,
        out_dir: out_dir.to_path_buf(),
        history,
        device: Some("cpu".into()),
        dtype: None,
        preview_every: 1,
        memory: Default::default(),
        host_files: Default::default(),
        ssh: Some(ssh.into()),
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped).
pub fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A throwaway OpenSSH server on 127.0.0.1 that lets this user in with a throwaway key.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    child: Child,
    pub host: String,
}

impl Sshd {
    /// None (with the reason) when OpenSSH's server or client is not installed.
    pub fn start() -> Result<Self, String> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.is_file() {
            return Err("/usr/sbin/sshd is not installed (apt-get install openssh-server)".into());
        }
        for tool in ["ssh", "ssh-keygen"] {
            if Command::new(tool).arg("-V").output().is_err()
                && Command::new("which")
                    .arg(tool)
                    .output()
                    .map_or(true, |o| !o.status.success())
            {
                return Err(format!(
                    "{tool} is not installed (apt-get install openssh-client)"
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("easel-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for key in ["host_ed25519", "id_ed25519"] {
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen makes {key}");
        }
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let root = user == "root";
        if root {
            // Debian's sshd refuses to start as root without its privilege separation folder.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
                 PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin {}\nAllowUsers {user}\nLogLevel ERROR\n",
                if root { "prohibit-password" } else { "no" },
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("ssh_config"),
            format!(
                "Host easel-test\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n\
                 IdentityFile {d}/id_ed25519\n  IdentitiesOnly yes\n  BatchMode yes\n\
                 StrictHostKeyChecking no\n  UserKnownHostsFile {d}/known_hosts\n\
                 LogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start sshd: {e}"))?;
        let mut me = Self {
            host: format!("{user}@easel-test"),
            dir,
            child,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                let log = std::fs::read_to_string(me.dir.path().join("sshd.log"));
                panic!("sshd ended at start ({status}): {log:?}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "sshd listens");
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    /// The EASEL_SSH value that reaches this server.
    pub fn ssh_line(&self) -> String {
        format!("ssh -F {}", self.dir.path().join("ssh_config").display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
