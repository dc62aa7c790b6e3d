//! Random ids and their hex form, shared by request ids and trace
//! context: a fast generator per thread (ids need to be unique, not
//! secret) and branch-free hex digits.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// A fast generator per thread, seeded from the operating system's
    /// randomness through rand's thread generator: ids need to be unique
    /// (128 bits), not secret.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// 128 bits from this thread's fast generator (ids, not secrets).
#[inline]
pub(crate) fn random_u128() -> u128 {
    RNG.with_borrow_mut(|rng| rng.random())
}

/// `N` × 64 bits from this thread's fast generator, in one visit.
#[inline]
pub(crate) fn random_u64s<const N: usize>() -> [u64; N] {
    RNG.with_borrow_mut(|rng| std::array::from_fn(|_| rng.random()))
}

/// `bytes` as lower-case hex into `out` (twice as long; a shorter `out`
/// takes the first bytes only).
#[inline]
pub(crate) fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (chunk, word) in out.chunks_exact_mut(8).zip(bytes.chunks_exact(4)) {
        let mut four = [0u8; 4];
        four.copy_from_slice(word);
        chunk.copy_from_slice(&hex8(u32::from_be_bytes(four)));
    }
}

/// A 32-bit word as 8 lower-case hex digits, most significant first,
/// eight at a time in one u64 (no per-digit branch or table).
#[inline]
pub(crate) fn hex8(v: u32) -> [u8; 8] {
    let mut x = u64::from(v);
    // Spread the nibbles to one per byte, the most significant lowest.
    x = ((x & 0x0000_FFFF) << 32) | ((x & 0xFFFF_0000) >> 16);
    x = ((x & 0x0000_00FF_0000_00FF) << 16) | ((x & 0x0000_FF00_0000_FF00) >> 8);
    x = ((x & 0x000F_000F_000F_000F) << 8) | ((x & 0x00F0_00F0_00F0_00F0) >> 4);
    // Each byte n (0–15): '0' + n, and 39 more for the letters ('a' - '0' - 10).
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
}
