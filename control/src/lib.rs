//! sluice's control loops, each a task beside the data plane that reads
//! the routing snapshot and the live windows and changes routing only
//! through the routing handle: the rollback guard ([`guard`]) and alert
//! notifications ([`alerts`]) active health checks ([`health`]) and rollouts ([`rollout`], with
//! [`hooks`] and [`smoke`] checks); [`webclient`] posts to webhooks.

pub mod alerts;
pub mod checks;
pub mod cluster;
pub mod compare;
pub mod direct;
pub mod discovery;
pub mod grpc;
pub mod guard;
pub mod health;
pub mod hooks;
pub mod outlier;
pub mod rollout;
pub mod sequential;
pub mod smoke;
pub mod verdict;
