//! Named tensors from safetensors files, memory-mapped, checked against what a model asks for.
//!
//! Models take tensors by diffusers' names through a [`WeightPath`]. Nothing fails mid-build:
//! missing tensors and shape mismatches are collected, and [`Weights::finish`] reports them
//! together with the tensors the model never asked for, in one error.
use super::error::{EngineError, Result};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Dtype, TensorInfo};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Tensors that checkpoints carry but no model needs: buffers saved by older libraries.
const IGNORED_SUFFIXES: &[&str] = &["position_ids"];

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
}

struct Entry {
    file: usize,
    /// Where the bytes are and their stored dtype and shape.
    info: TensorInfo,
    /// The shape served (differs from the stored one for transposed views).
    shape: Vec<i64>,
    transpose: bool,
}

/// Which part of a stored tensor a renamed tensor is.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    Whole,
    /// Rows `start..start+count` of the first dimension (a fused q/k/v projection's parts).
    Rows {
        start: i64,
        count: i64,
    },
    /// The same data under another shape (1x1 convolutions served as linear weights).
    Reshape(Vec<i64>),
    /// A matrix's transpose (OpenCLIP's `text_projection`).
    Transpose,
}

/// Serve stored tensor `source` (through `view`) as `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rename {
    pub name: String,
    pub source: String,
    pub view: View,
}

/// Changes to tensors made as they are taken: `patch` gets the tensor in fp32 on the model's
/// device and returns what to add to it, if anything.
pub trait WeightPatch {
    fn delta(&self, name: &str, weight: &Tensor) -> Option<Tensor>;
}

/// What a safetensors error means for someone holding the file (the crate's words name its
/// internals: "incomplete metadata, file not fully covered").
fn plain_words(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall => "the file is too short to hold a header (empty or truncated)".into(),
        E::InvalidHeaderLength => {
            "its header length is larger than the file (truncated, or not a safetensors file)"
                .into()
        }
        E::HeaderTooLarge => {
            "its header length is absurdly large (damaged, or not a safetensors file)".into()
        }
        E::InvalidHeader(_) => "its header is not text (damaged)".into(),
        E::InvalidHeaderDeserialization(e) => format!("its header is not valid JSON ({e})"),
        E::MetadataIncompleteBuffer => {
            "its size does not match what its header lists (truncated, or data appended)".into()
        }
        E::InvalidOffset(name) => format!("tensor {name} has data offsets outside the file"),
        E::TensorInvalidInfo => {
            "a tensor's dtype, shape and data offsets disagree (a wrong dtype, or offsets \
             outside the file)"
                .into()
        }
        E::ValidationOverflow => "a tensor's shape is impossibly large".into(),
        other => other.to_string(),
    }
}

/// All tensors of one model component, possibly spread over several files.
pub struct Weights {
    files: Vec<MappedFile>,
    entries: HashMap<String, Entry>,
    device: Device,
    kind: Kind,
    used: RefCell<BTreeSet<String>>,
    problems: RefCell<Vec<String>>,
    location: String,
    patch: Option<std::rc::Rc<dyn WeightPatch>>,
    /// Where tensors are put when not on `device` (the host, for model CPU offload).
    placement: Option<Device>,
    /// Every tensor handed out, sharing its TensorImpl with the model's (see `recorded`).
    handed_out: RefCell<Vec<Tensor>>,
}

/// One tensor's bytes in a mapped file, with the shape and kind they were checked against.
struct Stored<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    shape: Vec<i64>,
    kind: Kind,
    transpose: bool,
}

