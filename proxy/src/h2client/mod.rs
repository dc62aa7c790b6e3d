//! sluice's own HTTP/2 client for backend connections (h2c by prior
//! knowledge, and h2 over TLS), used by the `sluice` engine; the `hyper`
//! engine keeps the `h2` crate's client (`upstream::h2_exchange`).
//!
//! A connection is shared by every request the pool sends it (one per
//! backend, more while long streams occupy it: `upstream::h2`). Its state
//! (streams, windows, the bytes waiting to be written) sits behind one
//! mutex held for a few hundred instructions at a time ([`state`]); the
//! request's own task opens its stream and writes the head (and a body
//! that has all arrived) into the shared write buffer, then waits for the
//! response there; the connection's task ([`driver`]) reads and handles
//! frames ([`frames`]) and writes what the requests queued. A body still
//! arriving is fed by a task of its own, within the stream's window
//! ([`exchange`]).
//!
//! It reuses the server's frame code and HPACK: heads go out from the
//! static table only (no encoder state, so a head is encoded before the
//! lock is taken), the backend's blocks are decoded with the server's
//! decoder. It asks for no server push, sends no priorities, and never
//! raises the frame size.

mod body;
mod driver;
mod error;
mod exchange;
mod frames;
mod head;
mod send;
mod state;
#[cfg(test)]
mod tests;

pub use body::ResponseBody;
pub use error::H2Error;
pub use exchange::{ExchangeError, H2Client};

/// Windows as the `h2`-crate client has them (2 MiB a stream, 5 MiB the
/// connection): ample for backends near the proxy.
pub(crate) const STREAM_WINDOW: i64 = 2 * 1024 * 1024;
pub(crate) const CONN_WINDOW: i64 = 5 * 1024 * 1024;
/// A request body's bytes queued per stream beyond the backend's window.
pub(crate) const SEND_BUFFER: usize = 1024 * 1024;
/// The largest response header section accepted from a backend.
pub(crate) const MAX_HEADER_LIST: usize = 64 * 1024;
