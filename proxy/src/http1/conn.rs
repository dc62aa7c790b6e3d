//! A plain-TCP connection to a backend for sluice's own exchange, and a
//! backend's queue of idle ones.

use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crossbeam_queue::ArrayQueue;
use tokio::time::Instant;

/// The least free space offered to each read.
pub(super) const READ_CHUNK: usize = 8 * 1024;
/// The most space offered to one read.
pub(super) const READ_MAX: usize = 64 * 1024;

/// A plain-TCP connection to a backend and the bytes read past the last
/// message (none when idle).
#[derive(Debug)]
pub struct RawConn {
    pub(super) io: TcpStream,
    pub(super) buf: BytesMut,
    /// Space offered to the next response's first read: it grows while
    /// reads fill it, so that a whole response usually takes one read (as
    /// hyper's adaptive buffer does), and shrinks when they stay small.
    /// (u32 with `keep_alive` beside it keeps the connection, and so every
    /// response body of the own exchange, 8 bytes smaller.)
    read_size: u32,
    /// The backend lets the connection be reused after the response being
    /// read (set per response).
    pub(super) keep_alive: bool,
}

impl RawConn {
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            read_size: READ_CHUNK as u32,
            keep_alive: true,
        }
    }

    /// How much the next read offers.
    pub(super) fn read_size(&self) -> usize {
        self.read_size as usize
    }

    /// Adapts [`RawConn::read_size`] to a read of `n` bytes into `offered`.
    pub(super) fn adapt(&mut self, n: usize, offered: usize) {
        if n >= offered {
            self.read_size = (self.read_size * 2).min(READ_MAX as u32);
        } else if n < self.read_size() / 4 {
            self.read_size = (self.read_size / 2).max(READ_CHUNK as u32);
        }
    }

    /// Whether an idle connection is still usable: the backend has neither
    /// closed it nor sent anything. Costs no system call unless the socket
    /// was signalled readable meanwhile.
    pub fn alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Whether an idle connection may carry a request: idle no longer than
/// `idle_timeout`, and not closed by the backend meanwhile.
fn usable(conn: &mut RawConn, since: Instant, idle_timeout: std::time::Duration) -> bool {
    since.elapsed() <= idle_timeout && conn.alive()
}

/// A backend's idle connections of the own exchange, each with the time
/// it went idle. Shared by the backend's connection pool
/// (`crate::upstream`) and the bodies that give connections back to it.
#[derive(Debug)]
pub struct RawIdle(ArrayQueue<(RawConn, Instant)>);

impl RawIdle {
    pub fn new(capacity: usize) -> Self {
        Self(ArrayQueue::new(capacity))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A connection whose last exchange ended cleanly; a full queue drops
    /// (closes) it.
    pub fn put(&self, conn: RawConn) {
        let _ = self.0.push((conn, Instant::now()));
    }

    /// The next idle connection that may carry a request: idle no longer
    /// than `idle_timeout` and not closed by the backend meanwhile (the
    /// others are closed on the way).
    pub fn take(&self, idle_timeout: std::time::Duration) -> Option<RawConn> {
        while let Some((mut conn, since)) = self.0.pop() {
            if usable(&mut conn, since, idle_timeout) {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections that the backend has closed or that
    /// sat idle past `idle_timeout`. They are otherwise only noticed when
    /// next taken, and a backend that closes its side would leave them
    /// half-closed until traffic returns. One at a time, so requests
    /// meanwhile still find the others.
    pub fn close_stale(&self, idle_timeout: std::time::Duration) {
        for _ in 0..self.0.len() {
            let Some((mut conn, since)) = self.0.pop() else {
                return;
            };
            if usable(&mut conn, since, idle_timeout) {
                let _ = self.0.push((conn, since));
            }
        }
    }
}
