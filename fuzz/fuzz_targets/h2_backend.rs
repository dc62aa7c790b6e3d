#![no_main]

#[path = "../h2_backend.rs"]
mod h2_backend;

libfuzzer_sys::fuzz_target!(|data: &[u8]| h2_backend::h2_backend(data));
