//! DNS discovery against a real DNS server (Debian's dnsmasq, started on a
//! loopback port with a hosts file the test rewrites): a name scaled from 2
//! to 5 to 1 addresses under load with no failed request, new addresses
//! served only after a passing probe, removed ones drained; the DNS server
//! killed: the last good set keeps serving, the alert fires, recovery
//! follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice::demo::DemoBackend;

use crate::common::load::{Tally, start_load};
use crate::common::running::Running;
use crate::common::*;

const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A dnsmasq answering `*.test` names from a hosts file, TTL 1 s.
pub(crate) struct Dns {
    child: Child,
    pub(crate) port: u16,
    hosts: PathBuf,
}

impl Dns {
    pub(crate) fn start(dir: &Path, port: u16) -> Dns {
        Self::start_with(dir, port, &[])
    }

    /// [`Dns::start`] with more dnsmasq arguments (e.g. `--srv-host=`).
    fn start_with(dir: &Path, port: u16, extra: &[String]) -> Dns {
        let hosts = dir.join("hosts");
        if !hosts.exists() {
            std::fs::write(&hosts, "").unwrap();
        }
        // dnsmasq started as root reads the file as `nobody`.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&hosts, std::fs::Permissions::from_mode(0o644)).unwrap();
        let child = Command::new(DNSMASQ)
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local-ttl=1",
                "--pid-file=",
                &format!("--port={port}"),
                &format!("--addn-hosts={}", hosts.display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian's dnsmasq-base) is installed by scripts/test");
        // Ready once it accepts on its TCP port (a SIGHUP before its
        // handler is installed would end it).
        let mut tries = 0;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            tries += 1;
            assert!(tries < 250, "dnsmasq did not start on port {port} within 5 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Dns { child, port, hosts }
    }

    /// `name` now resolves to `ips` (dnsmasq rereads on SIGHUP).
    pub(crate) fn set(&self, name: &str, ips: &[&str]) {
        self.set_all(&ips.iter().map(|ip| (*ip, name)).collect::<Vec<_>>());
    }

    /// The hosts file is now these `(ip, name)` lines.
    fn set_all(&self, lines: &[(&str, &str)]) {
        let text: String = lines.iter().map(|(ip, name)| format!("{ip} {name}\n")).collect();
        std::fs::write(&self.hosts, text).unwrap();
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not signal dnsmasq");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both).
pub(crate) fn free_udp_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A demo backend on 127.0.0.`last`:`port`.
async fn backend_on(last: u8, port: u16) -> DemoBackend {
    spawn_backend("green", "v2", SocketAddr::from(([127, 0, 0, last], port)))
        .await
        .unwrap()
}

/// Demo backends on 127.0.0.`last` for each of `lasts`, all on one port
/// (the first one's, free when it started): what a name resolves to.
async fn backends_on(lasts: &[u8]) -> (Vec<DemoBackend>, u16) {
    let mut backends = Vec::with_capacity(lasts.len());
    let mut port = 0;
    for &last in lasts {
        let backend = backend_on(last, port).await;
        port = backend.addr.port();
        backends.push(backend);
    }
    (backends, port)
}

fn config(dir: &Path, dns: u16, name: &str, blue: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
url = "sqlite://{d}/sluice.db"
[health]
interval = "200ms"
timeout = "200ms"
healthy_threshold = 1
unhealthy_threshold = 1
[discovery]
nameservers = ["127.0.0.1:{dns}"]
min_interval = "1s"
max_interval = "2s"
stale_alert_after = "3s"
[pools.blue]
version = "v1"
weight = 0
backends = ["{blue}"]
[pools.green]
version = "v2"
weight = 100
backends = ["{name}"]
"#,
        d = dir.display()
    )
}

/// The backends (`addr`) green's API view lists, and which of them are
/// routable.
async fn green_backends(admin: SocketAddr) -> (BTreeSet<String>, BTreeSet<String>) {
    let (_, _, body) = get(&client(), &format!("http://{admin}/api/v1/pools"), &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pools = v["pools"].as_array().cloned().unwrap_or_default();
    let green = pools.iter().find(|p| p["name"] == "green").cloned().unwrap_or_default();
    let mut all = BTreeSet::new();
    let mut up = BTreeSet::new();
    for b in green["backends"].as_array().cloned().unwrap_or_default() {
        let addr = b["addr"].as_str().unwrap_or_default().to_owned();
        assert_eq!(b["discovered_as"], "green.test", "{b}");
        if b["healthy"] == true {
            up.insert(addr.clone());
        }
        all.insert(addr);
    }
    (all, up)
}

fn addrs(port: u16, lasts: &[u8]) -> BTreeSet<String> {
    lasts.iter().map(|l| format!("127.0.0.{l}:{port}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_scaled_from_two_to_five_to_one_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path(), free_udp_port());
    // One port on every loopback address.
    let (mut backends, port) = backends_on(&[2, 3]).await;
    dns.set("green.test", &["127.0.0.2", "127.0.0.3"]);
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let name = format!("green.test:{port}");
    let sluice = Running::start(dir.path(), &config(dir.path(), dns.port, &name, blue.addr), &[]);
    let admin = sluice.admin;
    // Resolved before the first table: both serve from the start.
    assert_eq!(green_backends(admin).await.0, addrs(port, &[2, 3]));

    let tally = Arc::new(Tally::default());
    let (busy, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let load = start_load(&format!("http://{}/", sluice.addr), 4, 0, &tally, &busy, &stop);

    // 2 → 5, one of the new addresses not listening yet: it joins the
    // table but never gets a request until a probe passes.
    backends.push(backend_on(4, port).await);
    backends.push(backend_on(5, port).await);
    dns.set(
        "green.test",
        &["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"],
    );
    wait_until(Duration::from_secs(10), "five addresses in the table", || {
        futures_now(green_backends(admin)).0 == addrs(port, &[2, 3, 4, 5, 6])
    })
    .await;
    wait_until(Duration::from_secs(10), "the listening new ones to serve", || {
        backends[2].knobs.received() > 0 && backends[3].knobs.received() > 0
    })
    .await;
    let (_, up) = green_backends(admin).await;
    assert!(
        !up.contains(&format!("127.0.0.6:{port}")),
        "a closed address passed a probe: {up:?}"
    );
    let failed_before = tally.failed();
    backends.push(backend_on(6, port).await);
    wait_until(
        Duration::from_secs(10),
        "the late one to pass its probe and serve",
        || backends[4].knobs.received() > 0,
    )
    .await;

    // 5 → 1: the four leaving are slow, so requests are in flight on them
    // when they go; each still completes with 200.
    for b in &backends[1..] {
        b.knobs.set_latency(Duration::from_millis(300));
    }
    dns.set("green.test", &["127.0.0.2"]);
    wait_until(Duration::from_secs(10), "one address left", || {
        futures_now(green_backends(admin)).0 == addrs(port, &[2])
    })
    .await;
    let received: Vec<u64> = backends.iter().map(|b| b.knobs.received()).collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (i, b) in backends.iter().enumerate().skip(1) {
        assert_eq!(
            b.knobs.received(),
            received[i],
            "127.0.0.{} got requests after it left",
            i + 2
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    eprintln!(
        "discovery under load: {} answered, {} failed (before the late backend: {failed_before})",
        tally.ok(),
        tally.failed()
    );
    assert_eq!(tally.failed(), 0, "requests failed while the name scaled");
    assert!(tally.ok() > 100);

    // Audited as discovery, with the addresses.
    let (_, _, audit) = get(&client(), &format!("http://{admin}/api/v1/audit?actor=discovery"), &[]).await;
    assert!(
        audit.contains("discovery.change") && audit.contains("names/green.test"),
        "{audit}"
    );
    let (_, _, metrics) = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    assert!(
        metrics.contains(&format!(
            "sluice_discovery_backends{{pool=\"green\",name=\"{name}\"}} 1"
        )),
        "{metrics}"
    );
}

/// Polls an async check from a sync closure (the check is quick: a local
/// admin API call).
fn futures_now<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_dns_server_gone_the_last_good_set_serves_and_recovery_follows() {
    let dir = tempfile::tempdir().unwrap();
    let dns_port = free_udp_port();
    let mut dns = Dns::start(dir.path(), dns_port);
    let (backends, port) = backends_on(&[7, 8]).await;
    let [first, second] = &backends[..] else { unreachable!() };
    dns.set("green.test", &["127.0.0.7", "127.0.0.8"]);
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let name = format!("green.test:{port}");
    let sluice = Running::start(dir.path(), &config(dir.path(), dns.port, &name, blue.addr), &[]);
    let admin = sluice.admin;
    assert_eq!(green_backends(admin).await.0, addrs(port, &[7, 8]));

    dns.kill();
    let tally = Arc::new(Tally::default());
    let (busy, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let load = start_load(&format!("http://{}/", sluice.addr), 2, 0, &tally, &busy, &stop);
    // Longer than stale_alert_after (3 s): the alert fires, nothing changes.
    sluice.wait_log("DNS discovery failing", Duration::from_secs(15));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        green_backends(admin).await.0,
        addrs(port, &[7, 8]),
        "the last good set left"
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(tally.failed(), 0, "requests failed while DNS was down");
    assert!(first.knobs.received() > 0 && second.knobs.received() > 0);
    let (_, _, metrics) = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    assert!(metrics.contains("result=\"error\""), "{metrics}");

    // Back, with one address gone: followed within max_interval (2 s) of
    // the next resolution.
    let dns = Dns::start(dir.path(), dns_port);
    dns.set("green.test", &["127.0.0.8"]);
    wait_until(Duration::from_secs(10), "recovery to pick up the change", || {
        futures_now(green_backends(admin)).0 == addrs(port, &[8])
    })
    .await;
}

/// An SRV name: the lowest priority's targets serve in proportion to their
/// weights (75/25 here, within ±3 points over 10,000 requests); the higher
/// priority's target gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_and_priorities_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let (backends, port) = backends_on(&[9, 10, 11]).await;
    let [a, b, spare] = &backends[..] else { unreachable!() };
    let srv = |target: &str, priority: u16, weight: u16| {
        format!("--srv-host=_http._tcp.green.test,{target},{port},{priority},{weight}")
    };
    let dns = Dns::start_with(
        dir.path(),
        free_udp_port(),
        &[srv("a.test", 0, 75), srv("b.test", 0, 25), srv("spare.test", 1, 100)],
    );
    dns.set_all(&[
        ("127.0.0.9", "a.test"),
        ("127.0.0.10", "b.test"),
        ("127.0.0.11", "spare.test"),
    ]);
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let sluice = Running::start(
        dir.path(),
        &config(dir.path(), dns.port, "_http._tcp.green.test", blue.addr),
        &[],
    );
    let c = client();
    let url = format!("http://{}/", sluice.addr);
    let n = 10_000;
    for _ in 0..n {
        let (status, _, _) = get(&c, &url, &[]).await;
        assert_eq!(status, 200);
    }
    let (to_a, to_b) = (a.knobs.received() as f64, b.knobs.received() as f64);
    let share = to_a * 100.0 / (to_a + to_b);
    eprintln!("SRV 75/25 over {n} requests: {to_a} / {to_b} ({share:.1}% to the weight-75 target)");
    assert!((share - 75.0).abs() <= 3.0, "{share:.1}% to the weight-75 target");
    assert_eq!(to_a + to_b, n as f64);
    assert_eq!(spare.knobs.received(), 0, "the higher priority's target served");
}

/// `check-config --resolve`: every name resolved once; one that resolves
/// to nothing fails the check (and only warns for `run`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_resolve_fails_on_a_name_that_resolves_to_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path(), free_udp_port());
    dns.set("green.test", &["127.0.0.12"]);
    let file = dir.path().join("sluice.toml");
    let check = |backend: &str| {
        std::fs::write(
            &file,
            config(dir.path(), dns.port, backend, "127.0.0.1:9".parse().unwrap()),
        )
        .unwrap();
        let out = Command::new(crate::common::running::SLUICE)
            .args(["check-config", "--resolve", file.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = check("green.test:8080");
    assert!(ok, "{err}");
    assert!(out.contains("green.test:8080 resolves to 127.0.0.12:8080"), "{out}");
    let (ok, _, err) = check("missing.test:8080");
    assert!(!ok);
    assert!(err.contains("missing.test:8080: resolves to nothing"), "{err}");
}

/// A name returning more addresses than `max_backends_per_name`: only that
/// many become backends, the rest are cut (and alerted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_too_many_addresses_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(dir.path(), free_udp_port());
    let (_backends, port) = backends_on(&[13, 14, 15]).await;
    dns.set("green.test", &["127.0.0.13", "127.0.0.14"]);
    let blue = spawn_backend("blue", "v1", any_addr()).await.unwrap();
    let name = format!("green.test:{port}");
    let text = config(dir.path(), dns.port, &name, blue.addr).replace(
        "stale_alert_after = \"3s\"",
        "stale_alert_after = \"3s\"\nmax_backends_per_name = 2",
    );
    let sluice = Running::start(dir.path(), &text, &[]);
    assert_eq!(green_backends(sluice.admin).await.0.len(), 2);
    // The name grows past the cap: still two backends, and an alert.
    dns.set("green.test", &["127.0.0.13", "127.0.0.14", "127.0.0.15"]);
    let line = sluice.wait_log("discovery-capped", Duration::from_secs(10));
    assert!(line.contains("green.test"), "{line}");
    assert_eq!(green_backends(sluice.admin).await.0.len(), 2);
}
