//! Emptied header maps kept per thread for the next request or response.
//!
//! A gRPC call builds three maps (the request's, the response's and its
//! trailers') in one place and drops them in another: the request's in the
//! upstream exchange, the response's and the trailers' on the client's
//! connection once encoded; the backend connection that builds the next
//! response never sees them. Each map is two allocations, and a batch of
//! calls handled in one turn overflows glibc's per-thread cache (7 blocks
//! of a size), so most took malloc's slow path. Maps given back here are
//! reused by whichever code on this thread takes one next.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread: a batch of calls' worth.
const KEPT: usize = 32;
/// Every map made here has room for a usual request's fields and what
/// forward adds, so that any kept map serves any use without growing.
const ROOM: usize = 12;
/// Larger maps (a request with unusually many fields) are freed, not kept
/// (here, and by a connection's `Scratch`).
pub(crate) const MAX_CAPACITY: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields: a kept one, else a new one.
#[inline]
pub(crate) fn take(capacity: usize) -> HeaderMap {
    match SPARE.try_with(|spare| spare.borrow_mut().pop()) {
        Ok(Some(mut map)) => {
            map.reserve(capacity);
            map
        }
        _ => HeaderMap::with_capacity(capacity.max(ROOM)),
    }
}

/// Keeps `map`, emptied, for the next [`take`] on this thread (a map
/// without room, as an HTTP/1.1 backend's responses have, costs a compare).
#[inline]
pub(crate) fn give(map: HeaderMap) {
    if (ROOM..=MAX_CAPACITY).contains(&map.capacity()) {
        keep(map);
    }
}

#[inline(never)]
fn keep(mut map: HeaderMap) {
    map.clear();
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        let mut map = HeaderMap::with_capacity(ROOM);
        map.insert("x-a", http::HeaderValue::from_static("1"));
        let room = map.capacity();
        give(map);
        let again = take(1);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room);
        // Nothing kept: a new one, with the room every map here has.
        assert_eq!(take(3).capacity(), room);
        // A small map from elsewhere is not kept (it would grow in use).
        give(HeaderMap::with_capacity(2));
        assert_eq!(take(0).capacity(), room);
    }

    #[test]
    fn big_maps_and_more_than_a_batch_are_not_kept() {
        give(HeaderMap::with_capacity(200));
        assert!(take(0).capacity() < 200, "a big map is freed");
        let fresh = take(0).capacity();
        for _ in 0..KEPT + 5 {
            give(HeaderMap::with_capacity(20));
        }
        let kept = std::iter::from_fn(|| Some(take(0)))
            .take_while(|m| m.capacity() > fresh)
            .count();
        assert_eq!(kept, KEPT);
    }
}
