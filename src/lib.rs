//! The `sluice` binary's library half: the commands it runs, shared with the
//! end-to-end tests so they can start the same pieces in-process.

pub mod access_log;
pub mod app;
pub mod ctl;
pub mod demo;
pub mod discovery_check;
pub mod error;
pub mod leader;
pub mod logging;
pub mod migrate_cmd;
pub mod reload;
pub mod rollouts;
pub mod sinks;
pub mod state;
pub mod sweep;
pub mod tls;
pub mod upgrade;
