//! `easel worker --stdio`: the local worker served over a pipe (what `ssh HOST easel worker
//! --stdio` runs). Requests come in on stdin, the worker's events go out on stdout as they
//! happen; stdin closing means the connection is gone, so the running job is cancelled and the
//! process ends.
use super::protocol::{self, Line, Reply, Request, Session, Uploads, Welcome, PROTOCOL_VERSION};
use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::paths::Paths;
use crate::worker::{Event, InitSources, Job, Worker, WorkerConfig};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How often events are forwarded while no request arrives.
const POLL: Duration = Duration::from_millis(10);
/// How long the end waits for a job to stop (a model load cannot be interrupted).
const STOP_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// A folder of models that jobs may name by their folder or file name.
    pub models: Option<PathBuf>,
    /// Where PNGs stay when the client asks to keep them.
    pub keep_dir: PathBuf,
}

/// Serves one connection until its input ends or a fatal request (a version mismatch).
/// Returns whether the render thread has ended (a model load may outlast the wait).
pub fn serve(
    options: &ServeOptions,
    input: Box<dyn BufRead + Send>,
    output: &mut dyn Write,
) -> Result<bool, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("easel-stdin".into())
        .spawn(move || {
            let mut input = input;
            loop {
                match protocol::read_line(&mut *input, protocol::MAX_REQUEST_BYTES) {
                    Ok(Some(line)) => {
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("easel worker: cannot read the input: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the input reader: {e}"))?;
    let mut state = State::new(options);
    loop {
        let mut replies = Vec::new();
        match rx.recv_timeout(POLL) {
            Ok(line) => replies.extend(state.handle(line)),
            Err(RecvTimeoutError::Timeout) => {}
            // The client hung up (or ssh lost it): nobody will read what comes next.
            Err(RecvTimeoutError::Disconnected) => break,
        }
        replies.extend(state.events());
        if let Err(e) = send_all(output, &replies) {
            eprintln!("easel worker: the client is gone ({e}): stopping");
            break;
        }
        if state.stop {
            break;
        }
    }
    Ok(state.finish())
}

fn send_all(output: &mut dyn Write, replies: &[Reply]) -> std::io::Result<()> {
    for reply in replies {
        output.write_all(protocol::to_line(reply).as_bytes())?;
    }
    if !replies.is_empty() {
        output.flush()?;
    }
    Ok(())
}

struct State {
    models: Option<PathBuf>,
    keep_dir: PathBuf,
    worker: Option<Worker>,
    session: Session,
    /// Job ids queued or running, so a reused id is refused.
    active: HashSet<u64>,
    /// Where PNGs go when they are not kept; removed at the end.
    scratch: Option<tempfile::TempDir>,
    /// Init images and masks that came with jobs; removed at the end.
    inputs: Option<tempfile::TempDir>,
    stop: bool,
}

impl State {
    fn new(options: &ServeOptions) -> Self {
        Self {
            models: options.models.clone(),
            keep_dir: options.keep_dir.clone(),
            worker: None,
            session: Session::default(),
            active: HashSet::new(),
            scratch: None,
            inputs: None,
            stop: false,
        }
    }

    fn handle(&mut self, line: Line) -> Vec<Reply> {
        let text = match line {
            Line::Text(t) if t.trim().is_empty() => return Vec::new(),
            Line::Text(t) => t,
            Line::Bad(message) => return vec![error(None, message)],
        };
        let request = match protocol::parse_request(&text) {
            Ok(r) => r,
            Err(message) => return vec![error(None, message)],
        };
        match request {
            Request::Hello {
                protocol,
                easel,
                session,
            } => self.hello(protocol, &easel, session),
            Request::Submit { job, uploads } => self.submit(job, uploads),
            Request::Cancel { id } => {
                if let Some(w) = &self.worker {
                    w.cancel(id);
                }
                Vec::new()
            }
        }
    }

    fn hello(&mut self, protocol: u32, easel: &str, session: Session) -> Vec<Reply> {
        if self.worker.is_some() {
            return vec![error(
                None,
                "hello was already said on this connection".into(),
            )];
        }
        if protocol != PROTOCOL_VERSION {
            // Nothing said after this could be trusted to mean the same on both sides.
            self.stop = true;
            return vec![error(
                None,
                format!(
                    "protocol version mismatch: this worker (easel {}) speaks remote protocol \
                     {PROTOCOL_VERSION}, the client (easel {easel}) speaks {protocol}: install \
                     the same easel version on both machines",
                    env!("CARGO_PKG_VERSION")
                ),
            )];
        }
        match self.start(&session) {
            Ok(worker) => self.worker = Some(worker),
            Err(message) => {
                self.stop = true;
                return vec![error(None, message)];
            }
        }
        let kept_in = session.keep.then(|| self.keep_dir.display().to_string());
        self.session = session;
        vec![Reply::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            easel: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            devices: devices(),
            models_dir: self.models.as_ref().map(|d| d.display().to_string()),
            models: self.models.as_deref().map(list_models).unwrap_or_default(),
            kept_in,
        })]
    }

    fn start(&mut self, session: &Session) -> Result<Worker, String> {
        let parse = |value: &Option<String>| value.as_deref().unwrap_or("auto").to_string();
        let device: DeviceChoice = parse(&session.device).parse().map_err(|e| format!("{e}"))?;
        let dtype: DtypeChoice = parse(&session.dtype).parse().map_err(|e| format!("{e}"))?;
        device.resolve().map_err(|e| e.to_string())?;
        let files = &session.host_files;
        let vae = host_path(&files.vae, "--vae", false)?;
        let model_config = host_path(&files.model_config, "--model-config", false)?;
        let embeddings = host_path(&files.embeddings, "--embeddings", true)?;
        let fast_decoder = host_path(&files.fast_decoder, "--fast-decoder", true)?;
        let preview_decoder = host_path(&files.preview_decoder, "--preview-decoder", true)?;
        let paths = Paths::discover().ok();
        let out_dir = if session.keep {
            self.keep_dir.clone()
        } else {
            let dir = tempfile::Builder::new()
                .prefix("easel-worker-")
                .tempdir()
                .map_err(|e| format!("cannot make a temporary folder for the images: {e}"))?;
            let path = dir.path().to_path_buf();
            self.scratch = Some(dir);
            path
        };
        Worker::spawn(WorkerConfig {
            device,
            dtype,
            out_dir,
            // Files that do not stay on the host do not belong in its history.
            history: paths.as_ref().filter(|_| session.keep).map(Paths::history),
            embeddings: match embeddings {
                Some(dir) => vec![dir],
                None => paths
                    .as_ref()
                    .map(Paths::embeddings)
                    .filter(|p| p.is_dir())
                    .into_iter()
                    .collect(),
            },
            lora_dir: paths.as_ref().map(Paths::loras),
            preview_every: session.preview_every,
            preview_decoder,
            // The worker adds offload when its device is a GPU.
            memory: crate::engine::pipeline::MemoryOptions {
                vae_tiling: session.vae_tiling,
                low_memory: session.low_memory,
                offload: false,
            },
            fast_decoder,
            vae,
            model_config,
        })
        .map_err(|e| format!("cannot start the render worker: {e}"))
    }

    fn submit(&mut self, mut job: Job, uploads: Uploads) -> Vec<Reply> {
        let id = job.id;
        if self.worker.is_none() {
            return vec![error(
                Some(id),
                "say hello first: the first message must be a hello".into(),
            )];
        }
        // Refused before it is queued: nothing of it runs.
        if let Err(message) = super::policy::check_job(&job, &uploads) {
            return vec![Reply::Failed { id, message }];
        }
        if self.active.contains(&id) {
            return vec![error(
                Some(id),
                format!("job {id} is already queued: give each job its own id"),
            )];
        }
        match self.save_uploads(id, &uploads) {
            Ok(read_from) => job.read_from = read_from,
            Err(message) => return vec![Reply::Failed { id, message }],
        }
        let Some(worker) = &self.worker else {
            return Vec::new();
        };
        self.active.insert(id);
        if let (Some(model), Some(dir)) = (&job.patch.model, &self.models) {
            let named = dir.join(model);
            if !Path::new(model).exists() && named.exists() {
                job.patch.model = Some(named.display().to_string());
            }
        }
        match worker.submit(job) {
            Ok(()) => Vec::new(),
            Err(message) => {
                self.active.remove(&id);
                vec![Reply::Failed { id, message }]
            }
        }
    }

    /// Writes a job's init image and mask into this session's inputs folder (under names the
    /// host chooses) and says where the worker reads them.
    fn save_uploads(&mut self, id: u64, uploads: &Uploads) -> Result<InitSources, String> {
        let mut sources = InitSources::default();
        for (role, upload, slot) in [
            ("init", &uploads.init_image, &mut sources.init_image),
            ("mask", &uploads.mask, &mut sources.mask),
        ] {
            let Some(upload) = upload else { continue };
            if upload.bytes.len() > protocol::MAX_UPLOAD_BYTES / 3 * 4 + 4 {
                return Err(format!(
                    "{} is larger than {} MB: send a smaller image",
                    upload.name,
                    protocol::MAX_UPLOAD_BYTES >> 20
                ));
            }
            let bytes = protocol::base64_decode(&upload.bytes)
                .map_err(|e| format!("{} did not arrive whole: {e}", upload.name))?;
            if self.inputs.is_none() {
                let dir = tempfile::Builder::new()
                    .prefix("easel-inputs-")
                    .tempdir()
                    .map_err(|e| format!("cannot make a folder for the job's files: {e}"))?;
                self.inputs = Some(dir);
            }
            let dir = self.inputs.as_ref().map(|d| d.path().to_path_buf());
            let dir = dir.ok_or("no folder for the job's files")?;
            let path = dir.join(format!("{id}-{role}.{}", extension(&upload.name)));
            std::fs::write(&path, &bytes)
                .map_err(|e| format!("cannot save {} on the host: {e}", upload.name))?;
            *slot = Some(path);
        }
        Ok(sources)
    }

    fn events(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        while let Some(event) = self.worker.as_ref().and_then(Worker::try_event) {
            replies.extend(self.reply(event));
        }
        replies
    }

    fn reply(&mut self, event: Event) -> Vec<Reply> {
        let text = |p: &Path| p.display().to_string();
        vec![match event {
            Event::Loading { model } => Reply::Loading { model },
            Event::LoadStage {
                component,
                progress,
            } => Reply::LoadStage {
                component,
                progress,
            },
            Event::Loaded {
                model,
                device,
                dtype,
                seconds,
                native,
            } => Reply::Loaded {
                model,
                device,
                dtype,
                seconds,
                native,
            },
            Event::Started { id, seed } => Reply::Started { id, seed },
            Event::Progress {
                id,
                image,
                images,
                step,
                steps,
                preview,
            } => Reply::Progress {
                id,
                image,
                images,
                step,
                steps,
                preview: preview.and_then(|p| protocol::encode_preview(&p).ok()),
            },
            Event::Image {
                id, path, seconds, ..
            } => return self.image(id, &path, seconds),
            Event::Note { message } => Reply::Note { message },
            Event::Done { id, paths } => {
                self.active.remove(&id);
                Reply::Done {
                    id,
                    paths: paths.iter().map(|p| text(p)).collect(),
                }
            }
            Event::Failed { id, message } => {
                self.active.remove(&id);
                Reply::Failed { id, message }
            }
            Event::Cancelled { id, paths } => {
                self.active.remove(&id);
                Reply::Cancelled {
                    id,
                    paths: paths.iter().map(|p| text(p)).collect(),
                }
            }
        }]
    }

    /// The written PNG, sent whole; removed from the host unless the session keeps files.
    fn image(&self, id: u64, path: &Path, seconds: f64) -> Vec<Reply> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                return vec![error(
                    Some(id),
                    format!("cannot read the finished image {}: {e}", path.display()),
                )]
            }
        };
        if bytes.len() > protocol::MAX_IMAGE_BYTES {
            let fate = if self.session.keep {
                format!("it stays on the host at {}", path.display())
            } else {
                "render it with --keep-remote to keep it on the host".to_string()
            };
            return vec![Reply::Note {
                message: format!(
                    "an image of {} MB is more than the {} MB a remote image may be: {fate}",
                    bytes.len() >> 20,
                    protocol::MAX_IMAGE_BYTES >> 20
                ),
            }];
        }
        let reply = Reply::Image {
            id,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{id}.png")),
            remote_path: path.display().to_string(),
            seconds,
            png: protocol::base64_encode(&bytes),
        };
        if !self.session.keep {
            let _ = std::fs::remove_file(path);
        }
        vec![reply]
    }

    /// Stops what runs (within a step; a model load is not waited for past STOP_WAIT);
    /// whether it stopped.
    fn finish(&mut self) -> bool {
        let Some(worker) = self.worker.take() else {
            return true;
        };
        let ended = worker.shutdown_within(STOP_WAIT);
        if !ended {
            crate::output::atomic::remove_inflight();
        }
        ended
    }
}

