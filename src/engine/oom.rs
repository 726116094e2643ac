//! Running out of memory, recognised in one place. libtorch says it in several ways (the CUDA
//! caching allocator, the CPU allocator) and tch's infallible ops turn its errors into panics;
//! each becomes `EngineError::OutOfMemory`, whose one message every face shows (the CLI, the
//! studio's worker, batches, remote workers), so the advice is the same wherever it happens.
use super::error::{EngineError, Result};
use super::memory_estimate::{Estimate, RenderSize};
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

/// How libtorch words it: CUDA's caching allocator, a CUDA runtime error, the CPU allocator
/// (old and new wording), and the MPS and ROCm backends.
const SIGNS: &[&str] = &[
    "CUDA out of memory",
    "CUDA error: out of memory",
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
    "MPS backend out of memory",
    "HIP out of memory",
];

/// libtorch's words start here; their first line is enough (a C++ backtrace follows).
const DETAIL_CHARS: usize = 240;

thread_local! {
    static STAGE: Cell<&'static str> = const { Cell::new("rendering") };
    static CATCHING: Cell<usize> = const { Cell::new(0) };
}

/// libtorch's account of running out of memory in `text` (an error or a panic message, whose
/// newlines may be escaped), or None when `text` says something else.
pub fn detail(text: &str) -> Option<String> {
    let start = SIGNS.iter().filter_map(|s| text.find(s)).min()?;
    let rest = &text[start..];
    let end = [rest.find('\n'), rest.find("\\n")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    let line: String = rest[..end].chars().take(DETAIL_CHARS).collect();
    // A panic's text wraps the error as `Torch("...")`.
    let line = line.trim_end();
    let line = line.strip_suffix("\")").unwrap_or(line);
    Some(line.trim_end_matches(['.', ' ']).to_string())
}

/// Names what this thread is doing now, for the message should memory run out.
pub fn enter(stage: &'static str) {
    STAGE.with(|s| s.set(stage));
}

pub fn current_stage() -> &'static str {
    STAGE.with(Cell::get)
}

/// Runs `f`; a panic that is libtorch running out of memory becomes `OutOfMemory` (any other
/// panic goes on unwinding). The panic's own message is not printed: the error says it.
pub fn catch<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    quiet_hook();
    CATCHING.with(|c| c.set(c.get() + 1));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(c.get().saturating_sub(1)));
    match outcome {
        Ok(result) => result,
        Err(payload) => match panic_text(payload.as_ref()).as_deref().and_then(detail) {
            Some(detail) => Err(EngineError::OutOfMemory {
                stage: current_stage().to_string(),
                tried: None,
                detail,
            }),
            None => panic::resume_unwind(payload),
        },
    }
}

/// The text a panic carries, when it carries text.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// What a face says for an engine panic: the out-of-memory advice when it is one, else the
/// panic's text.
pub fn describe_panic(payload: &(dyn std::any::Any + Send)) -> String {
    let text = panic_text(payload).unwrap_or_else(|| "an unknown error".into());
    match detail(&text) {
        Some(detail) => EngineError::OutOfMemory {
            stage: current_stage().to_string(),
            tried: None,
            detail,
        }
        .to_string(),
        None => text,
    }
}

/// `err` with what was tried (size and memory estimate) when it is an out-of-memory error.
pub fn with_tried(err: EngineError, size: &RenderSize, estimate: &Estimate) -> EngineError {
    match err {
        EngineError::OutOfMemory {
            stage,
            tried: None,
            detail,
        } => EngineError::OutOfMemory {
            stage,
            tried: Some(tried(size, estimate)),
            detail,
        },
        other => other,
    }
}

fn tried(size: &RenderSize, estimate: &Estimate) -> String {
    let batch = if size.batch > 1 {
        format!(", batch {}", size.batch)
    } else {
        String::new()
    };
    format!(
        "a {}x{} render{batch}, estimated at {} for its activations",
        size.width,
        size.height,
        amount(estimate.activations)
    )
}

fn amount(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// The message of `EngineError::OutOfMemory`.
pub fn describe(stage: &str, tried: Option<&str>, detail: &str) -> String {
    let tried = tried.map(|t| format!(" ({t})")).unwrap_or_default();
    format!(
        "out of memory while {stage}{tried}: {detail}. Try a smaller size (--width and \
         --height), --low-memory (attention in slices and the VAE in tiles) or --vae-tiling; on \
         a GPU, also close other programs that use it"
    )
}

/// Keeps the default hook from printing an out-of-memory panic that `catch` turns into an
/// error (it would print libtorch's backtrace before the clear message).
fn quiet_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let caught = CATCHING.with(Cell::get) > 0
                && panic_text(info.payload()).is_some_and(|t| detail(&t).is_some());
            if !caught {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn libtorch_wordings_are_recognised() {
        let cuda = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total \
                    capacity)\nException raised from malloc at ...";
        assert_eq!(
            detail(cuda).unwrap(),
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity)"
        );
        assert!(detail("CUDA error: out of memory\nCUDA kernel errors").is_some());
        assert_eq!(
            detail("Torch(\"DefaultCPUAllocator: not enough memory: 9 bytes (code 12)\")").unwrap(),
            "DefaultCPUAllocator: not enough memory: 9 bytes (code 12)"
        );
        assert!(
            detail("Torch(\"DefaultCPUAllocator: not enough memory: you tried\\nx\")")
                .is_some_and(|d| !d.contains("\\n"))
        );
        assert!(detail("shape mismatch: [1, 4] and [2, 4]").is_none());
    }

    /// A real allocation libtorch cannot make, through tch's panicking op: the error libtorch
    /// gives is recognised and caught, and the thread carries on.
    #[test]
    fn an_impossible_allocation_becomes_out_of_memory() {
        enter("testing");
        let err = catch(|| {
            let t = Tensor::empty([1i64 << 50], (Kind::Float, Device::Cpu));
            Ok(t.numel())
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EngineError::OutOfMemory { .. }), "{text}");
        assert!(text.starts_with("out of memory while testing"), "{text}");
        for advice in ["smaller size", "--low-memory", "--vae-tiling"] {
            assert!(text.contains(advice), "{text}");
        }
        let fallible = Tensor::f_empty([1i64 << 50], (Kind::Float, Device::Cpu)).unwrap_err();
        assert!(matches!(
            EngineError::from(fallible),
            EngineError::OutOfMemory { .. }
        ));
    }

    #[test]
    fn other_panics_go_on_unwinding() {
        let outcome = panic::catch_unwind(|| catch(|| -> Result<()> { panic!("a bug") }));
        assert!(outcome.is_err());
    }
}
