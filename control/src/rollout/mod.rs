//! The rollout engine: takes a version from the `from` pool to the `to`
//! pool step by step (canary) or in one switch (blue-green), checking it
//! before any traffic (health, smoke checks) and at every step (the same
//! verdict as the rollback guard, [`crate::guard::judge`]), and reverses
//! itself on a failed check, a failed smoke test or a routing change made
//! by someone else. One rollout runs at a time; every transition is
//! reported to a [`RolloutSink`] (stored, audited, alerted).

mod engine;
mod fields;
mod request;
mod run;
mod spec;
mod status;
mod step;
#[cfg(test)]
mod tests;

pub use engine::Engine;
pub use fields::SpecError;
pub use request::{RolloutDefaults, parse_request};
pub use spec::*;
pub use status::{Command, Phase, RESUMED, RolloutError, RolloutSink, Status};
