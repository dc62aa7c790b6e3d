//! The `h2_backend` fuzz target's check, shared by the libFuzzer target and
//! the corpus replay (`tests/e2e/fuzz_replay.rs`), differential: sluice's
//! own HTTP/2 client to backends (`sluice_proxy::h2client`) and the `h2`
//! crate's client each send one GET over an in-memory duplex and read the
//! same backend bytes: a SETTINGS frame, then the input (sent once the
//! request's HEADERS has arrived). Whatever sluice's client passes on as a
//! whole response — status, fields, body and trailers — the `h2` crate's
//! must read the same from the same bytes: sluice is never looser than a
//! client everyone uses. No panic; every run ends (time is paused, so a
//! response that never comes is an outcome, not a hang).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::large_enum_variant
)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// How long a client may wait for the head, then for the body (paused
/// time: reached at once when nothing else can happen).
const WAIT: Duration = Duration::from_secs(5);
const PREFACE_LEN: usize = 24;

/// A response as a client passes it on.
#[derive(Debug, PartialEq)]
struct Whole {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

#[derive(Debug)]
enum Outcome {
    Whole(Whole),
    /// Refused (an error) or never complete.
    Not(String),
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
}

pub fn h2_backend(data: &[u8]) {
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let ours = run_ours(data).await;
            let theirs = run_h2(data).await;
            if let Outcome::Whole(ours) = &ours {
                match &theirs {
                    Outcome::Whole(theirs) => assert_eq!(ours, theirs, "the clients read different responses"),
                    Outcome::Not(why) => panic!("sluice passed on {ours:?}; h2 did not ({why})"),
                }
            }
        })
    });
}

/// The backend: reads the client's bytes until the request's HEADERS has
/// arrived, then writes SETTINGS and the input, then reads to the end.
async fn backend(mut io: DuplexStream, data: Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if has_headers(&seen) {
            break;
        }
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    // An empty SETTINGS frame and the ACK of the client's (so the h2
    // crate applies the windows it asked for, as sluice's client does at
    // once), then the input.
    let settings = [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    if io.write_all(&settings).await.is_err() || io.write_all(&data).await.is_err() {
        return;
    }
    while let Ok(n) = io.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Whether a whole HEADERS frame follows the preface in `seen`.
fn has_headers(seen: &[u8]) -> bool {
    let mut pos = PREFACE_LEN;
    while let Some(head) = seen.get(pos..pos + 9) {
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        if seen.len() < pos + 9 + len {
            return false;
        }
        if head[3] == 0x1 {
            return true;
        }
        pos += 9 + len;
    }
    false
}

fn get<B>(body: B) -> Request<B> {
    Request::get("http://backend.test/").body(body).unwrap()
}

async fn run_ours(data: &[u8]) -> Outcome {
    use sluice_proxy::request_body::{ClientBody, RequestBody};
    let (client, server) = tokio::io::duplex(1 << 20);
    let backend = tokio::spawn(backend(server, data.to_vec()));
    let conn = sluice_proxy::h2client::H2Client::start(client);
    let req = get(RequestBody::new(ClientBody::Read(None), 0));
    let outcome = match tokio::time::timeout(WAIT, conn.exchange(req)).await {
        Err(_) => Outcome::Not("no response head".into()),
        Ok(Err(e)) => Outcome::Not(format!("{e:?}")),
        Ok(Ok(res)) => {
            let (parts, body) = res.into_parts();
            match tokio::time::timeout(WAIT, body.collect()).await {
                Err(_) => Outcome::Not("body never ended".into()),
                Ok(Err(e)) => Outcome::Not(format!("{e:?}")),
                Ok(Ok(collected)) => Outcome::Whole(Whole {
                    status: parts.status,
                    headers: parts.headers,
                    trailers: collected.trailers().cloned(),
                    body: collected.to_bytes(),
                }),
            }
        }
    };
    drop(conn);
    backend.abort();
    outcome
}

async fn run_h2(data: &[u8]) -> Outcome {
    let (client, server) = tokio::io::duplex(1 << 20);
    let backend = tokio::spawn(backend(server, data.to_vec()));
    let outcome = tokio::time::timeout(WAIT, async {
        // The windows and header list limit sluice's client asks for.
        let (mut send, conn) = h2::client::Builder::new()
            .initial_window_size(2 * 1024 * 1024)
            .initial_connection_window_size(5 * 1024 * 1024)
            .max_header_list_size(64 * 1024)
            .enable_push(false)
            .handshake::<_, Bytes>(client)
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let result = async {
            let (response, _) = send.send_request(get(()), true).map_err(|e| e.to_string())?;
            let res = response.await.map_err(|e| e.to_string())?;
            let (parts, mut body) = res.into_parts();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(Whole {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::from(bytes),
                trailers,
            })
        }
        .await;
        driver.abort();
        result
    })
    .await;
    backend.abort();
    match outcome {
        Err(_) => Outcome::Not("timed out".into()),
        Ok(Err(e)) => Outcome::Not(e),
        Ok(Ok(whole)) => Outcome::Whole(whole),
    }
}