fn error(id: Option<u64>, message: String) -> Reply {
    Reply::Error { id, message }
}

/// cpu, then each CUDA device libtorch sees.
fn devices() -> Vec<String> {
    let cuda = if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0)
    } else {
        0
    };
    std::iter::once("cpu".to_string())
        .chain((0..cuda).map(|n| format!("cuda:{n}")))
        .collect()
}

/// Diffusers folders and single-file checkpoints in `dir`, by name, sorted.
/// The client's file extension when it is a plain one (the image reader picks the format by
/// it), else png.
fn extension(name: &str) -> String {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| (1..=5).contains(&e.len()) && e.chars().all(|c| c.is_ascii_alphanumeric()))
        .map_or_else(|| "png".to_string(), str::to_ascii_lowercase)
}

pub fn list_models(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let path = e.path();
            path.join("model_index.json").is_file()
                || (path.is_file()
                    && path
                        .extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("safetensors")))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A path the session's flag names on the host, checked to exist before any job is taken: a
/// typo fails the hello, not the first render minutes later.
fn host_path(value: &Option<String>, flag: &str, folder: bool) -> Result<Option<PathBuf>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let path = PathBuf::from(value);
    let fits = if folder { path.is_dir() } else { path.exists() };
    if fits {
        return Ok(Some(path));
    }
    let what = if folder {
        "a folder"
    } else {
        "a file or folder"
    };
    Err(format!(
        "{flag} {value}: there is no such {what} on the host (with --remote, {flag} names a \
         path there, relative to the login folder)"
    ))
}
