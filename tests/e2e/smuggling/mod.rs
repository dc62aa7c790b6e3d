//! Request smuggling, differential: a proxy in front of a strict recording
//! backend (`backend`) gets each mutation of `cases` followed, on the same
//! connection, by a normal request. A case is safe when the proxy forwards
//! exactly the requests a strict RFC 9112 reading means, well framed, in
//! order, with one response each, and after the last of them (if the
//! reading ends there) refuses with 400/411/413/414/417/431/501/505 or
//! closes. sluice must be safe in every case; nginx and HAProxy run the
//! same suite as a calibration (their control cases must pass; their
//! scores are printed and written in docs/security.md).

mod backend;
mod cases;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use backend::{Record, Req, Strict};
use cases::Case;

use crate::common::running::Running;
use crate::common::*;

const REFUSALS: [u16; 8] = [400, 411, 413, 414, 417, 431, 501, 505];

/// Statuses of the responses in `raw` (interim 1xx skipped), reading the
/// `i`th final response's body unless `head_only(i)`.
fn statuses(mut raw: &[u8], head_only: impl Fn(usize) -> bool) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("a response head cut short: {:?}", String::from_utf8_lossy(raw)))?;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        raw = &raw[end + 4..];
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        if (100..200).contains(&status) {
            continue;
        }
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        if !head_only(out.len()) && status != 204 && status != 304 {
            if let Some(n) = length {
                raw = raw.get(n..).ok_or("a response body cut short")?;
            } else if chunked {
                let end = raw
                    .windows(5)
                    .position(|w| w == b"0\r\n\r\n")
                    .ok_or("a chunked response cut short")?;
                raw = &raw[end + 5..];
            } else {
                raw = &[];
            }
        }
        out.push(status);
    }
    Ok(out)
}

/// Sends one case through `proxy`; why it is unsafe, if it is.
async fn check(proxy: SocketAddr, backend: &Strict, case: &Case) -> Result<(), String> {
    let stale = backend.take();
    if !stale.is_empty() {
        return Err(format!("requests from the previous case arrived late: {stale:?}"));
    }
    let mut conn = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    // A proxy may close before reading everything: that is its answer.
    let _ = conn.write_all(&case.bytes).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 16384];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let closed = read.is_ok();
    let seen = backend.take();
    let mut forwarded: Vec<Req> = Vec::new();
    for record in seen {
        match record {
            Record::Request(r) => forwarded.push(r),
            Record::Malformed(why) => return Err(format!("the backend got bytes it cannot read strictly: {why}")),
        }
    }
    let k = forwarded.len();
    if k > case.intended.len() || forwarded[..] != case.intended[..k] {
        return Err(format!("forwarded {forwarded:?}, meant {:?}", case.intended));
    }
    let methods: Vec<&str> = forwarded.iter().map(|r| r.method.as_str()).collect();
    let statuses = statuses(&raw, |i| methods.get(i) == Some(&"HEAD"))?;
    if statuses.len() < k || statuses[..k].iter().any(|&s| s != 200) {
        return Err(format!("{k} requests forwarded, the client saw {statuses:?}"));
    }
    let rest = &statuses[k..];
    // Every meant request was forwarded, the follow-up (which closes) last.
    let complete = k == case.intended.len() && case.intended.last().is_some_and(|r| r.target == "/after");
    if !complete {
        if rest.len() > 1 || rest.first().is_some_and(|s| !REFUSALS.contains(s)) {
            return Err(format!("after {k} of the meant requests the client saw {rest:?}"));
        }
        if !closed {
            return Err("the connection stayed open after the refusal".into());
        }
    } else if !rest.is_empty() {
        return Err(format!("extra responses {rest:?}"));
    }
    Ok(())
}

/// Runs every case; the failed ones with why. Prints each line.
async fn run_all(proxy: SocketAddr, backend: &Strict, name: &str) -> Vec<(&'static str, bool, String)> {
    let cases = cases::all();
    let mut failed = Vec::new();
    for case in &cases {
        match check(proxy, backend, case).await {
            Ok(()) => println!("{name}: safe    {}", case.name),
            Err(why) => {
                println!("{name}: UNSAFE  {}: {why}", case.name);
                failed.push((case.name, case.control, why));
            }
        }
    }
    println!("{name}: {} of {} cases safe", cases.len() - failed.len(), cases.len());
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_is_safe_in_every_case() {
    sluice_with_engine("sluice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_engine_is_safe_in_every_case() {
    sluice_with_engine("hyper").await;
}

async fn sluice_with_engine(engine: &str) {
    assert!(cases::all().len() >= 100);
    let (addr, backend) = Strict::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nengine = \"{engine}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/sluice.db\"\n{}",
        dir.path().display(),
        pool_toml("blue", 100, &[addr])
    );
    let sluice = Running::start(dir.path(), &config, &[]);
    let failed = run_all(sluice.addr, &backend, engine).await;
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A child process killed on drop.
struct Reference(Child);

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The calibration's verdict: the suite's well-formed cases pass.
fn assert_controls_pass(name: &str, failed: &[(&str, bool, String)]) {
    let controls: Vec<_> = failed.iter().filter(|(_, control, _)| *control).collect();
    assert!(controls.is_empty(), "{name} failed well-formed cases: {controls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_calibrates_the_suite() {
    if !tool_present(runs("nginx", "-v"), "nginx (apt install nginx)") {
        return;
    }
    let (addr, backend) = Strict::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let user = if crate::pg::is_root() { "user root;\n" } else { "" };
    let conf = format!(
        "{user}worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
         upstream b {{ server {addr}; keepalive 4; }}\n\
         server {{\n  listen 127.0.0.1:{port};\n  location / {{\n   proxy_pass http://b;\n\
           proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n   proxy_set_header Host $http_host;\n  }}\n }}\n}}\n"
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .arg("-p")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _nginx = Reference(child);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(proxy, "nginx").await;
    let failed = run_all(proxy, &backend, "nginx").await;
    assert_controls_pass("nginx", &failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_calibrates_the_suite() {
    if !tool_present(runs("haproxy", "-v"), "haproxy (apt install haproxy)") {
        return;
    }
    let (addr, backend) = Strict::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "global\n  maxconn 200\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 5s\n\
         timeout server 5s\n  option http-keep-alive\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\n\
         backend b\n  server s1 {addr}\n"
    );
    std::fs::write(dir.path().join("haproxy.cfg"), conf).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(dir.path().join("haproxy.cfg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _haproxy = Reference(child);
    let proxy: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(proxy, "haproxy").await;
    let failed = run_all(proxy, &backend, "haproxy").await;
    assert_controls_pass("haproxy", &failed);
}

/// The backend itself reads what a strict server reads.
#[tokio::test]
async fn the_strict_backend_reads_framed_requests_and_refuses_the_rest() {
    let (addr, backend) = Strict::start().await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    assert_eq!(statuses(&raw, |_| false).unwrap(), [200, 200]);
    let records = backend.take();
    assert_eq!(
        records,
        [
            Record::Request(cases::req("POST", "/a", "hello")),
            Record::Request(cases::req("GET", "/b", ""))
        ]
    );
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /a HTTP/1.1\nHost: x\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.unwrap();
    assert_eq!(statuses(&raw, |_| false).unwrap(), [400]);
    assert!(matches!(&backend.take()[..], [Record::Malformed(_)]));
}
