//! HPACK (RFC 7541) for sluice's HTTP/2 server: a decoder for the client's
//! header blocks, with the dynamic table the client writes into
//! ([`decode`]), and an encoder for response heads (and the request heads
//! of sluice's client to HTTP/2 backends) that uses only the static table
//! ([`encode`]). The client decodes its backends' blocks with the same
//! decoder.

pub mod decode;
pub mod encode;
#[cfg(test)]
mod tests;

pub use decode::{Decoder, Field, Name, Pseudo, decode_blocks};
pub use encode::{
    encode_date, encode_header, encode_length, encode_line, encode_request_line, encode_response, encode_status,
    encode_table_size_zero,
};
