//! The worker: the one thread that owns the engine (and the GPU). Faces hand it jobs and read
//! its events; it never touches a terminal. The model loads once and stays loaded until a job
//! names another model (or other LoRAs).
mod engine_thread;

use crate::engine::device::{DeviceChoice, DtypeChoice};
use crate::recipe::{RecipeLora, RecipePatch};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// One render request: `count` images with seeds `seed`, `seed + 1`, ... (a random seed is
/// drawn when `seed` is None), each written as its own PNG, as `easel generate --batch`.
/// Serialized as is by the remote protocol (src/remote).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: u64,
    /// The model must be set; unset fields take the model's defaults.
    pub patch: RecipePatch,
    pub count: u32,
    /// LoRAs to fuse (besides those the prompt's `<lora:NAME:W>` tags name), as `--lora`.
    #[serde(default)]
    pub loras: Vec<RecipeLora>,
    /// Where the init image and mask are read from when not from the paths the recipe records
    /// (a remote client's uploads, saved by the host's worker). Never on the wire.
    #[serde(skip)]
    pub read_from: InitSources,
}

/// Files to read in place of a recipe's init image and mask paths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitSources {
    pub init_image: Option<PathBuf>,
    pub mask: Option<PathBuf>,
}

/// Where a job's one image goes instead of a new name in the worker's folder (a batch plan's
/// file name, replaced if it exists), and the wildcard template its recipe records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    pub path: PathBuf,
    pub prompt_template: Option<String>,
}

/// An 8-bit RGB picture (a finished image or a latent preview), row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// What the worker reports, in order, for each job: Started, Progress..., then exactly one of
/// Done, Failed or Cancelled. Loading/Loaded come before a job's Started when it needs a load.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A load starts (once per load).
    Loading {
        model: String,
    },
    /// The load reached the next component; `progress` is the share of the load done, 0 to 1.
    LoadStage {
        component: String,
        progress: f32,
    },
    Loaded {
        model: String,
        device: String,
        dtype: String,
        seconds: f64,
        /// The model's native size (what an unset size renders at).
        native: (u32, u32),
    },
    Started {
        id: u64,
        seed: u64,
    },
    Progress {
        id: u64,
        /// 0-based image of the job, and how many it has.
        image: u32,
        images: u32,
        step: usize,
        steps: usize,
        preview: Option<Picture>,
    },
    /// One image of the job was written (before the job's Done).
    Image {
        id: u64,
        path: PathBuf,
        picture: Picture,
        seconds: f64,
    },
    /// Something worth telling the user that does not end the job.
    Note {
        message: String,
    },
    Done {
        id: u64,
        paths: Vec<PathBuf>,
    },
    Failed {
        id: u64,
        message: String,
    },
    Cancelled {
        id: u64,
        /// Images finished before the cancel (kept on disk).
        paths: Vec<PathBuf>,
    },
}

/// Where and how the worker renders.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub device: DeviceChoice,
    pub dtype: DtypeChoice,
    /// Folder for the PNGs (named as `easel generate` names them in a folder).
    pub out_dir: PathBuf,
    /// The history index to record images in (None: not recorded).
    pub history: Option<PathBuf>,
    /// Textual-inversion folders prompts may use.
    pub embeddings: Vec<PathBuf>,
    /// Where `<lora:NAME:W>` tags find NAME.safetensors.
    pub lora_dir: Option<PathBuf>,
    /// Send a latent preview every this many steps (0: never).
    pub preview_every: usize,
    /// TAESD (an AutoencoderTiny folder) drawing those previews; None: the latent map.
    pub preview_decoder: Option<PathBuf>,
    /// `--low-memory` and `--vae-tiling`, for every model it loads (offload follows from
    /// `low_memory` once the device is known).
    pub memory: crate::engine::pipeline::MemoryOptions,
    /// `--fast-decoder`: TAESD decoding the images instead of the VAE.
    pub fast_decoder: Option<PathBuf>,
    /// `--vae`: a VAE replacing every model's own.
    pub vae: Option<PathBuf>,
    /// `--model-config`: the config for single-file checkpoints.
    pub model_config: Option<PathBuf>,
}

