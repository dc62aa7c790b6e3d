//! gRPC through sluice with a real gRPC stack nobody here wrote: Python
//! grpcio client and server (grpc-core), `tests/e2e/grpc_peer.py`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common::{self, tool_present};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/grpc_peer.py");

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
        let mut child = Command::new("python3")
            .args([PEER, "server", name])
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

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the grpcio client against `target` and returns what it printed.
pub async fn call(target: SocketAddr, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(PEER).arg("client").arg(target.to_string()).args(args);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_through_and_are_balanced_per_call() {
    if !grpcio_present() {
        return;
    }
    let (blue, green) = (GrpcServer::start("blue"), GrpcServer::start("green"));
    let toml = format!(
        "{}{}",
        grpc_pool("blue", 50, blue.addr),
        grpc_pool("green", 50, green.addr)
    );
    let proxy = common::start_proxy(&toml).await;

    // 1,000 unary calls on one client channel: each call routed on its own.
    let out = call(proxy.addr, &["unary", "1000"]).await;
    assert_eq!(out["failed"], serde_json::json!({}), "{out}");
    let blue_calls = out["answers"]["blue"].as_u64().unwrap_or(0);
    let green_calls = out["answers"]["green"].as_u64().unwrap_or(0);
    assert_eq!(blue_calls + green_calls, 1000, "{out}");
    assert!((400..=600).contains(&blue_calls), "not 50/50 per call: {out}");

    // Status codes and details reach the client as the server sent them
    // (in trailers, or Trailers-Only).
    for code in ["NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE", "INTERNAL"] {
        let out = call(proxy.addr, &["fail", code]).await;
        assert_eq!(out["code"], code, "{out}");
        assert_eq!(out["details"], format!("asked to fail with {code}"), "{out}");
    }
    // A 4 MiB message each way, and a server stream of 1,000 messages.
    let size = 4 * 1024 * 1024 - 64;
    let out = call(proxy.addr, &["big", &size.to_string()]).await;
    let extra = out["length"].as_u64().unwrap_or(0).saturating_sub(size);
    assert!(extra == "blue:".len() as u64 || extra == "green:".len() as u64, "{out}");
    let out = call(proxy.addr, &["stream", "1000"]).await;
    assert_eq!(out["messages"], 1000, "{out}");
}