fn map_file(path: &Path) -> Result<(MappedFile, Vec<(String, TensorInfo)>)> {
    let file = File::open(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the map is read-only; a file truncated under us is a user error that
    // safetensors' header check below or the bounds checks in `tensor` catch.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |message: String| EngineError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let (header_len, metadata) =
        safetensors::SafeTensors::read_metadata(&mmap[..]).map_err(|e| bad(plain_words(&e)))?;
    let data_start = 8 + header_len;
    let mut tensors = Vec::new();
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        if data_start.checked_add(end).is_none_or(|e| e > mmap.len()) || start > end {
            return Err(bad(format!("tensor {name} lies outside the file")));
        }
        // libtorch sizes and strides are i64: a huge dimension beside a zero holds no data, so
        // safetensors accepts it, but libtorch would fail on it.
        let strides_fit = info.shape.iter().try_fold(1i64, |n, &d| {
            i64::try_from(d.max(1)).ok().and_then(|d| n.checked_mul(d))
        });
        if strides_fit.is_none() {
            return Err(bad(format!(
                "tensor {name} has the impossible shape {:?}",
                info.shape
            )));
        }
        tensors.push((name, info.clone()));
    }
    Ok((
        MappedFile {
            path: path.to_path_buf(),
            mmap,
            data_start,
        },
        tensors,
    ))
}

