//! HPACK's Huffman code (RFC 7541 Appendix B), decoding only: sluice writes
//! its own string literals unencoded, which the format allows.
//!
//! The code is canonical (codes of one length are consecutive, and shorter
//! codes sort first), so a symbol is found by comparing the next 32 bits
//! against one bound per code length instead of walking a tree.

use thiserror::Error;

/// A Huffman-coded string that does not decode.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HuffmanError {
    #[error("Huffman string contains the end-of-string symbol")]
    EndOfString,
    #[error("Huffman string has invalid padding")]
    Padding,
}

// The code table, copied from the h2 crate (MIT licence,
// src/hpack/huffman/table.rs), itself generated from RFC 7541 Appendix B.
const CODES: [u32; 256] = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, 0xfffffe8, 0xffffea,
    0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, 0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0,
    0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, 0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9,
    0xffffffa, 0xffffffb, 0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16,
    0x17, 0x18, 0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
    0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
    0x6e, 0x6f, 0x70, 0x71, 0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4,
    0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
    0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, 0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3,
    0x3fffd4, 0x3fffd5, 0x7fffd9, 0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
    0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, 0x7fffe4, 0x1fffdc, 0x3fffd8,
    0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8,
    0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0,
    0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4,
    0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8,
    0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2,
    0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8,
    0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7,
    0x1fffe8, 0x7ffff3, 0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb,
    0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb, 0xffffffe, 0x7ffffec,
    0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
];

const LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12,
    10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6,
    5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22,
    22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20,
    22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28,
    27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28,
    27, 27, 27, 27, 27, 26,
];

/// The end-of-string symbol: 30 one bits, never valid inside a string.
const EOS: u16 = 256;
const MIN_LEN: u32 = 5;
const MAX_LEN: u32 = 30;

/// The canonical code's decoding tables, per code length `L`.
struct Canonical {
    /// Left-aligned exclusive upper bound of the codes of length ≤ `L`:
    /// the next 32 bits, read as a number, are below `bound[L]` exactly
    /// when they start with a code of length ≤ `L`.
    bound: [u64; MAX_LEN as usize + 1],
    /// The first (smallest) code of length `L`.
    first: [u32; MAX_LEN as usize + 1],
    /// Where the symbols of length `L` start in `symbols`.
    offset: [u16; MAX_LEN as usize + 1],
    /// Symbols ordered by code.
    symbols: [u16; 257],
}

const TABLE: Canonical = canonical();

// The table is built at compile time (`const TABLE`): an index out of range
// here fails the build, never a request.
#[allow(clippy::indexing_slicing)]
const fn length_of(symbol: usize) -> u32 {
    if symbol == EOS as usize {
        MAX_LEN
    } else {
        LENGTHS[symbol] as u32
    }
}

#[allow(clippy::indexing_slicing)]
const fn code_of(symbol: usize) -> u32 {
    if symbol == EOS as usize {
        0x3fff_ffff
    } else {
        CODES[symbol]
    }
}

#[allow(clippy::indexing_slicing)]
const fn canonical() -> Canonical {
    let mut table = Canonical {
        bound: [0; MAX_LEN as usize + 1],
        first: [0; MAX_LEN as usize + 1],
        offset: [0; MAX_LEN as usize + 1],
        symbols: [0; 257],
    };
    let mut next = 0;
    let mut bound = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        table.offset[len as usize] = next as u16;
        let mut count = 0u64;
        let mut symbol = 0;
        while symbol <= EOS as usize {
            if length_of(symbol) == len {
                if count == 0 {
                    table.first[len as usize] = code_of(symbol);
                }
                table.symbols[next] = symbol as u16;
                next += 1;
                count += 1;
            }
            symbol += 1;
        }
        if count > 0 {
            bound = (table.first[len as usize] as u64 + count) << (32 - len);
        }
        table.bound[len as usize] = bound;
        len += 1;
    }
    table
}

