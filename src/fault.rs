//! Fault injection for the tests that check what a crash leaves behind. `EASEL_INJECT_PANIC`
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
