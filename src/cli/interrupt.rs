//! Ctrl-C: the first asks the render to stop after the current step (nothing is written); the
//! second quits at once, removing any half-written temporary file first.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static CANCEL: AtomicBool = AtomicBool::new(false);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const CANCELLED_EXIT: u8 = 130;

/// Installs the handler (once per process) and returns the flag the engine watches.
pub fn install() -> Result<&'static AtomicBool, String> {
    INSTALLED
        .get_or_init(|| {
            ctrlc::set_handler(|| {
                if CANCEL.swap(true, Ordering::SeqCst) {
                    crate::output::atomic::remove_inflight();
                    // _exit: libtorch's static destructors may crash while the render thread
                    // is still inside libtorch. SAFETY: ends the process; nothing runs after.
                    unsafe { libc::_exit(i32::from(CANCELLED_EXIT)) };
                }
                eprintln!("\nstopping after this step; press Ctrl-C again to quit at once");
            })
            .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))
        })
        .clone()?;
    Ok(&CANCEL)
}
