//! The real `sluice` binary as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::pool_toml;

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A running `sluice run` process and the address it bound.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The TLS listener, when the config has one.
    pub tls: Option<SocketAddr>,
    pub config: PathBuf,
    logs: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `sluice run` on `config_text`, written to `dir/sluice.toml`.
    pub fn start(dir: &Path, config_text: &str, extra_args: &[&str]) -> Running {
        Self::start_logging_at(dir, config_text, extra_args, "info")
    }

    /// [`Running::start`] with `RUST_LOG=level`.
    pub fn start_logging_at(dir: &Path, config_text: &str, extra_args: &[&str], level: &str) -> Running {
        Self::start_with_env(dir, config_text, extra_args, level, &[])
    }

    /// [`Running::start_logging_at`] with extra environment variables.
    pub fn start_with_env(
        dir: &Path,
        config_text: &str,
        extra_args: &[&str],
        level: &str,
        env: &[(&str, &str)],
    ) -> Running {
        let config = dir.join("sluice.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut args = vec!["run", "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra_args);
        let (child, rx) = spawn_with_env(&args, level, env);
        let listen_of = |line: &str| -> SocketAddr {
            let rest = line.split("listen=").nth(1).unwrap_or_default();
            let text: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            let text = text.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':');
            text.parse().unwrap_or_else(|e| panic!("{e}: {line}"))
        };
        let (mut addr, mut admin, mut tls) = (None, None, None);
        while addr.is_none() || admin.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("sluice did not report its listen addresses");
            if line.contains("sluice proxy listening") {
                addr = Some(listen_of(&line));
            } else if line.contains("sluice admin API listening") {
                admin = Some(listen_of(&line));
            } else if line.contains("sluice TLS listening") {
                tls = Some(listen_of(&line));
            }
        }
        Running {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            tls,
            config,
            logs: rx,
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, deadline: Duration) -> String {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => eprintln!("[sluice] {line}"),
                Err(_) => panic!("no log line with {needle:?} within {deadline:?}"),
            }
        }
    }

    /// Every log line not yet read, until the process closes its stderr
    /// (it exited) or `deadline` passes.
    pub fn logs_until_exit(&self, deadline: Duration) -> Vec<String> {
        let end = tokio::time::Instant::now() + deadline;
        let mut lines = Vec::new();
        while let Some(left) = end.checked_duration_since(tokio::time::Instant::now()) {
            match self.logs.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => break,
            }
        }
        lines
    }

    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    pub fn wait_exit(mut self, deadline: Duration) -> Option<i32> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if tokio::time::Instant::now() > end {
                let _ = self.child.kill();
                panic!("sluice did not exit within {deadline:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// A config with its SQLite store in `dir`.
pub fn config_for(dir: &Path, blue: SocketAddr, green: SocketAddr, blue_weight: u32) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"20s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}\"\n{}{}",
        dir.join("sluice.db").display(),
        pool_toml("blue", blue_weight, &[blue]),
        pool_toml("green", 100 - blue_weight, &[green])
    )
}

/// A config with one pool, `blue`, on `backend`; the store in `dir`.
pub fn one_pool_config(dir: &Path, backend: SocketAddr) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/sluice.db\"\n{}",
        dir.display(),
        pool_toml("blue", 100, &[backend])
    )
}

/// Starts `sluice ARGS` with info logs, returning the child and its log
/// lines as they come.
pub fn spawn_logging(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    spawn_logging_at(args, "info")
}

/// [`spawn_logging`] with `RUST_LOG=level`.
pub fn spawn_logging_at(args: &[&str], level: &str) -> (Child, mpsc::Receiver<String>) {
    spawn_with_env(args, level, &[])
}

/// [`spawn_logging_at`] with extra environment variables.
pub fn spawn_with_env(args: &[&str], level: &str, env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(SLUICE)
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}
