//! How sluice reaches out and what it reloads from disk, shared by the
//! data plane, the control loops, the admin API and the binary, so none
//! reaches into another for it: the listener's certificate store
//! ([`server_tls`]), a pool's backend TLS settings and [`dial`]
//! ([`client_tls`]), one-shot HTTP(S) calls to webhooks and other
//! replicas ([`webclient`]), and watching the files certificates, tokens
//! and the config come from ([`files`]).

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
pub mod files;
pub mod server_tls;
pub mod webclient;

pub use client_tls::{BackendIo, UpstreamTls, dial, dial_http1};
pub use server_tls::{CertStore, TlsError, server_config};
