//! sluice's own HTTP/2 server for client connections (h2c by prior
//! knowledge, and h2 over TLS): frames (`frame`), header compression
//! (`hpack`, `huffman`), requests (`request`) and their bodies (`recv`),
//! and the connection that drives them (`conn`; frames in: `inbound`;
//! responses out: `outbound`; per-stream state: `stream`; which streams
//! are open, reset or idle: `streams`).
//!
//! It serves what a proxy needs and no more: no server push, no priority
//! scheduling (responses go out as they are ready), no extended CONNECT.
//! Every request runs in the connection's own task, as on the HTTP/1.1
//! loop, instead of a task per stream.

mod conn;
pub(crate) mod frame;
pub(crate) mod hpack;
mod huffman;
mod inbound;
pub(crate) mod io;
mod outbound;
pub(crate) mod recv;
mod request;
mod stream;
mod streams;

pub use conn::serve;
#[doc(hidden)]
pub use hpack::{decode_blocks as hpack_decode_blocks, encode_response as hpack_encode_response};
pub use recv::RecvBody;
pub(crate) use request::is_connection_specific;

/// Whether `bytes`, the first bytes of a connection, start (or are the
/// start of) the HTTP/2 preface.
pub fn is_preface(bytes: &[u8]) -> bool {
    let n = bytes.len().min(frame::PREFACE.len());
    n > 0 && bytes.get(..n) == frame::PREFACE.get(..n)
}
