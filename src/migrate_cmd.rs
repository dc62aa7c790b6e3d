//! `sluice migrate status|up|down [--to VERSION] [--dry-run] --store URL
//! [--dir DIR]`: sluice's own schema by default, or a directory of
//! `NNNN_name.up.sql` / `NNNN_name.down.sql` pairs (a service's own
//! database migrations, run the same way).

use std::fmt::Write as _;
use std::path::PathBuf;

use sluice_store::migrate::{Migration, MigrationSet, Migrator};
use sluice_store::{StepState, Store};

use crate::app;
use crate::error::AppError;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MigrateAction {
    /// List applied and pending migrations, with when each was applied.
    Status,
    /// Apply pending migrations (up to --to).
    Up {
        /// Stop after this version.
        #[arg(long)]
        to: Option<i64>,
        /// Print the SQL that would run; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reverse applied migrations down to --to (default: the one before the latest).
    Down {
        /// The version to end at (0: nothing applied).
        #[arg(long)]
        to: Option<i64>,
        /// Print the SQL that would run; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    #[command(subcommand)]
    pub action: MigrateAction,
    /// Store URL: sqlite://FILE or postgres://USER@HOST/DB.
    #[arg(long, env = "SLUICE_STORE", global = true)]
    pub store: Option<String>,
    /// Run the migrations in this directory instead of sluice's own schema.
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
}

/// Runs the command; returns what to print.
pub fn run(args: MigrateArgs) -> Result<String, AppError> {
    let url = args
        .store
        .clone()
        .ok_or_else(|| AppError::Other("--store URL is required (or set SLUICE_STORE)".into()))?;
    app::runtime(Some(1))?.block_on(async move {
        let store = Store::connect(&url).await?;
        let set = match &args.dir {
            Some(dir) => MigrationSet::from_dir(dir)?,
            None => MigrationSet::builtin(store.engine()),
        };
        let out = execute(&store, &set, &args.action).await;
        store.close().await;
        out
    })
}

async fn execute(store: &Store, set: &MigrationSet, action: &MigrateAction) -> Result<String, AppError> {
    let m = Migrator::new(store, set);
    let mut out = String::new();
    match *action {
        MigrateAction::Status => {
            let _ = writeln!(
                out,
                "{:<8} {:<10} {:<26} {:>9}  DESCRIPTION",
                "VERSION", "STATE", "APPLIED AT", "TOOK"
            );
            for line in m.status().await? {
                let (state, at, took) = match &line.state {
                    StepState::Applied { at, duration_ms } => ("applied", at.as_str(), format!("{duration_ms} ms")),
                    StepState::Pending => ("pending", "-", "-".to_owned()),
                    StepState::Modified { at } => ("MODIFIED", at.as_str(), "-".to_owned()),
                    StepState::Unknown { at } => ("UNKNOWN", at.as_str(), "-".to_owned()),
                };
                let _ = writeln!(
                    out,
                    "{:<8} {:<10} {:<26} {:>9}  {}",
                    line.version, state, at, took, line.description
                );
            }
        }
        MigrateAction::Up { to, dry_run: true } => {
            plan(&mut out, "apply", &m.plan_up(to).await?, |s| &s.up);
        }
        MigrateAction::Up { to, dry_run: false } => {
            let done = m.up(to).await?;
            let _ = writeln!(out, "applied {} migration(s): {done:?}", done.len());
        }
        MigrateAction::Down { to, dry_run } => {
            let to = match to {
                Some(v) => v,
                None => previous_version(&m).await?,
            };
            if dry_run {
                plan(&mut out, "reverse", &m.plan_down(to).await?, |s| &s.down);
            } else {
                let done = m.down(to).await?;
                let _ = writeln!(out, "reversed {} migration(s): {done:?}", done.len());
            }
        }
    }
    Ok(out)
}

/// The applied version before the latest applied one.
async fn previous_version(m: &Migrator<'_>) -> Result<i64, AppError> {
    let applied = m.applied().await?;
    Ok(applied.iter().rev().nth(1).map_or(0, |a| a.version))
}

fn plan(out: &mut String, verb: &str, steps: &[&Migration], sql: impl Fn(&Migration) -> &str) {
    if steps.is_empty() {
        let _ = writeln!(out, "-- dry run: nothing to {verb}");
        return;
    }
    for step in steps {
        let _ = writeln!(
            out,
            "-- would {verb} {:04} {}\n{}",
            step.version,
            step.description,
            sql(step).trim_end()
        );
    }
    let _ = writeln!(out, "-- dry run: nothing was changed");
}
