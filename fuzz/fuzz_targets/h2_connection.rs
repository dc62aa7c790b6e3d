#![no_main]

#[path = "../h2_connection.rs"]
mod h2_connection;

libfuzzer_sys::fuzz_target!(|data: &[u8]| h2_connection::h2_connection(data));
