//! sluice's own HTTP/1.1, both ways.
//!
//! Clients: the server loop ([`server`]) reads request heads itself
//! ([`request`]) and writes responses with their body's first bytes
//! ([`write`]); a connection it does not take goes to hyper, with the bytes
//! read so far in front ([`prefixed`]). Backends: the exchange
//! ([`exchange`]) writes the request head ([`encode`]) on a pooled
//! connection ([`conn`]), parses the response head ([`response`]) and
//! decodes the body straight from the socket ([`decode`]). [`head`] holds
//! what both sides share; [`whole`] reads a response held in memory for
//! the fuzz targets.

pub mod conn;
pub mod decode;
pub mod encode;
pub mod error;
pub mod exchange;
pub mod head;
pub mod prefixed;
pub mod request;
pub mod response;
pub mod server;
pub mod whole;
pub mod write;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod server_tests;

pub use conn::{RawConn, RawIdle};
pub use encode::{MAX_BUFFERED_BODY, encode_head};
pub use error::RawError;
pub use exchange::{RawBody, exchange};
pub use prefixed::Prefixed;
pub use request::parse_whole;
pub use response::{HeaderLines, HeadersAs};
pub use server::{Outcome, serve};
pub use whole::{decode_whole, head_both_ways};
