//! A load generator for end-to-end tests: clients that send requests until
//! told to stop and count every outcome.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::client;

/// Every response counted.
#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub non_2xx: AtomicU64,
    pub conn_errors: AtomicU64,
    /// Latencies (µs) of successful requests, by phase (0 quiet, 1 busy).
    pub latencies: [Mutex<Vec<u64>>; 2],
}

impl Tally {
    /// Non-2xx answers and connection errors together.
    pub fn failed(&self) -> u64 {
        self.non_2xx.load(Ordering::Relaxed) + self.conn_errors.load(Ordering::Relaxed)
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

/// Clients sending requests until `stop`: `keep_alive` of them on pooled
/// connections, `fresh` opening a new connection for every request. Counts
/// go to `tally`, latencies by phase (`busy` off: quiet, on: busy).
pub fn start_load(
    url: &str,
    keep_alive: usize,
    fresh: usize,
    tally: &Arc<Tally>,
    busy: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let pooled = client();
    (0..keep_alive + fresh)
        .map(|i| {
            let fresh = i >= keep_alive;
            let (c, url, tally, busy, stop) = (
                pooled.clone(),
                url.to_owned(),
                tally.clone(),
                busy.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let phase = usize::from(busy.load(Ordering::Relaxed));
                    let started = Instant::now();
                    let c = if fresh {
                        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                            .pool_max_idle_per_host(0)
                            .build_http()
                    } else {
                        c.clone()
                    };
                    let req = http::Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    match c.request(req).await {
                        Ok(res) if res.status().is_success() => match res.into_body().collect().await {
                            Ok(_) => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                                tally.latencies[phase]
                                    .lock()
                                    .unwrap()
                                    .push(started.elapsed().as_micros() as u64);
                            }
                            Err(_) => {
                                tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Ok(_) => {
                            tally.non_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tally.conn_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}