impl Weights {
    /// Maps the files and reads their headers; tensor data is read only when asked for.
    pub fn open(paths: &[PathBuf], device: Device, kind: Kind) -> Result<Self> {
        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for path in paths {
            let (file, tensors) = map_file(path)?;
            let index = files.len();
            for (name, info) in tensors {
                let shape = info.shape.iter().map(|&d| d as i64).collect();
                entries.insert(
                    name,
                    Entry {
                        file: index,
                        info,
                        shape,
                        transpose: false,
                    },
                );
            }
            files.push(file);
        }
        let location = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self::from_parts(files, entries, device, kind, location))
    }

    fn from_parts(
        files: Vec<MappedFile>,
        entries: HashMap<String, Entry>,
        device: Device,
        kind: Kind,
        location: String,
    ) -> Self {
        Self {
            files,
            entries,
            device,
            kind,
            used: RefCell::default(),
            problems: RefCell::default(),
            location,
            patch: None,
            placement: None,
            handed_out: RefCell::default(),
        }
    }

    // ---- single-file checkpoints: tensors served under new names (see engine::checkpoint)

    /// One file's tensors under new names: `renames` says which stored tensor (and which part
    /// of it) each name serves. Tensors no rename mentions are invisible.
    pub fn open_renamed(
        path: &Path,
        renames: &[Rename],
        device: Device,
        kind: Kind,
        location: String,
    ) -> Result<Self> {
        let (file, tensors) = map_file(path)?;
        let stored: HashMap<String, TensorInfo> = tensors.into_iter().collect();
        let bad = |message: String| EngineError::Safetensors {
            path: path.to_path_buf(),
            message,
        };
        let mut entries = HashMap::new();
        for r in renames {
            let info = stored
                .get(&r.source)
                .ok_or_else(|| bad(format!("tensor {} is missing", r.source)))?;
            let dims: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            let (info, shape, transpose) = match &r.view {
                View::Whole => (info.clone(), dims, false),
                View::Rows { start, count } => {
                    let rows = dims.first().copied().unwrap_or(0);
                    if *start < 0 || *count < 0 || rows <= 0 || start.saturating_add(*count) > rows
                    {
                        return Err(bad(format!(
                            "tensor {} has {rows} rows, fewer than {} needs",
                            r.source, r.name
                        )));
                    }
                    let row_bytes = (info.data_offsets.1 - info.data_offsets.0) / rows as usize;
                    let begin = info.data_offsets.0 + row_bytes * *start as usize;
                    let mut sliced = info.clone();
                    sliced.data_offsets = (begin, begin + row_bytes * *count as usize);
                    sliced.shape[0] = *count as usize;
                    let mut shape = dims;
                    shape[0] = *count;
                    (sliced, shape, false)
                }
                View::Reshape(shape) => {
                    let elements = |s: &[i64]| {
                        s.iter()
                            .try_fold(1i64, |n, &d| n.checked_mul(d))
                            .filter(|_| s.iter().all(|&d| d >= 0))
                    };
                    if elements(shape).is_none() || elements(shape) != elements(&dims) {
                        return Err(bad(format!(
                            "tensor {} has shape {dims:?}, which cannot serve {} as {shape:?}",
                            r.source, r.name
                        )));
                    }
                    let mut reshaped = info.clone();
                    reshaped.shape = shape.iter().map(|&d| d as usize).collect();
                    (reshaped, shape.clone(), false)
                }
                View::Transpose => {
                    if dims.len() != 2 {
                        return Err(bad(format!("tensor {} is not a matrix", r.source)));
                    }
                    (info.clone(), vec![dims[1], dims[0]], true)
                }
            };
            entries.insert(
                r.name.clone(),
                Entry {
                    file: 0,
                    info,
                    shape,
                    transpose,
                },
            );
        }
        Ok(Self::from_parts(
            vec![file],
            entries,
            device,
            kind,
            location,
        ))
    }

    /// Adds `patch`'s deltas to the tensors it names as they are taken (LoRAs, fused at load).
    pub fn with_patch(mut self, patch: Option<std::rc::Rc<dyn WeightPatch>>) -> Self {
        self.patch = patch;
        self
    }

    // ---- end of single-file checkpoint support

    /// Puts the tensors on `device` while models still compute on [`device`](Self::device)
    /// (model CPU offload: weights wait in host memory and move to the GPU only to run).
    pub fn placed_on(mut self, device: Device) -> Self {
        self.placement = Some(device);
        self
    }

    /// Every tensor handed out so far. Each shares its TensorImpl with the handle the model
    /// holds, so `set_data` on it moves or converts the model's tensor in place.
    pub fn recorded(&self) -> Vec<Tensor> {
        self.handed_out
            .borrow()
            .iter()
            .map(Tensor::shallow_clone)
            .collect()
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The floating-point kind that weights are converted to.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn root(&self) -> WeightPath<'_> {
        WeightPath {
            weights: self,
            prefix: String::new(),
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored shape of a tensor, without reading it.
    pub fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.entries.get(name).map(|e| e.shape.clone())
    }

    /// One tensor as the files hold it: its bytes in the map, shape and kind, checked to agree.
    fn stored(&self, name: &str) -> Result<Stored<'_>> {
        let entry = self.entries.get(name).ok_or_else(|| {
            EngineError::Invalid(format!("tensor {name} is not in {}", self.location))
        })?;
        let file = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let bytes = &file.mmap[file.data_start + start..file.data_start + end];
        let kind = match entry.info.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::I16 => Kind::Int16,
            Dtype::I8 => Kind::Int8,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(EngineError::Safetensors {
                    path: file.path.clone(),
                    message: format!("tensor {name} has dtype {other:?}, which easel cannot use"),
                })
            }
        };
        // map_file refused dimensions whose strides do not fit in i64.
        let shape: Vec<i64> = entry.info.shape.iter().map(|&d| d as i64).collect();
        let expected = entry
            .info
            .shape
            .iter()
            .try_fold(kind.elt_size_in_bytes(), |n, &d| n.checked_mul(d));
        if expected != Some(bytes.len()) {
            let expected = expected.map_or("more than memory holds".into(), |n| n.to_string());
            return Err(EngineError::Safetensors {
                path: file.path.clone(),
                message: format!(
                    "tensor {name} holds {} bytes, but its shape needs {expected}",
                    bytes.len()
                ),
            });
        }
        Ok(Stored {
            path: &file.path,
            bytes,
            shape,
            kind,
            transpose: entry.transpose,
        })
    }

    /// Drops the mapped pages of a tensor that has been copied out, so that a load does not hold
    /// the file's pages (counted in the process's RSS) beside the tensors made from them: the
    /// peak of a load is then about the loaded weights, not the weights plus the files. Only the
    /// pages wholly inside the tensor's bytes go; a later read of the same tensor faults them
    /// back in from the page cache.
    fn release(&self, name: &str) {
        let Some(entry) = self.entries.get(name) else {
            return;
        };
        let file = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let page = page_size();
        let base = file.mmap.as_ptr() as usize;
        let first = (base + file.data_start + start).next_multiple_of(page) - base;
        let last = (base + file.data_start + end) / page * page - base;
        if last > first {
            // SAFETY: the map is a read-only, private mapping of a file; MADV_DONTNEED only
            // drops clean pages, which read back unchanged from the file.
            let _ = unsafe {
                file.mmap
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, first, last - first)
            };
        }
    }

    /// Reads one tensor as stored, on the CPU.
    pub fn read_raw(&self, name: &str) -> Result<Tensor> {
        let stored = self.stored(name)?;
        let tensor =
            Tensor::f_from_data_size(stored.bytes, &stored.shape, stored.kind).map_err(|e| {
                EngineError::Safetensors {
                    path: stored.path.to_path_buf(),
                    message: format!("tensor {name} cannot be read: {e}"),
                }
            })?;
        Ok(if stored.transpose {
            tensor.tr().contiguous()
        } else {
            tensor
        })
    }

    /// A stored float tensor converted to `kind` straight from the mapped file: one pass and
    /// one allocation instead of a copy and then a conversion (fp16 files loaded in fp32 are
    /// the usual case). None where that does not apply; the caller reads it the plain way.
    fn converted(&self, name: &str, kind: Option<Kind>) -> Option<Tensor> {
        if self.patch.is_some() || self.placement.unwrap_or(self.device) != Device::Cpu {
            return None;
        }
        let stored = self.stored(name).ok()?;
        let target = kind.unwrap_or(self.kind);
        let floats = [Kind::Float, Kind::Half, Kind::BFloat16];
        let aligned =
            (stored.bytes.as_ptr() as usize).is_multiple_of(stored.kind.elt_size_in_bytes());
        if stored.transpose
            || target == stored.kind
            || !floats.contains(&stored.kind)
            || !floats.contains(&target)
            || stored.bytes.is_empty()
            || !aligned
        {
            return None;
        }
        let shape = &stored.shape;
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        // SAFETY: `bytes` is a live slice of the map, of exactly this shape and kind; the view is
        // only read by the conversion, which writes a new tensor, and is dropped right after.
        let view = unsafe {
            Tensor::f_from_blob(
                stored.bytes.as_ptr(),
                shape,
                &strides,
                stored.kind,
                Device::Cpu,
            )
        }
        .ok()?;
        view.f_to_kind(target).ok()
    }

    fn take(&self, name: &str, shape: Option<&[i64]>, kind: Option<Kind>) -> Tensor {
        self.used.borrow_mut().insert(name.to_string());
        let placeholder = || Tensor::zeros([0], (Kind::Float, Device::Cpu));
        let Some(stored) = self.shape_of(name) else {
            self.problems
                .borrow_mut()
                .push(format!("missing tensor {name}"));
            return placeholder();
        };
        if let Some(shape) = shape {
            if stored != shape {
                self.problems.borrow_mut().push(format!(
                    "tensor {name} has shape {stored:?}, the model expects {shape:?}"
                ));
                return placeholder();
            }
        }
        if let Some(t) = self.converted(name, kind) {
            self.handed_out.borrow_mut().push(t.shallow_clone());
            self.release(name);
            return t;
        }
        let taken = self.read_raw(name);
        self.release(name);
        match taken {
            // Every weight a model takes without naming a kind is a float; libtorch would fail
            // deep inside the first layer that uses another kind.
            Ok(t) if kind.is_none() && !t.is_floating_point() => {
                self.problems.borrow_mut().push(format!(
                    "tensor {name} holds {:?} values, the model expects floating-point weights \
                     (F16, BF16 or F32)",
                    t.kind()
                ));
                placeholder()
            }
            Ok(t) => {
                let kind = kind.unwrap_or(if t.is_floating_point() {
                    self.kind
                } else {
                    t.kind()
                });
                let device = self.placement.unwrap_or(self.device);
                let mut tensor = None;
                if let Some(patch) = self.patch.as_ref().filter(|_| t.is_floating_point()) {
                    let full = t.to_device(device).to_kind(Kind::Float);
                    if let Some(delta) = patch.delta(name, &full) {
                        tensor = Some((full + delta).to_kind(kind));
                    }
                }
                let tensor = tensor.unwrap_or_else(|| t.to_device(device).to_kind(kind));
                self.handed_out.borrow_mut().push(tensor.shallow_clone());
                tensor
            }
            Err(e) => {
                self.problems.borrow_mut().push(e.to_string());
                placeholder()
            }
        }
    }

    /// Reports every missing, misshapen and unexpected tensor at once.
    pub fn finish(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut report: Vec<String> = self.problems.borrow().clone();
        let mut unexpected: Vec<&String> = self
            .entries
            .keys()
            .filter(|k| !used.contains(*k) && !IGNORED_SUFFIXES.iter().any(|s| k.ends_with(s)))
            .collect();
        unexpected.sort();
        report.extend(
            unexpected
                .into_iter()
                .map(|k| format!("unexpected tensor {k}")),
        );
        if report.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 40;
        let total = report.len();
        let mut text = report
            .into_iter()
            .take(SHOWN)
            .map(|l| format!("  - {l}"))
            .collect::<Vec<_>>()
            .join("\n");
        if total > SHOWN {
            text.push_str(&format!("\n  ... and {} more", total - SHOWN));
        }
        text.push_str("\nThe files may belong to another model version, or be incomplete: check the model folder or download it again.");
        Err(EngineError::WeightMismatch {
            location: self.location.clone(),
            report: text,
        })
    }
}

