//! Pieces of HTTP/1 head parsing shared by sluice's own client-side loop
//! (`h1server`) and backend exchange (`h1raw`): where each header sits in
//! the head, so its value can share the head's bytes once httparse's
//! borrow ends, and the one `Content-Length` rule.

/// A header's name and value as byte ranges of the head:
/// (name start, name end, value start, value end).
pub type HeaderSpan = (u32, u32, u32, u32);

/// The byte range of `part`, a slice of `head`, within it.
pub fn span_in(head: &[u8], part: &[u8]) -> (u32, u32) {
    let at = u32::try_from((part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize)).unwrap_or(u32::MAX);
    (at, at.saturating_add(part.len() as u32))
}

/// Records where each of `headers` (parsed from `head`) sits; how many.
pub fn record_spans(head: &[u8], headers: &[httparse::Header<'_>], spans: &mut [HeaderSpan]) -> usize {
    let mut count = 0;
    for (h, slot) in headers.iter().zip(spans.iter_mut()) {
        let ((ns, ne), (vs, ve)) = (span_in(head, h.name.as_bytes()), span_in(head, h.value));
        *slot = (ns, ne, vs, ve);
        count += 1;
    }
    count
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6), as hyper reads
/// it; `+5`, `-1`, `5, 6` or an empty value are not lengths.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    // Digit by digit: `str::parse` would first check UTF-8 and accept `+`.
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b" 42 "), Some(42));
        assert_eq!(content_length(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b" ",
            b"+5",
            b"-1",
            b"5, 6",
            b"0x10",
            b"1 2",
            b"18446744073709551616",
            b"99999999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn spans_point_into_the_head() {
        let head = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head).unwrap().is_complete());
        let mut spans = [(0, 0, 0, 0); 4];
        let count = record_spans(head, req.headers, &mut spans);
        assert_eq!(count, 1);
        let (ns, ne, vs, ve) = spans[0];
        assert_eq!(&head[ns as usize..ne as usize], b"host");
        assert_eq!(&head[vs as usize..ve as usize], b"x");
    }
}
