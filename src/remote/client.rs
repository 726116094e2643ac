//! `RemoteWorker`: the local worker's interface (submit, cancel, events, shutdown) for a worker
//! on another host, reached by starting `easel worker --stdio` there through ssh. Events come
//! back translated: finished PNGs are saved here (recipe and all) and their local paths
//! reported; a dropped connection fails the jobs it leaves unfinished.
use super::protocol::{
    self, Line, Reply, Request, Session, Upload, Uploads, Welcome, PROTOCOL_VERSION,
};
use super::{ssh, RemoteError};
use crate::output::atomic::{write_atomic, TempFile};
use crate::worker::{Event, Job, WorkerHandle};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Connecting includes ssh's own connection and the host starting easel.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(120);
/// How many of ssh's last stderr lines are kept for error messages.
const STDERR_LINES: usize = 20;

/// Where and how to connect, and where the PNGs go here.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// `[user@]host`, as ssh takes it.
    pub host: String,
    /// The easel binary on the host.
    pub easel: String,
    /// Keep the PNGs on the host too.
    pub keep: bool,
    /// The local folder for the PNGs.
    pub out_dir: PathBuf,
    /// The local history to record the PNGs in.
    pub history: Option<PathBuf>,
    /// The host's device and number format (None: auto there).
    pub device: Option<String>,
    pub dtype: Option<String>,
    /// A preview every this many steps (0: none).
    pub preview_every: usize,
    /// How the host trades speed for memory (`--low-memory`, `--vae-tiling`).
    pub memory: crate::engine::pipeline::MemoryOptions,
    /// The host's VAE, embeddings, decoders and config the flags name.
    pub host_files: super::protocol::HostFiles,
    /// The ssh command line (None: $EASEL_SSH, else `ssh`).
    pub ssh: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the caller's thread and the reader threads share.
#[derive(Default)]
struct Shared {
    /// Jobs submitted and not yet ended.
    pending: Mutex<HashSet<u64>>,
    /// Set once the connection is gone: why.
    lost: Mutex<Option<String>>,
    /// We are hanging up: the end of the input is no loss.
    closing: AtomicBool,
    /// Jobs whose image goes to a given file rather than into the folder.
    files: Mutex<HashMap<u64, PathBuf>>,
    stderr: Mutex<VecDeque<String>>,
    stderr_done: AtomicBool,
}

pub struct RemoteWorker {
    host: String,
    welcome: Welcome,
    stdin: Mutex<Option<ChildStdin>>,
    child: Arc<Mutex<Child>>,
    events: Receiver<Event>,
    shared: Arc<Shared>,
}

impl RemoteWorker {
    /// Starts `easel worker --stdio` on the host through ssh and shakes hands.
    pub fn connect(options: &RemoteOptions) -> Result<Self, RemoteError> {
        let line = options.ssh.clone().unwrap_or_else(ssh::ssh_line);
        let command = ssh::command(&line, &options.host, &options.easel)?;
        Self::connect_with(command, options)
    }