/// What a face needs from a worker, so the studio takes the local one or a remote one
/// (src/remote) alike.
pub trait WorkerHandle {
    /// Queues a job; it runs after the ones before it.
    fn submit(&self, job: Job) -> Result<(), String>;
    /// A running job stops before its next step; a queued one never starts.
    fn cancel(&self, id: u64);
    /// The next event, if one is waiting; never blocks.
    fn try_event(&self) -> Option<Event>;
    /// Waits up to `timeout` for an event.
    fn wait_event(&self, timeout: std::time::Duration) -> Option<Event>;
    /// Cancels everything and waits at most `limit` for the end; whether it ended.
    fn shutdown_within(self: Box<Self>, limit: std::time::Duration) -> bool;
    /// A remote worker's host and the models it offers; None for a local worker, whose
    /// models are this machine's.
    fn models(&self) -> Option<(String, Vec<String>)> {
        None
    }
}

impl WorkerHandle for Worker {
    fn submit(&self, job: Job) -> Result<(), String> {
        Worker::submit(self, job)
    }
    fn cancel(&self, id: u64) {
        Worker::cancel(self, id);
    }
    fn try_event(&self) -> Option<Event> {
        Worker::try_event(self)
    }
    fn wait_event(&self, timeout: std::time::Duration) -> Option<Event> {
        Worker::wait_event(self, timeout)
    }
    fn shutdown_within(self: Box<Self>, limit: std::time::Duration) -> bool {
        Worker::shutdown_within(*self, limit)
    }
}

type Flags = Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>>;
type Queued = (Job, Arc<AtomicBool>, Option<Placement>);

/// The handle a face holds: submit jobs, cancel them, read events. Dropping it cancels what is
/// left and lets the thread end.
pub struct Worker {
    jobs: Option<Sender<Queued>>,
    events: Receiver<Event>,
    flags: Flags,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(config: WorkerConfig) -> std::io::Result<Self> {
        let (job_tx, job_rx) = mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel();
        let flags: Flags = Arc::default();
        let thread_flags = Arc::clone(&flags);
        let thread = std::thread::Builder::new()
            .name("easel-worker".into())
            .spawn(move || engine_thread::run(&config, &job_rx, &event_tx, &thread_flags))?;
        Ok(Self {
            jobs: Some(job_tx),
            events: event_rx,
            flags,
            thread: Some(thread),
        })
    }

    /// Queues a job; it runs after the ones before it.
    pub fn submit(&self, job: Job) -> Result<(), String> {
        self.queue(job, None)
    }

    /// Queues a job of one image written to `placement`'s path.
    pub fn submit_placed(&self, job: Job, placement: Placement) -> Result<(), String> {
        self.queue(job, Some(placement))
    }

    fn queue(&self, job: Job, placement: Option<Placement>) -> Result<(), String> {
        let flag = Arc::new(AtomicBool::new(false));
        self.lock_flags().insert(job.id, Arc::clone(&flag));
        let sent = self
            .jobs
            .as_ref()
            .map(|tx| tx.send((job, flag, placement)).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            Err("the render worker has stopped: restart easel".into())
        }
    }

    /// Cancels a job: a running one stops before its next step; a queued one never starts.
    pub fn cancel(&self, id: u64) {
        if let Some(flag) = self.lock_flags().get(&id) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// The next event, if one is waiting; never blocks.
    pub fn try_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Waits up to `timeout` for an event (for tests and scripts).
    pub fn wait_event(&self, timeout: std::time::Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    fn lock_flags(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<AtomicBool>>> {
        self.flags.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancels everything and waits for the thread (it stops within one step).
    pub fn shutdown(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// As `shutdown`, but waits at most `limit`: a model load cannot be interrupted, and
    /// quitting should not wait for one. Returns whether the thread ended.
    pub fn shutdown_within(mut self, limit: std::time::Duration) -> bool {
        self.stop();
        let start = std::time::Instant::now();
        while let Some(t) = &self.thread {
            if t.is_finished() {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        true
    }

    fn stop(&mut self) {
        for flag in self.lock_flags().values() {
            flag.store(true, Ordering::SeqCst);
        }
        self.jobs = None;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
