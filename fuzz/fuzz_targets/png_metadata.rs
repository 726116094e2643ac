//! cargo-fuzz target: see fuzz/drivers.rs for what the input is fed to.
#![no_main]

#[path = "../drivers.rs"]
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    drivers::png_metadata(data);
});
