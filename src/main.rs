//! The `sluice` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::logging::{self, LogFormat};
use sluice_config::Config;

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "A production ingress that owns your deployments")]
struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Start from the config's pools and weights instead of the stored state.
        #[arg(long)]
        reset_state: bool,
        /// Take the listening sockets over from the running sluice, then
        /// let it drain and exit (hot binary upgrade).
        #[arg(long)]
        upgrade: bool,
        /// The Unix socket used for upgrades (default: in the temp dir,
        /// named after the proxy port).
        #[arg(long)]
        upgrade_socket: Option<PathBuf>,
    },
    /// Validate a config file; exit non-zero with every problem found.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
        /// Also resolve every name among the backends (DNS discovery): one
        /// that resolves to nothing is an error.
        #[arg(long)]
        resolve: bool,
    },
    /// Drive a running sluice through its admin API.
    Ctl(sluice::ctl::CtlArgs),
    /// Manage the store's schema (or a directory of migrations with --dir).
    Migrate(sluice::migrate_cmd::MigrateArgs),
    /// The proxy with two built-in demo backends (blue v1, green v2).
    Demo {
        /// Proxy listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin API listen address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Operator token for the admin API (default: a generated one, printed).
        #[arg(long)]
        token: Option<String>,
    },
    /// One demo backend on its own (for compose files and experiments).
    DemoBackend {
        /// Pool name it reports (blue, green, …).
        #[arg(long)]
        name: String,
        /// Version it reports.
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Exit 0 when a URL answers 200 (container health checks).
    Health {
        #[arg(long, default_value = "http://127.0.0.1:9901/health/live")]
        url: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Run {
            config,
            reset_state,
            upgrade,
            upgrade_socket,
        } => sluice::app::run(
            &config,
            sluice::app::RunOptions {
                config_path: None,
                reset_state,
                upgrade,
                upgrade_socket,
            },
        ),
        Command::Ctl(args) => sluice::ctl::run(args).map(|out| print!("{out}")),
        Command::Migrate(args) => sluice::migrate_cmd::run(args).map(|out| print!("{out}")),
        Command::CheckConfig { file, resolve } => return check_config(&file, resolve),
        Command::Demo { listen, admin, token } => sluice::demo::run(sluice::demo::DemoOptions { listen, admin, token }),
        Command::DemoBackend { name, version, listen } => sluice::demo::run_backend(&name, &version, listen),
        Command::Health { url } => sluice::demo::check_health(&url),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path, resolve: bool) -> ExitCode {
    match Config::load_with_env(file, &Config::process_env()) {
        Ok((config, _)) if resolve && !sluice::discovery_check::names_resolve(&config) => ExitCode::FAILURE,
        Ok((config, sources)) => {
            use std::io::Write;
            // A closed pipe (`| head`) ends the listing quietly.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}: ok", file.display());
            for (key, value) in config.effective() {
                // Pool health settings inherit [health]; say so when not set.
                let source = match sources.of(&key) {
                    sluice_config::Source::Default if key.starts_with("pools.") && key.contains(".health.") => {
                        let global = key.split_once(".health.").map(|(_, k)| format!("health.{k}"));
                        global.map_or("default".to_owned(), |g| format!("{} (via {g})", sources.of(&g)))
                    }
                    other => other.to_string(),
                };
                if writeln!(out, "  {key:<40} = {value:<32} [{source}]").is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}
