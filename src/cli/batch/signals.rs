//! Ctrl-C and SIGTERM for a batch: the first lets the images being rendered finish and starts
//! no other; the second quits at once, removing any half-written temporary file (the PNGs
//! themselves appear only whole, by rename).
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

static STOP: AtomicI32 = AtomicI32::new(0);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

/// Installs the handlers (once per process) and returns the flag: 0, or the first signal.
pub fn install() -> Result<&'static AtomicI32, String> {
    INSTALLED
        .get_or_init(|| {
            let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
                .map_err(|e| format!("cannot install the signal handlers: {e}"))?;
            std::thread::Builder::new()
                .name("easel-signals".into())
                .spawn(move || {
                    for signal in signals.forever() {
                        if STOP.swap(signal, Ordering::SeqCst) != 0 {
                            crate::output::atomic::remove_inflight();
                            // _exit, not exit: C++ static destructors (libtorch's) running
                            // while another thread is inside libtorch can crash the process
                            // instead of letting it end with the status shells expect.
                            // SAFETY: ends the process; nothing runs after it.
                            unsafe { libc::_exit(128 + signal) };
                        }
                        eprintln!(
                            "\nstopping after the image(s) being rendered; press Ctrl-C again to quit at once"
                        );
                    }
                })
                .map(|_| ())
                .map_err(|e| format!("cannot start the signal thread: {e}"))
        })
        .clone()?;
    Ok(&STOP)
}

/// The exit status of a batch stopped by `signal` (128 + its number, as shells report it).
pub fn exit_status(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(130)
}
