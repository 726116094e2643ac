//! The remote worker protocol: one JSON object per line, `type` naming the message. The client
//! speaks `Request`s on the worker's stdin, the worker answers with `Reply`s on its stdout: the
//! local worker's jobs and events, with pictures as base64 PNGs and paths as text.
use crate::engine::pipeline::Image;
use crate::worker::{Job, Picture};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// Bumped whenever a message changes in a way an older peer would misread.
pub const PROTOCOL_VERSION: u32 = 2;
/// Previews travel at most this many pixels on their long side (they are glances, not images).
pub const PREVIEW_MAX_SIDE: u32 = 128;
/// A finished PNG larger than this stays on the host (a 2048x2048 render is about 12 MB).
pub const MAX_IMAGE_BYTES: usize = 64 << 20;
/// The largest init image or mask a client sends with a job (a 4096x4096 PNG is about 30 MB
/// at worst; photos as JPEG far less).
pub const MAX_UPLOAD_BYTES: usize = 32 << 20;
/// The longest line a worker reads: a job with its init image and mask at the limit, base64,
/// plus the envelope; anything longer is a mistake.
pub const MAX_REQUEST_BYTES: usize = 2 * (MAX_UPLOAD_BYTES / 3 * 4 + 4) + (1 << 20);
/// The longest line a client reads: a base64 image at the limit, plus its envelope.
pub const MAX_REPLY_BYTES: usize = MAX_IMAGE_BYTES / 3 * 4 + (1 << 20);

/// What the client says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// One request lives at a time, parsed from a line: its size in memory does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Request {
    /// The first message: versions, and how this connection wants to work.
    Hello {
        protocol: u32,
        easel: String,
        #[serde(default)]
        session: Session,
    },
    Submit {
        job: Job,
        /// The job's init image and mask, when it has them: the host reads them from here,
        /// never from its own disk.
        #[serde(default, skip_serializing_if = "Uploads::is_empty")]
        uploads: Uploads,
    },
    Cancel {
        id: u64,
    },
}

/// Files a job brings along.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Uploads {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_image: Option<Upload>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<Upload>,
}

impl Uploads {
    pub fn is_empty(&self) -> bool {
        self.init_image.is_none() && self.mask.is_none()
    }
}

/// One file: its path on the client (what the recipe records, and the job's patch names) and
/// its bytes, base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub name: String,
    pub bytes: String,
}

/// How one connection renders; fixed by the hello.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    /// Keep the PNGs on the host (in the worker's --out folder) after sending them.
    pub keep: bool,
    /// auto, cpu, cuda or cuda:N (None: auto).
    pub device: Option<String>,
    /// auto, fp32, fp16 or bf16 (None: auto).
    pub dtype: Option<String>,
    /// A preview every this many steps (0: none).
    pub preview_every: usize,
    /// `--vae-tiling`.
    pub vae_tiling: bool,
    /// `--low-memory`.
    pub low_memory: bool,
    /// Files the client's flags name on the host.
    pub host_files: HostFiles,
}

/// What `--vae`, `--model-config`, `--embeddings`, `--fast-decoder` and `--preview-decoder`
/// name with `--remote`: paths on the host, as its shell would take them from the login folder
/// (weights stay where they are; only init images and masks travel with a job).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostFiles {
    pub vae: Option<String>,
    pub model_config: Option<String>,
    pub embeddings: Option<String>,
    pub fast_decoder: Option<String>,
    pub preview_decoder: Option<String>,
}

/// The worker's answer to a hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u32,
    pub easel: String,
    /// The worker's process id on the host (for logs, and tests that watch it end).
    pub pid: u32,
    /// What the host can render on: cpu, cuda:0, ...
    pub devices: Vec<String>,
    /// The models folder on the host, if the worker was given one.
    pub models_dir: Option<String>,
    /// Models in that folder, by the names a job's `model` may use.
    pub models: Vec<String>,
    /// Where kept PNGs stay on the host (None: nothing is kept).
    pub kept_in: Option<String>,
}

/// A picture as it travels: a PNG, base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePicture {
    pub width: u32,
    pub height: u32,
    pub png: String,
}

