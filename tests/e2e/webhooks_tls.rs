//! Webhooks over HTTPS (Slack and most alerting endpoints accept nothing
//! else): an alert webhook and a rollout hook on an HTTPS receiver signed
//! by a CA that sluice trusts through `SSL_CERT_FILE` are both delivered;
//! the same hook on a sluice that does not trust that CA fails with a TLS
//! error in the hook's record, never falling back to plain text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::common::running::Running;
use crate::common::*;
use crate::rollout_e2e::{call, config};

/// An HTTPS receiver for `localhost` under a fresh CA: its address, the
/// CA's PEM, and the (path, body) of every request it answered.
async fn https_receiver() -> (SocketAddr, String, Arc<Mutex<Vec<(String, Value)>>>) {
    let ca = test_ca();
    let server = leaf(&ca, &["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.cert], server.key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, record) = (acceptor.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        record.lock().unwrap().push((path, body));
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, ca.pem(), seen)
}

/// A sluice in front of blue and green (`alerts` appended to its config,
/// `env` in its environment) that ran a dry-run rollout whose pre_rollout
/// hook posts to `hook_url`; the rollout's state once it finished, and the
/// still running sluice.
async fn dry_run_with_hook(
    hook_url: &str,
    alerts: &str,
    env: &[(&str, &str)],
    dir: &std::path::Path,
) -> (Value, Running) {
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let green = spawn_backend("green", "v2", any_addr()).await.unwrap();
    let text = format!("{}{alerts}", config(dir, blue.addr, green.addr));
    let sluice = Running::start_with_env(dir, &text, &[], "info", env);
    let c = client();
    let rollout = json!({
        "from": "blue", "to": "green", "dry_run": true, "health_gate": "10s",
        "hooks": {"pre_rollout": [{"name": "notify", "webhook": hook_url}]},
    });
    let rollouts = format!("http://{}/api/v1/rollouts", sluice.admin);
    let (status, body) = call(&c, "POST", rollouts.clone(), &rollout.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, current) = call(&c, "GET", format!("{rollouts}/current"), "").await;
        if current["state"] == "completed" || current["state"] == "aborted" {
            return (current, sluice);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dry run never finished: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_and_hooks_reach_an_https_webhook_the_system_trusts() {
    let (receiver, ca_pem, seen) = https_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let alerts = format!(
        "\n[[alerts.webhooks]]\nurl = \"https://localhost:{}/alerts\"\nformat = \"slack\"\n",
        receiver.port()
    );
    let hook_url = format!("https://localhost:{}/hook", receiver.port());
    let env = [("SSL_CERT_FILE", ca_file.to_str().unwrap())];
    let (done, _sluice) = dry_run_with_hook(&hook_url, &alerts, &env, dir.path()).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["hooks"][0]["ok"], true, "{done}");
    assert_eq!(done["hooks"][0]["code"], 200, "{done}");
    wait_until(Duration::from_secs(10), "the alert over HTTPS", || {
        seen.lock().unwrap().iter().any(|(path, _)| path == "/alerts")
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let hook = seen
        .iter()
        .find(|(path, _)| path == "/hook")
        .expect("the hook was not called");
    assert_eq!(hook.1["hook"], "pre_rollout", "{seen:?}");
    let alert = seen.iter().find(|(path, _)| path == "/alerts").unwrap();
    assert!(alert.1["text"].as_str().unwrap().contains("rollout"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_with_an_untrusted_certificate_fails_the_hook() {
    let (receiver, _ca_pem, seen) = https_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let hook_url = format!("https://localhost:{}/hook", receiver.port());
    let (done, _sluice) = dry_run_with_hook(&hook_url, "", &[], dir.path()).await;
    assert_eq!(done["state"], "aborted", "{done}");
    let hook = &done["hooks"][0];
    assert_eq!(hook["ok"], false, "{done}");
    // Refused by the handshake (or, on a machine with no trust store at
    // all, before it): either way nothing is sent in the clear.
    let error = hook.to_string();
    assert!(
        error.contains("TLS handshake failed") || error.contains("no trusted root certificates"),
        "{done}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a request reached the receiver without TLS trust"
    );
}
