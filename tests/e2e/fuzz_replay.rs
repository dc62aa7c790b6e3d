//! The fuzz corpora (`fuzz/corpus/TARGET/*`: seeds and every finding)
//! replayed through the fuzz targets' checks on stable Rust, so what the
//! fuzzer found once stays fixed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/checks.rs"]
mod checks;
#[path = "../../fuzz/h2_backend.rs"]
mod h2_backend;
#[path = "../../fuzz/h2_connection.rs"]
mod h2_connection;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target}: {} fails its check", path.display());
        count += 1;
    }
    assert!(count > 0, "{target}: empty corpus");
}

#[test]
fn config_corpus() {
    replay("config", checks::config);
}

#[test]
fn admin_json_corpus() {
    replay("admin_json", checks::admin_json);
}

#[test]
fn routing_corpus() {
    replay("routing", checks::routing);
}

#[test]
fn raw_request_corpus() {
    replay("raw_request", checks::raw_request);
    checks::proxy_still_serves();
}

#[test]
fn h2_frames_corpus() {
    replay("h2_frames", checks::h2_frames);
    checks::proxy_still_serves();
}

#[test]
fn h2_connection_corpus() {
    replay("h2_connection", h2_connection::h2_connection);
}

#[test]
fn h2_backend_corpus() {
    replay("h2_backend", h2_backend::h2_backend);
}

#[test]
fn backend_response_corpus() {
    replay("backend_response", checks::backend_response);
}

#[test]
fn client_request_corpus() {
    replay("client_request", checks::client_request);
}

#[test]
fn hpack_decoder_corpus() {
    replay("hpack_decoder", checks::hpack_decoder);
}

#[test]
fn hpack_encoder_corpus() {
    replay("hpack_encoder", checks::hpack_encoder);
}
