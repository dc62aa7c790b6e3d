//! `sluice ctl`'s command line: the global flags and every subcommand.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(long, env = "SLUICE_ADMIN", default_value = "http://127.0.0.1:9901", global = true)]
    pub admin: String,
    /// File holding the bearer token (else SLUICE_TOKEN).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Output: a table for people, or the API's JSON for scripts.
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Pools, versions, weights, backends and traffic.
    Status,
    /// The pools as the API returns them.
    Pools,
    /// Set every pool's weight: `weights blue=90 green=10`.
    Weights {
        #[arg(required = true)]
        weights: Vec<String>,
        /// Accept weight on a pool without backends.
        #[arg(long)]
        force: bool,
    },
    /// Put a new version and its backends into a pool.
    Deploy {
        pool: String,
        #[arg(long)]
        version: String,
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Replace even though the pool carries traffic.
        #[arg(long)]
        force: bool,
    },
    /// Restore the weights in force before the last weight change.
    Rollback,
    /// Deployment history (which version ran where, when).
    History,
    /// The audit trail, newest first.
    Audit {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Start, follow and steer rollouts.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Access-log lines: the last failed requests, or with --follow every
    /// new line (operator role; needs [access_log] on).
    Logs {
        /// Keep printing new lines until interrupted.
        #[arg(long)]
        follow: bool,
        /// Only this pool's.
        #[arg(long)]
        pool: Option<String>,
        /// Only this status class (5xx, 4xx, …) or code.
        #[arg(long)]
        status: Option<String>,
    },
    /// Follow routing changes live.
    Watch {
        /// Stop after this many events (default: until interrupted).
        #[arg(long)]
        count: Option<usize>,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout from one pool to another.
    Start {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// canary or blue-green.
        #[arg(long, default_value = "canary")]
        strategy: String,
        /// Steps as WEIGHT:HOLD or `pause`, e.g. `5:5m,25:5m,pause,100`.
        #[arg(long)]
        steps: Option<String>,
        /// Smoke checks as NAME=PATH, sent to every new backend.
        #[arg(long = "smoke")]
        smoke: Vec<String>,
        /// Check and run the hooks with SLUICE_DRY_RUN=1; change no weight.
        #[arg(long)]
        dry_run: bool,
        /// instant or gradual (back down through the steps).
        #[arg(long)]
        rollback: Option<String>,
        /// A JSON rollout body (hooks, analysis, …) the other flags add to.
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// The current rollout.
    Status,
    /// Rollouts, newest first.
    List,
    Pause,
    Resume,
    /// Pass the gate or end the current hold (`--full`: straight to 100%).
    Promote {
        #[arg(long)]
        full: bool,
    },
    /// Stop and put the weights back at once.
    Abort,
}
