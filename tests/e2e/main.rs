//! sluice's end-to-end tests, in one test binary: each module was once its
//! own binary, and fifteen links of the whole dependency graph cost minutes
//! of CI time and gigabytes of disk. Run one group with
//! `cargo test --test e2e routing::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
/// Throwaway PostgreSQL servers, shared with the store crate's tests.
#[path = "../../store/tests/pg/mod.rs"]
mod pg;

mod access_log;
mod admin_api;
mod admin_e2e;
mod adversarial;
mod api_types;
mod backend_framing;
mod backend_tls;
mod client_framing;
mod ctl;
mod dashboard;
mod deploy;
mod discovery;
mod docs;
mod drain_tunnels;
mod engines;
mod faults;
mod fine_weights;
mod fuzz_replay;
mod grpc;
mod guard_e2e;
mod h2_server;
mod h2spec;
mod health_e2e;
mod overload;
mod process;
mod protocols;
mod rate_limits;
mod replicas;
mod request_ids;
mod retries;
mod rollout_checks;
mod rollout_e2e;
mod rollout_hooks;
mod routing;
mod shadow;
mod smuggling;
mod state;
mod tls_e2e;
mod trace_context;
mod webhooks_tls;
mod zero_downtime;
