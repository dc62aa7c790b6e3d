//! gRPC through sluice with a real gRPC stack nobody here wrote: Python
//! grpcio client and server (grpc-core), `tests/e2e/grpc_peer.py`. This
//! module holds the peers; `forwarding` (calls, streams, deadlines, TLS,
//! backend connections), `judgement` (gRPC outcomes in the windows, the
//! guard and rollouts) and `health` (gRPC health probes) the tests.

mod forwarding;
mod health;
mod judgement;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::{self, tool_present};

pub const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/grpc_peer.py");

/// Whether Python's grpcio and grpcio-health-checking are installed.
pub fn grpcio_present() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import grpc, grpc_health.v1"])
        .output()
        .is_ok_and(|o| o.status.success());
    tool_present(ok, "grpcio (pip install grpcio grpcio-health-checking)")
}

/// A grpcio server on a loopback port, stopped when dropped.
pub struct GrpcServer {
    pub addr: SocketAddr,
    child: Child,
}

impl GrpcServer {
    pub fn start(name: &str) -> Self {
        Self::start_with(&[name])
    }

    /// `args`: the name, then the most concurrent streams it allows.
    pub fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg(PEER)
            .arg("server")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("grpc server said {line:?}"));
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl GrpcServer {
    /// Starts the server's graceful stop: GOAWAY, then the calls in
    /// flight finish (it stops listening at once).
    pub fn stop_gracefully(&mut self) {
        drop(self.child.stdin.take());
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the grpcio client against `target` and returns what it printed.
pub async fn call(target: SocketAddr, args: &[&str]) -> Value {
    call_with(target, None, args).await
}

/// [`call`], over TLS when `ca` names the CA of the target's certificate.
pub async fn call_with(target: SocketAddr, ca: Option<&std::path::Path>, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(PEER).arg("client").arg(target.to_string()).args(args);
    if let Some(ca) = ca {
        cmd.env("GRPC_PEER_CA", ca);
    }
    let out = cmd.output().await.unwrap();
    assert!(
        out.status.success(),
        "grpc client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `[pools.NAME]` for gRPC backends (HTTP/2 by prior knowledge).
pub fn grpc_pool(name: &str, weight: u32, backend: SocketAddr) -> String {
    format!("{}protocol = \"http2\"\n", common::pool_toml(name, weight, &[backend]))
}

/// grpcio servers `blue` and `green` behind an in-process proxy, blue at
/// `blue_weight` percent.
pub async fn blue_green(blue_weight: u32) -> (GrpcServer, GrpcServer, common::TestProxy) {
    let (blue, green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let toml = format!(
        "{}{}",
        grpc_pool("blue", blue_weight, blue.addr),
        grpc_pool("green", 100 - blue_weight, green.addr)
    );
    let proxy = common::start_proxy(&toml).await;
    (blue, green, proxy)
}