/// A position in the tensor-name tree, such as `down_blocks.0.attentions.1`.
#[derive(Clone)]
pub struct WeightPath<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> WeightPath<'a> {
    /// The child path `self.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> WeightPath<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        WeightPath {
            weights: self.weights,
            prefix,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A tensor of the given shape, converted to the model's device and float kind.
    pub fn get(&self, shape: &[i64], name: &str) -> Tensor {
        self.weights.take(&self.full(name), Some(shape), None)
    }

    /// A tensor of the given shape and an explicit kind.
    pub fn get_kind(&self, shape: &[i64], name: &str, kind: Kind) -> Tensor {
        self.weights.take(&self.full(name), Some(shape), Some(kind))
    }

    /// A tensor if the files have it (for optional biases and the like).
    pub fn get_optional(&self, shape: &[i64], name: &str) -> Option<Tensor> {
        self.contains(name).then(|| self.get(shape, name))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.full(name))
    }

    pub fn device(&self) -> Device {
        self.weights.device
    }

    pub fn kind(&self) -> Kind {
        self.weights.kind
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The safetensors files of one diffusers component folder, preferring the requested variant
/// (`diffusion_pytorch_model.fp16.safetensors`) and following sharded index files.
pub fn component_files(dir: &Path, stem: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut candidates = Vec::new();
    if let Some(v) = variant {
        candidates.push(format!("{stem}.{v}.safetensors"));
    }
    candidates.push(format!("{stem}.safetensors"));
    if variant.is_none() {
        candidates.push(format!("{stem}.fp16.safetensors"));
    }
    for name in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(vec![path]);
        }
        let index = dir.join(format!("{name}.index.json"));
        if index.is_file() {
            return shard_files(&index);
        }
    }
    let pickles = ["bin", "ckpt", "pt"]
        .iter()
        .any(|ext| dir.join(format!("{stem}.{ext}")).is_file());
    let hint = if pickles {
        " The folder has only pickle weights, which easel never loads because they can run code: convert them to safetensors (diffusers' `save_pretrained(safe_serialization=True)`)."
    } else {
        " Check that the model finished downloading."
    };
    Err(EngineError::Invalid(format!(
        "no weights in {}: looked for {}.{hint}",
        dir.display(),
        candidates.join(", ")
    )))
}

fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|source| EngineError::Io {
        path: index.into(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::Config {
        path: index.into(),
        message: e.to_string(),
    })?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EngineError::Config {
            path: index.into(),
            message: "it has no weight_map".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let names: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}
