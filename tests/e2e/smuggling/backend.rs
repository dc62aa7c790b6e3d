//! The recording backend of the smuggling suite: it reads requests as a
//! strict RFC 9112 server does (CRLF only, one framing, digits-only
//! lengths, strict chunks), records each one whole, and answers each with
//! `200` and a length, keeping the connection open unless asked to close.
//! Anything it cannot read strictly is recorded as malformed: a proxy in
//! front must never send it such bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub host: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Request(Req),
    Malformed(String),
}

/// A request whose bytes stopped before its end: the proxy gave up on it
/// (its client failed), which is no request at all.
const CUT_SHORT: &str = "cut short";

#[derive(Clone, Default)]
pub struct Strict {
    pub records: Arc<Mutex<Vec<Record>>>,
}

impl Strict {
    pub async fn start() -> (SocketAddr, Strict) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Strict::default();
        let records = Arc::clone(&backend.records);
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve(stream, Arc::clone(&records)));
                    }
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                }
            }
        });
        (addr, backend)
    }

    /// What was recorded since the last call.
    pub fn take(&self) -> Vec<Record> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }
}

struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Reader {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A line ending in CRLF (without it); a bare CR or LF is an error.
    async fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                let Some(body) = line.strip_suffix(b"\r\n") else {
                    return Err("bare LF".into());
                };
                if body.contains(&b'\r') {
                    return Err("bare CR".into());
                }
                return Ok(Some(body.to_vec()));
            }
            if !self.fill().await {
                return Ok(None);
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if !self.fill().await {
                return Err("body cut short".into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

async fn serve(stream: TcpStream, records: Arc<Mutex<Vec<Record>>>) {
    let mut r = Reader {
        stream,
        buf: Vec::new(),
    };
    loop {
        match read_request(&mut r).await {
            Ok(None) => return,
            Ok(Some((req, close))) => {
                let head_only = req.method == "HEAD";
                let seq = {
                    let mut records = records.lock().unwrap();
                    // Health probes are the proxy's own, not traffic.
                    if req.target != "/health/ready" {
                        records.push(Record::Request(req));
                    }
                    records.len()
                };
                let mut body = format!("backend {seq}\n");
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                if head_only {
                    body.clear();
                }
                if r.stream.write_all(format!("{head}{body}").as_bytes()).await.is_err() || close {
                    return;
                }
            }
            Err(why) if why.contains(CUT_SHORT) => return,
            Err(why) => {
                records.lock().unwrap().push(Record::Malformed(why));
                let _ = r
                    .stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                return;
            }
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

async fn read_request(r: &mut Reader) -> Result<Option<(Req, bool)>, String> {
    let Some(line) = r.line().await? else { return Ok(None) };
    let text = String::from_utf8(line).map_err(|_| "request line not UTF-8")?;
    let parts: Vec<&str> = text.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("request line {text:?}"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) || !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(format!("request line {text:?}"));
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("target {target:?}"));
    }
    // An absolute-form target names the host itself (RFC 9112 §3.2.2).
    let (target, authority) = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => match rest.find('/') {
            Some(at) => (&rest[at..], Some(&rest[..at])),
            None => ("/", Some(rest)),
        },
        None => (target, None),
    };
    if !target.starts_with('/') {
        return Err(format!("target {target:?}"));
    }
    let mut host = Vec::new();
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    let mut close = false;
    loop {
        let Some(line) = r.line().await? else {
            return Err("head cut short".into());
        };
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("field without a colon".into());
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(format!("field name {:?}", String::from_utf8_lossy(name)));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err("control byte in a field value".into());
        }
        let value = String::from_utf8_lossy(value).into_owned();
        match name.to_ascii_lowercase().as_slice() {
            b"host" => host.push(value),
            b"content-length" => lengths.push(value),
            b"transfer-encoding" => codings.push(value),
            b"connection" => close |= value.to_ascii_lowercase().split(',').any(|t| t.trim() == "close"),
            _ => {}
        }
    }
    if host.len() != 1 {
        return Err(format!("{} Host fields", host.len()));
    }
    if let Some(authority) = authority {
        host = vec![authority.to_owned()];
    }
    close |= version == "HTTP/1.0";
    let body = match (&lengths[..], &codings[..]) {
        ([], []) => Vec::new(),
        ([n], []) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = n.parse().map_err(|_| "length too large")?;
            r.exact(n).await?
        }
        ([], [te]) if te.eq_ignore_ascii_case("chunked") => chunked(r).await?,
        _ => return Err(format!("framing: lengths {lengths:?}, codings {codings:?}")),
    };
    let req = Req {
        method: method.to_owned(),
        target: target.to_owned(),
        host: host.remove(0),
        body,
    };
    Ok(Some((req, close)))
}

async fn chunked(r: &mut Reader) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line) = r.line().await? else {
            return Err("chunked body cut short".into());
        };
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        if size.is_empty() || size.len() > 8 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(format!("chunk size {:?}", String::from_utf8_lossy(&line)));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
        if size == 0 {
            // Trailer fields, then the empty line.
            loop {
                match r.line().await? {
                    Some(line) if line.is_empty() => return Ok(body),
                    Some(line) if line.contains(&b':') => {}
                    Some(_) => return Err("trailer without a colon".into()),
                    None => return Err("trailers cut short".into()),
                }
            }
        }
        body.extend(r.exact(size).await?);
        if r.exact(2).await? != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
    }
}