    /// As `connect`, with the transport given: any command whose stdin and stdout reach an
    /// `easel worker --stdio` (tests run it directly).
    pub fn connect_with(
        mut command: Command,
        options: &RemoteOptions,
    ) -> Result<Self, RemoteError> {
        let host = options.host.clone();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RemoteError::Spawn {
                program: command.get_program().to_string_lossy().into_owned(),
                source,
            })?;
        let shared = Arc::new(Shared::default());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(RemoteError::Pipe {
                host,
                source: std::io::Error::other("the pipes were not set up"),
            });
        };
        let child = Arc::new(Mutex::new(child));
        let keep_stderr = Arc::clone(&shared);
        spawn("easel-ssh-stderr", move || {
            read_stderr(BufReader::new(stderr), &keep_stderr)
        })
        .map_err(|source| RemoteError::Pipe {
            host: host.clone(),
            source,
        })?;
        let (lines_tx, lines_rx) = mpsc::channel();
        spawn("easel-ssh-stdout", move || {
            let mut input = BufReader::new(stdout);
            while let Ok(Some(line)) = protocol::read_line(&mut input, protocol::MAX_REPLY_BYTES) {
                if lines_tx.send(line).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| RemoteError::Pipe {
            host: host.clone(),
            source,
        })?;
        let mut worker = Self {
            host: host.clone(),
            welcome: Welcome {
                protocol: PROTOCOL_VERSION,
                easel: String::new(),
                pid: 0,
                devices: Vec::new(),
                models_dir: None,
                models: Vec::new(),
                kept_in: None,
            },
            stdin: Mutex::new(Some(stdin)),
            child,
            events: mpsc::channel().1,
            shared,
        };
        let welcome = match worker.handshake(options, &lines_rx) {
            Ok(w) => w,
            Err(e) => {
                worker.hang_up(Duration::from_secs(2));
                return Err(e);
            }
        };
        worker.welcome = welcome;
        let (events_tx, events_rx) = mpsc::channel();
        worker.events = events_rx;
        let translator = Translator {
            host: host.clone(),
            out_dir: options.out_dir.clone(),
            history: options.history.clone(),
            shared: Arc::clone(&worker.shared),
            child: Arc::clone(&worker.child),
            local: HashMap::new(),
            unsaved: HashMap::new(),
        };
        spawn("easel-remote", move || {
            translator.run(&lines_rx, &events_tx)
        })
        .map_err(|source| RemoteError::Pipe {
            host: host.clone(),
            source,
        })?;
        Ok(worker)
    }

    fn handshake(
        &self,
        options: &RemoteOptions,
        lines: &Receiver<Line>,
    ) -> Result<Welcome, RemoteError> {
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            easel: env!("CARGO_PKG_VERSION").to_string(),
            session: Session {
                keep: options.keep,
                device: options.device.clone(),
                dtype: options.dtype.clone(),
                preview_every: options.preview_every,
                vae_tiling: options.memory.vae_tiling,
                low_memory: options.memory.low_memory,
                host_files: options.host_files.clone(),
            },
        };
        // A write that fails means ssh already ended: its exit status says why, below.
        let _ = self.write(&protocol::to_line(&hello));
        let start = Instant::now();
        // Lines that are not the protocol (a login banner on stdout, another program).
        let mut stray = Vec::new();
        loop {
            let left = HANDSHAKE_WAIT.saturating_sub(start.elapsed());
            let text = match lines.recv_timeout(left) {
                Ok(Line::Text(t)) => t,
                Ok(Line::Bad(_)) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(RemoteError::Timeout {
                        host: self.host.clone(),
                        seconds: HANDSHAKE_WAIT.as_secs(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.why_ended(&stray)),
            };
            match protocol::parse_reply(&text) {
                Ok(Reply::Welcome(w)) if w.protocol == PROTOCOL_VERSION => return Ok(w),
                Ok(Reply::Welcome(w)) => {
                    return Err(RemoteError::Version {
                        host: self.host.clone(),
                        theirs: w.protocol,
                        theirs_easel: w.easel,
                        ours: PROTOCOL_VERSION,
                        ours_easel: env!("CARGO_PKG_VERSION").into(),
                    })
                }
                Ok(Reply::Error { message, .. }) => {
                    return Err(RemoteError::Refused {
                        host: self.host.clone(),
                        message,
                    })
                }
                _ => stray.push(text),
            }
        }
    }

    /// Why the other end closed before the welcome, from ssh's exit status and stderr.
    fn why_ended(&self, stray: &[String]) -> RemoteError {
        let status = wait_exit(&self.child, Duration::from_secs(5));
        let detail = self.stderr_tail(Duration::from_secs(1));
        let host = self.host.clone();
        let detail_or = |fallback: String| {
            if detail.is_empty() {
                fallback
            } else {
                detail.clone()
            }
        };
        match status.and_then(|s| s.code()) {
            Some(255) => RemoteError::Connect {
                host,
                detail: detail_or("ssh exited with status 255".into()),
            },
            Some(126 | 127) => RemoteError::NotInstalled {
                host,
                detail: detail_or("command not found".into()),
            },
            _ if !stray.is_empty() => RemoteError::NotAWorker {
                host,
                detail: format!(
                    "it printed {:?}",
                    stray[0].chars().take(80).collect::<String>()
                ),
            },
            code => RemoteError::Ended {
                host,
                detail: detail_or(match code {
                    Some(c) => format!("exit status {c}"),
                    None => "it was killed by a signal".into(),
                }),
            },
        }
    }

    fn stderr_tail(&self, wait: Duration) -> String {
        stderr_tail(&self.shared, wait)
    }

    fn write(&self, line: &str) -> std::io::Result<()> {
        let mut stdin = lock(&self.stdin);
        let pipe = stdin.as_mut().ok_or_else(|| {
            std::io::Error::new(ErrorKind::BrokenPipe, "the connection is closed")
        })?;
        pipe.write_all(line.as_bytes())?;
        pipe.flush()
    }

    /// The worker's handshake: its easel version, devices and models.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// One line for the user: who answered and what it offers.
    pub fn summary(&self) -> String {
        let w = &self.welcome;
        let models = match &w.models_dir {
            Some(dir) => format!("; {} model(s) in {dir}", w.models.len()),
            None => String::new(),
        };
        format!(
            "connected to {}: easel {}, devices {}{models}",
            self.host,
            w.easel,
            w.devices.join(", ")
        )
    }

    /// The transport's process id (ssh's), for tests that cut the connection.
    pub fn transport_pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Job `id`'s image (a job of one image) is written to `path`, replacing any file there,
    /// instead of into the folder under the host's name for it.
    pub fn set_file(&self, id: u64, path: PathBuf) {
        lock(&self.shared.files).insert(id, path);
    }

    pub fn submit(&self, job: Job) -> Result<(), String> {
        if let Some(message) = lock(&self.shared.lost).clone() {
            return Err(message);
        }
        let id = job.id;
        let uploads = uploads_for(&job)?;
        lock(&self.shared.pending).insert(id);
        match self.write(&protocol::to_line(&Request::Submit { job, uploads })) {
            Ok(()) => Ok(()),
            Err(e) => {
                lock(&self.shared.pending).remove(&id);
                Err(format!("the connection to {} was lost: {e}", self.host))
            }
        }
    }

    pub fn cancel(&self, id: u64) {
        // A write that fails means the connection is gone, which the reader reports.
        let _ = self.write(&protocol::to_line(&Request::Cancel { id }));
    }

    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    pub fn wait_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Hangs up (the host cancels what runs and its worker ends) and waits at most `limit`
    /// for ssh to end; whether it did (otherwise it is killed).
    pub fn shutdown_within(mut self, limit: Duration) -> bool {
        self.hang_up(limit)
    }

    fn hang_up(&mut self, limit: Duration) -> bool {
        self.shared.closing.store(true, Ordering::SeqCst);
        lock(&self.stdin).take();
        if wait_exit(&self.child, limit).is_some() {
            return true;
        }
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RemoteWorker {
    fn drop(&mut self) {
        let ended = matches!(lock(&self.child).try_wait(), Ok(Some(_)));
        if !ended {
            self.hang_up(Duration::from_secs(2));
        }
    }
}

/// The job's init image and mask, read here: the host renders from these bytes, and the
/// recipe keeps the paths as given.
fn uploads_for(job: &Job) -> Result<Uploads, String> {
    let read = |path: &Option<String>, what: &str| -> Result<Option<Upload>, String> {
        let Some(name) = path else { return Ok(None) };
        let unreadable = |e: std::io::Error| format!("cannot read the {what} {name}: {e}");
        // Measured before reading, so that a huge file is refused without loading it.
        let size = std::fs::metadata(name).map_err(unreadable)?.len();
        if size > protocol::MAX_UPLOAD_BYTES as u64 {
            return Err(format!(
                "the {what} {name} is larger than {} MB, the most a remote render takes: \
                 send a smaller image",
                protocol::MAX_UPLOAD_BYTES >> 20
            ));
        }
        let bytes = std::fs::read(name).map_err(unreadable)?;
        Ok(Some(Upload {
            name: name.clone(),
            bytes: protocol::base64_encode(&bytes),
        }))
    };
    Ok(Uploads {
        init_image: read(&job.patch.init_image, "init image")?,
        mask: read(&job.patch.mask, "mask")?,
    })
}

impl WorkerHandle for RemoteWorker {
    fn models(&self) -> Option<(String, Vec<String>)> {
        Some((self.host.clone(), self.welcome.models.clone()))
    }
    fn submit(&self, job: Job) -> Result<(), String> {
        RemoteWorker::submit(self, job)
    }
    fn cancel(&self, id: u64) {
        RemoteWorker::cancel(self, id);
    }
    fn try_event(&self) -> Option<Event> {
        RemoteWorker::try_event(self)
    }
    fn wait_event(&self, timeout: Duration) -> Option<Event> {
        RemoteWorker::wait_event(self, timeout)
    }
    fn shutdown_within(self: Box<Self>, limit: Duration) -> bool {
        RemoteWorker::shutdown_within(*self, limit)
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
}

fn read_stderr(mut input: BufReader<std::process::ChildStderr>, shared: &Shared) {
    while let Ok(Some(line)) = protocol::read_line(&mut input, 64 << 10) {
        if let Line::Text(text) = line {
            if text.trim().is_empty() {
                continue;
            }
            let mut tail = lock(&shared.stderr);
            if tail.len() == STDERR_LINES {
                tail.pop_front();
            }
            tail.push_back(text.trim().to_string());
        }
    }
    shared.stderr_done.store(true, Ordering::SeqCst);
}

/// ssh's last stderr lines, joined, once it has finished writing them (or `wait` passed).
fn stderr_tail(shared: &Shared, wait: Duration) -> String {
    let start = Instant::now();
    while !shared.stderr_done.load(Ordering::SeqCst) && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(10));
    }
    let tail = lock(&shared.stderr);
    let lines: Vec<&str> = tail
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    lines.join(" / ")
}

/// The child's exit status, waiting up to `limit` for it.
fn wait_exit(child: &Mutex<Child>, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = lock(child).try_wait() {
            return Some(status);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Turns the worker's replies into local events, saving images as they arrive.
struct Translator {
    host: String,
    out_dir: PathBuf,
    history: Option<PathBuf>,
    shared: Arc<Shared>,
    child: Arc<Mutex<Child>>,
    /// Host path -> local path of each saved image.
    local: HashMap<String, PathBuf>,
    /// Jobs with an image that could not be saved here: why.
    unsaved: HashMap<u64, String>,
}

impl Translator {
    fn run(mut self, lines: &Receiver<Line>, events: &Sender<Event>) {
        for line in lines.iter() {
            let event = match line {
                Line::Text(text) if text.trim().is_empty() => continue,
                Line::Text(text) => match protocol::parse_reply(&text) {
                    Ok(reply) => self.translate(reply),
                    Err(e) => Some(Event::Note {
                        message: format!("{} sent something easel cannot read: {e}", self.host),
                    }),
                },
                Line::Bad(message) => Some(Event::Note {
                    message: format!("{}: {message}", self.host),
                }),
            };
            if let Some(event) = event {
                if events.send(event).is_err() {
                    return;
                }
            }
        }
        if !self.shared.closing.load(Ordering::SeqCst) {
            self.lost(events);
        }
    }

    /// Marks job `id` ended; false when it had ended already (its end is not told twice).
    fn finished(&self, id: u64) -> bool {
        lock(&self.shared.files).remove(&id);
        lock(&self.shared.pending).remove(&id)
    }

    fn translate(&mut self, reply: Reply) -> Option<Event> {
        Some(match reply {
            Reply::Welcome(_) => return None,
            Reply::Loading { model } => Event::Loading { model },
            Reply::LoadStage {
                component,
                progress,
            } => Event::LoadStage {
                component,
                progress,
            },
            Reply::Loaded {
                model,
                device,
                dtype,
                seconds,
                native,
            } => Event::Loaded {
                model,
                // Says where it runs; also keeps local GPU probes off a remote device.
                device: format!("{}:{device}", host_name(&self.host)),
                dtype,
                seconds,
                native,
            },
            Reply::Started { id, seed } => Event::Started { id, seed },
            Reply::Progress {
                id,
                image,
                images,
                step,
                steps,
                preview,
            } => Event::Progress {
                id,
                image,
                images,
                step,
                steps,
                preview: preview.and_then(|p| protocol::decode_preview(&p).ok()),
            },
            Reply::Image {
                id,
                name,
                remote_path,
                seconds,
                png,
            } => match self.save(id, &name, &png) {
                Ok((path, picture)) => {
                    self.local.insert(remote_path, path.clone());
                    Event::Image {
                        id,
                        path,
                        picture,
                        seconds,
                    }
                }
                Err(message) => {
                    self.unsaved.insert(id, message.clone());
                    Event::Note { message }
                }
            },
            Reply::Note { message } => Event::Note { message },
            Reply::Done { id, paths } => {
                if !self.finished(id) {
                    return None;
                }
                let paths = self.local_paths(&paths);
                match self.unsaved.remove(&id) {
                    Some(message) => Event::Failed { id, message },
                    None => Event::Done { id, paths },
                }
            }
            Reply::Failed { id, message } => {
                self.unsaved.remove(&id);
                if !self.finished(id) {
                    return None;
                }
                Event::Failed { id, message }
            }
            Reply::Cancelled { id, paths } => {
                self.unsaved.remove(&id);
                if !self.finished(id) {
                    return None;
                }
                Event::Cancelled {
                    id,
                    paths: self.local_paths(&paths),
                }
            }
            Reply::Error {
                id: Some(id),
                message,
            } if self.finished(id) => Event::Failed {
                id,
                message: format!("{}: {message}", self.host),
            },
            Reply::Error { message, .. } => Event::Note {
                message: format!("{}: {message}", self.host),
            },
        })
    }

    fn local_paths(&mut self, remote: &[String]) -> Vec<PathBuf> {
        remote.iter().filter_map(|p| self.local.remove(p)).collect()
    }

    /// Writes the PNG here (whole or not at all) and records it in the history.
    fn save(
        &self,
        id: u64,
        name: &str,
        png: &str,
    ) -> Result<(PathBuf, crate::worker::Picture), String> {
        let fail = |e: String| format!("an image from {} could not be saved here: {e}", self.host);
        let bytes = protocol::base64_decode(png).map_err(fail)?;
        let picture = protocol::decode_png(&bytes).map_err(fail)?;
        let file = lock(&self.shared.files).get(&id).cloned();
        let path = match file {
            Some(path) => {
                let dir = crate::output::atomic::parent_dir(&path);
                std::fs::create_dir_all(dir)
                    .and_then(|()| write_atomic(&path, true, |f| f.write_all(&bytes)))
                    .map_err(|e| fail(format!("{}: {e}", path.display())))?;
                path
            }
            None => save_new(&self.out_dir, &file_name(name, id), &bytes).map_err(fail)?,
        };
        if let Some(history) = &self.history {
            let recipe = crate::output::png::read_recipe(&path).ok().flatten();
            if let Some(recipe) = recipe {
                // The image is here; a history that cannot be updated is not worth failing for.
                let _ = crate::render::record_history(history, &path, &recipe);
            }
        }
        Ok((path, picture))
    }

    /// Fails every job the connection leaves unfinished, saying why.
    fn lost(&self, events: &Sender<Event>) {
        let status = wait_exit(&self.child, Duration::from_secs(2));
        let tail = stderr_tail(&self.shared, Duration::from_millis(500));
        let reason = match status {
            _ if !tail.is_empty() => tail,
            Some(s) if s.code().is_none() => "ssh was killed by a signal".to_string(),
            Some(s) => format!("ssh exited with {s}"),
            None => "the worker stopped answering".to_string(),
        };
        let message = format!("the connection to {} was lost: {reason}", self.host);
        *lock(&self.shared.lost) = Some(message.clone());
        let mut ids: Vec<u64> = lock(&self.shared.pending).drain().collect();
        ids.sort_unstable();
        if ids.is_empty() {
            let _ = events.send(Event::Note { message });
            return;
        }
        for id in ids {
            let _ = events.send(Event::Failed {
                id,
                message: message.clone(),
            });
        }
    }
}

/// The host without the user, for display.
fn host_name(host: &str) -> &str {
    host.rsplit('@').next().unwrap_or(host)
}

/// The host's name for a file if it is a plain PNG name, else one made from the job id.
fn file_name(name: &str, id: u64) -> String {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name.to_ascii_lowercase().ends_with(".png");
    if plain {
        name.to_string()
    } else {
        format!("remote-{id}.png")
    }
}

/// Saves `bytes` in `dir` as `name`, or `stem_2.png`, `stem_3.png`, ... when taken.
fn save_new(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let at = |e: std::io::Error, p: &Path| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir).map_err(|e| at(e, dir))?;
    let mut tmp = TempFile::create_in(dir).map_err(|e| at(e, dir))?;
    tmp.write_all(bytes).map_err(|e| at(e, dir))?;
    let stem = name.strip_suffix(".png").unwrap_or(name);
    for attempt in 1..10_000u32 {
        let path = if attempt == 1 {
            dir.join(name)
        } else {
            dir.join(format!("{stem}_{attempt}.png"))
        };
        match tmp.persist_new(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(at(e, &path)),
        }
    }
    Err(format!(
        "{} holds too many files named {stem}_N.png",
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_from_the_host_stay_in_the_folder() {
        assert_eq!(
            file_name("20260101-000000-7-0.png", 3),
            "20260101-000000-7-0.png"
        );
        for bad in ["../x.png", "/etc/x.png", ".hidden.png", "x.txt", ""] {
            assert_eq!(file_name(bad, 3), "remote-3.png", "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let a = save_new(dir.path(), "a.png", b"1").unwrap();
        let b = save_new(dir.path(), "a.png", b"2").unwrap();
        assert_eq!(a, dir.path().join("a.png"));
        assert_eq!(b, dir.path().join("a_2.png"));
        assert_eq!(std::fs::read(b).unwrap(), b"2");
        assert_eq!(host_name("me@gpu"), "gpu");
        assert_eq!(host_name("gpu"), "gpu");
    }
}