/// What the worker says: the welcome, the local worker's events, and errors about requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    Welcome(Welcome),
    Loading {
        model: String,
    },
    LoadStage {
        component: String,
        progress: f32,
    },
    Loaded {
        model: String,
        device: String,
        dtype: String,
        seconds: f64,
        native: (u32, u32),
    },
    Started {
        id: u64,
        seed: u64,
    },
    Progress {
        id: u64,
        image: u32,
        images: u32,
        step: usize,
        steps: usize,
        preview: Option<WirePicture>,
    },
    /// A finished image: the PNG file as written on the host (recipe included), base64.
    Image {
        id: u64,
        /// The file's name, which the client keeps when it saves it in a folder.
        name: String,
        /// Where it was written on the host (gone unless the session keeps files).
        remote_path: String,
        seconds: f64,
        png: String,
    },
    Note {
        message: String,
    },
    Done {
        id: u64,
        paths: Vec<String>,
    },
    Failed {
        id: u64,
        message: String,
    },
    Cancelled {
        id: u64,
        paths: Vec<String>,
    },
    /// A request that could not be carried out (a job's, when `id` is set).
    Error {
        id: Option<u64>,
        message: String,
    },
}

/// One line of JSON, newline included.
pub fn to_line<T: Serialize>(message: &T) -> String {
    // Our message types hold no maps with non-string keys: serializing cannot fail.
    let mut line = serde_json::to_string(message).unwrap_or_else(|e| {
        serde_json::json!({"type": "error", "id": null, "message": e.to_string()}).to_string()
    });
    line.push('\n');
    line
}

pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line).map_err(|e| {
        format!(
            "cannot read the request {}: {e} (send one JSON object per line: hello, submit or cancel)",
            clip(line)
        )
    })
}

pub fn parse_reply(line: &str) -> Result<Reply, String> {
    serde_json::from_str(line).map_err(|e| format!("cannot read {}: {e}", clip(line)))
}

/// The start of a line, for error messages (a bad line may be megabytes long).
fn clip(line: &str) -> String {
    let short: String = line.trim().chars().take(80).collect();
    if short.len() < line.trim().len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("bad base64 data: {e}"))
}

/// A preview scaled down (never up) to fit `PREVIEW_MAX_SIDE`, as a base64 PNG.
pub fn encode_preview(picture: &Picture) -> Result<WirePicture, String> {
    let (w, h) = (picture.width, picture.height);
    let rgb = image::RgbImage::from_raw(w, h, picture.rgb.clone())
        .ok_or_else(|| format!("a {w}x{h} preview with {} bytes", picture.rgb.len()))?;
    let long = w.max(h);
    let rgb = if long > PREVIEW_MAX_SIDE {
        let scale = |side: u32| u64::from(side) * u64::from(PREVIEW_MAX_SIDE) / u64::from(long);
        let (sw, sh) = (scale(w).max(1), scale(h).max(1));
        image::imageops::resize(
            &rgb,
            u32::try_from(sw).unwrap_or(1),
            u32::try_from(sh).unwrap_or(1),
            image::imageops::FilterType::Triangle,
        )
    } else {
        rgb
    };
    let small = Image {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    };
    let png = crate::output::png::encode(&small, &[]).map_err(|e| e.to_string())?;
    Ok(WirePicture {
        width: small.width,
        height: small.height,
        png: base64_encode(&png),
    })
}

/// The RGB pixels of a PNG (any colour type, as 8-bit RGB).
pub fn decode_png(bytes: &[u8]) -> Result<Picture, String> {
    use image::ImageDecoder;
    let bad = |e: image::ImageError| format!("not a readable PNG: {e}");
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).map_err(bad)?;
    // Deflate packs at most 1032 bytes into one: a PNG whose header claims more pixels than
    // its data can hold is broken or hostile, and must not make us allocate for them.
    let most = (bytes.len() as u64).saturating_mul(1032) + (1 << 20);
    if decoder.total_bytes() > most {
        let (w, h) = decoder.dimensions();
        return Err(format!(
            "not a readable PNG: its header claims {w}x{h} pixels, more than its {} bytes can hold",
            bytes.len()
        ));
    }
    let decoded = image::DynamicImage::from_decoder(decoder)
        .map_err(bad)?
        .to_rgb8();
    Ok(Picture {
        width: decoded.width(),
        height: decoded.height(),
        rgb: decoded.into_raw(),
    })
}

pub fn decode_preview(wire: &WirePicture) -> Result<Picture, String> {
    decode_png(&base64_decode(&wire.png)?)
}

/// One line read with a size limit, so a runaway peer cannot fill the memory.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// Longer than the limit (the rest of it was skipped), or not UTF-8.
    Bad(String),
}

/// The next line without its newline; None at the end of the input.
pub fn read_line(input: &mut dyn BufRead, limit: usize) -> std::io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            if buf.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > limit + 1 {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        input.consume(take);
        if end {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::Bad(format!(
            "a line longer than {limit} bytes was skipped"
        ))));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(Some(match String::from_utf8(buf) {
        Ok(text) => Line::Text(text),
        Err(_) => Line::Bad("a line that is not UTF-8 was skipped".into()),
    }))
}
