//! Fault injection for the tests that check what a crash or a shortage leaves behind. `EASEL_INJECT_PANIC`
//! names comma-separated points (`worker-once`: the render worker's next job panics, once;
//! `ui-f12`: F12 panics the studio's UI thread). Unset, as for every user, nothing happens.
use std::sync::atomic::{AtomicBool, Ordering};

static WORKER_FIRED: AtomicBool = AtomicBool::new(false);

fn named(point: &str) -> bool {
    std::env::var("EASEL_INJECT_PANIC").is_ok_and(|v| v.split(',').any(|p| p.trim() == point))
}

/// Panics in the worker the first time it is called, when `worker-once` is set.
pub fn worker_job() {
    if named("worker-once") && !WORKER_FIRED.swap(true, Ordering::SeqCst) {
        panic!("injected worker panic (EASEL_INJECT_PANIC=worker-once)");
    }
}

/// Whether F12 should panic the UI thread.
pub fn ui_f12() -> bool {
    named("ui-f12")
}

static UNET_OOM_FIRED: AtomicBool = AtomicBool::new(false);
static DECODE_OOM_FIRED: AtomicBool = AtomicBool::new(false);

/// `EASEL_INJECT_OOM` names comma-separated points (`unet-once`: the next UNet step, once;
/// `decode-once`: the next whole-image VAE decode, once) where libtorch is asked for an
/// allocation no machine can make, so the real out-of-memory error (CPU or CUDA allocator)
/// travels the real path. Unset, as for every user, nothing happens.
pub fn out_of_memory(point: &str, device: tch::Device) {
    let fired = match point {
        "unet" => &UNET_OOM_FIRED,
        "decode" => &DECODE_OOM_FIRED,
        _ => return,
    };
    let once = format!("{point}-once");
    let named =
        std::env::var("EASEL_INJECT_OOM").is_ok_and(|v| v.split(',').any(|p| p.trim() == once));
    if named && !fired.swap(true, Ordering::SeqCst) {
        // 4 PiB: more than any allocator will hand out; tch panics as on a real shortage.
        let _ = tch::Tensor::empty([1i64 << 50], (tch::Kind::Float, device));
    }
}
