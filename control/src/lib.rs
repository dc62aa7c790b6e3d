//! sluice's control loops, each a task beside the data plane that reads
//! the routing snapshot and the live windows and changes routing only
//! through the routing handle: the rollback guard ([`guard`]) and alert
//! notifications ([`alerts`]) and active health checks ([`health`]).

pub mod alerts;
pub mod files;
pub mod guard;
pub mod health;
pub mod outlier;
pub mod rollout;
pub mod smoke;
