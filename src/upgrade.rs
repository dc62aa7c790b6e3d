//! Hot binary upgrade: a running sluice hands its listening sockets to a
//! new process over a Unix socket, the way Envoy's hot restart and
//! Pingora's graceful upgrade do. Both processes accept from the same
//! sockets while the new one starts, so no connection is refused; once the
//! new one says it is ready, the old one stops accepting, drains and exits.
//!
//! Protocol: the new process connects; the old one sends one message whose
//! bytes name the sockets (`proxy,admin,tls`) and whose `SCM_RIGHTS`
//! carries their descriptors in that order; the new process answers
//! `ready\n` when it serves.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::error::AppError;

const MAX_SOCKETS: usize = 3;

/// The default handoff path for a proxy listening on `port`.
pub fn default_socket(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("sluice-{port}.upgrade.sock"))
}

/// New side: takes the running process's sockets, by name.
pub fn take_over(path: &Path) -> Result<(HashMap<String, std::net::TcpListener>, UnixStream), AppError> {
    let fail = |e: String| AppError::Other(format!("upgrade via {}: {e}", path.display()));
    let stream = UnixStream::connect(path).map_err(|e| fail(format!("no running sluice answers ({e})")))?;
    let mut names = [0u8; 256];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut names)],
        &mut control,
        RecvFlags::empty(),
    )
    .map_err(|e| fail(e.to_string()))?;
    let names = String::from_utf8_lossy(&names[..received.bytes]).into_owned();
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    let names: Vec<&str> = names.split(',').filter(|n| !n.is_empty()).collect();
    if names.len() != fds.len() {
        return Err(fail(format!("got {} sockets for {names:?}", fds.len())));
    }
    let listeners = names
        .into_iter()
        .zip(fds)
        .map(|(name, fd)| (name.to_owned(), std::net::TcpListener::from(fd)))
        .collect();
    Ok((listeners, stream))
}

/// New side: tells the old process to stop accepting and drain.
pub fn ready(mut old: UnixStream) {
    if let Err(e) = old.write_all(b"ready\n") {
        warn!(error = %e, "could not tell the old process to drain");
    }
}

/// Turns a taken-over listener into a tokio one.
pub fn adopt(listener: std::net::TcpListener) -> Result<tokio::net::TcpListener, AppError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| AppError::Other(format!("cannot adopt an inherited socket: {e}")))
}

/// Copies of the listening sockets, by name, for a future upgrade; a
/// listener that moves (a reload changed its address) replaces its copy.
pub type Handoff = std::sync::Arc<std::sync::Mutex<Vec<(&'static str, OwnedFd)>>>;

/// Replaces the copy of socket `name` in `handoff`.
pub fn replace_handoff(handoff: &Handoff, name: &'static str, fd: OwnedFd) {
    let mut sockets = handoff.lock().unwrap_or_else(|e| e.into_inner());
    sockets.retain(|(n, _)| *n != name);
    sockets.push((name, fd));
}

/// Old side: serves handoffs at `path` for the named sockets; a completed
/// handoff sets `stop`, which drains this process.
pub fn serve(path: PathBuf, sockets: Handoff, stop: watch::Sender<bool>) {
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "no upgrade socket; `sluice run --upgrade` cannot take over");
            return;
        }
    };
    info!(path = %path.display(), "upgrade socket ready");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let sockets = sockets.lock().unwrap_or_else(|e| e.into_inner());
            match hand_over(&stream, &sockets) {
                Ok(()) => {
                    info!("sockets handed to the new process; draining");
                    let _ = stop.send(true);
                    return;
                }
                Err(e) => warn!(error = %e, "upgrade abandoned; still serving"),
            }
        }
    });
}

fn hand_over(stream: &UnixStream, sockets: &[(&'static str, OwnedFd)]) -> std::io::Result<()> {
    let names: Vec<&str> = sockets.iter().map(|(n, _)| *n).collect();
    let names = names.join(",");
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(names.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    // Wait for the new process to serve (it opens its store, probes…).
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.trim() == "ready" {
        Ok(())
    } else {
        Err(std::io::Error::other("the new process went away before it was ready"))
    }
}

/// Binds the upgrade socket, replacing a stale file but never a live one.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::other("another sluice serves this upgrade socket"));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

/// New side, once ready: takes the upgrade socket over for the next upgrade.
pub fn replace_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        error!(path = %path.display(), error = %e, "cannot replace the upgrade socket");
    }
}
