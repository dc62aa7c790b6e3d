//! TLS material and dialing, shared by the data plane (listeners, backend
//! connections) and the control loops (probes, smoke checks), so neither
//! reaches into the other for a socket: the listener's certificate store
//! ([`server_tls`]), a pool's backend TLS settings and [`dial`]
//! ([`client_tls`]).

// Reads certificates and keys, and names from the wire (SNI): no
// construct in it may panic on them (docs/security.md).
#![deny(
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::panic_in_result_fn
)]

pub mod client_tls;
pub mod server_tls;

pub use client_tls::{BackendIo, UpstreamTls, dial, dial_http1};
pub use server_tls::{CertStore, TlsError, server_config};