/// The code at the start of `bits` (left-aligned): its length and symbol.
fn lookup(bits: u32) -> (u32, u16) {
    let mut len = MIN_LEN;
    while len < MAX_LEN {
        let l = len as usize;
        if TABLE.bound.get(l).is_some_and(|&bound| u64::from(bits) < bound) {
            return (len, symbol_at(l, bits >> (32 - len)));
        }
        len += 1;
    }
    // Every 32-bit value is below the last bound; the longest codes end in EOS.
    (MAX_LEN, symbol_at(MAX_LEN as usize, bits >> 2))
}

/// The symbol of the `len`-bit `code`; EOS (an error to the decoder) for
/// a code outside the table, which the construction rules out.
fn symbol_at(len: usize, code: u32) -> u16 {
    let (Some(&offset), Some(&first)) = (TABLE.offset.get(len), TABLE.first.get(len)) else {
        return EOS;
    };
    let index = usize::from(offset) + code.wrapping_sub(first) as usize;
    TABLE.symbols.get(index).copied().unwrap_or(EOS)
}

fn low_bits(n: u32) -> u64 {
    (1u64 << n) - 1
}

fn emit(symbol: u16, dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    if symbol == EOS {
        return Err(HuffmanError::EndOfString);
    }
    dst.push(symbol as u8);
    Ok(())
}

/// Decodes the Huffman-coded `src` onto the end of `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), HuffmanError> {
    dst.reserve(src.len() * 8 / 5);
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &byte in src {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        // Enough bits for the longest code: decode without bounds checks.
        while bits >= MAX_LEN {
            let (len, symbol) = lookup(((acc << (64 - bits)) >> 32) as u32);
            emit(symbol, dst)?;
            bits -= len;
        }
        acc &= low_bits(bits);
    }
    // The last few bits: whole codes, then at most 7 bits of padding, all
    // ones (the start of EOS).
    while bits >= MIN_LEN {
        let (len, symbol) = lookup(((acc << (64 - bits)) >> 32) as u32);
        if len > bits {
            break;
        }
        emit(symbol, dst)?;
        bits -= len;
        acc &= low_bits(bits);
    }
    if bits > 7 || acc != low_bits(bits) {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// Huffman-codes `src` onto the end of `dst` (tests only: sluice's encoder
/// writes literals raw).
#[cfg(test)]
pub fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    for &byte in src {
        let len = u32::from(LENGTHS[byte as usize]);
        acc = (acc << len) | u64::from(CODES[byte as usize]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
        acc &= low_bits(bits);
    }
    if bits > 0 {
        dst.push(((acc << (8 - bits)) | low_bits(8 - bits)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(src: &[u8]) {
        let mut coded = Vec::new();
        encode(src, &mut coded);
        let mut decoded = Vec::new();
        assert_eq!(decode(&coded, &mut decoded), Ok(()), "{src:?}");
        assert_eq!(decoded, src);
    }

    #[test]
    fn every_octet_and_length_round_trips() {
        round_trip(&(0..=u8::MAX).collect::<Vec<_>>());
        round_trip(&(0..=u8::MAX).rev().collect::<Vec<_>>());
        for len in 0..40 {
            round_trip(&vec![b'0'; len]);
            round_trip(&vec![0xff; len]);
            round_trip(&b"www.example.com/index.html?q=1".repeat(len));
        }
    }

    #[test]
    fn rfc_7541_examples_decode() {
        // C.4.1: "www.example.com"
        let mut out = Vec::new();
        let coded = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        assert_eq!(decode(&coded, &mut out), Ok(()));
        assert_eq!(out, b"www.example.com");
        // C.4.2: "no-cache"
        out.clear();
        assert_eq!(decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out), Ok(()));
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // '0' is 00000: padding of zeros instead of ones.
        assert_eq!(decode(&[0x00], &mut out), Err(HuffmanError::Padding));
        // A whole byte of padding (8 one bits) is too long.
        out.clear();
        assert_eq!(decode(&[0x07, 0xff], &mut out), Err(HuffmanError::Padding));
        // EOS (30 one bits) inside the string.
        out.clear();
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::EndOfString)
        );
        // Empty input is the empty string.
        out.clear();
        assert_eq!(decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
