//! The decoder against RFC 7541's examples and broken blocks; the encoder
//! round trip.

use super::decode::*;
use super::encode::*;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
    let mut fields = Vec::new();
    decoder.decode(&Bytes::copy_from_slice(block), |f| {
        let name = match f.name {
            Name::Pseudo(p) => format!("{p:?}"),
            Name::Header(n) => n.to_string(),
            Name::Invalid(b) => format!("invalid:{}", String::from_utf8_lossy(&b)),
        };
        fields.push((name, String::from_utf8_lossy(f.value.as_bytes()).into_owned()));
    })?;
    Ok(fields)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn rfc_7541_c3_requests_without_huffman_share_the_table() {
    let mut d = Decoder::default();
    let start = [
        ("Method", "GET"),
        ("Scheme", "http"),
        ("Path", "/"),
        ("Authority", "www.example.com"),
    ];
    let first = b"\x82\x86\x84\x41\x0fwww.example.com";
    assert_eq!(decode_all(&mut d, first).unwrap(), pairs(&start));
    assert_eq!(d.size, 57);
    let second = b"\x82\x86\x84\xbe\x58\x08no-cache";
    let expected = [&start[..], &[("cache-control", "no-cache")]].concat();
    assert_eq!(decode_all(&mut d, second).unwrap(), pairs(&expected));
    assert_eq!(d.size, 110);
    let third = b"\x82\x87\x85\xbf\x40\x0acustom-key\x0ccustom-value";
    let expected = [
        ("Method", "GET"),
        ("Scheme", "https"),
        ("Path", "/index.html"),
        ("Authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    assert_eq!(decode_all(&mut d, third).unwrap(), pairs(&expected));
    assert_eq!(d.size, 164);
}

#[test]
fn rfc_7541_c4_requests_with_huffman() {
    let mut d = Decoder::default();
    let first = b"\x82\x86\x84\x41\x8c\xf1\xe3\xc2\xe5\xf2\x3a\x6b\xa0\xab\x90\xf4\xff";
    assert_eq!(
        decode_all(&mut d, first).unwrap(),
        pairs(&[
            ("Method", "GET"),
            ("Scheme", "http"),
            ("Path", "/"),
            ("Authority", "www.example.com")
        ])
    );
    let second = b"\x82\x86\x84\xbe\x58\x86\xa8\xeb\x10\x64\x9c\xbf";
    assert_eq!(
        decode_all(&mut d, second).unwrap().last(),
        Some(&("cache-control".into(), "no-cache".into()))
    );
}

#[test]
fn the_table_evicts_oldest_first_and_obeys_size_updates() {
    let mut d = Decoder::default();
    // Size update to 60: room for one 57-byte entry at a time.
    decode_all(&mut d, b"\x3f\x1d\x41\x0fwww.example.com").unwrap();
    assert_eq!((d.dynamic.len(), d.size), (1, 57));
    decode_all(&mut d, b"\x41\x0fwww.example.org").unwrap();
    assert_eq!(d.dynamic.len(), 1);
    assert_eq!(
        decode_all(&mut d, b"\xbe").unwrap(),
        pairs(&[("Authority", "www.example.org")])
    );
    assert_eq!(decode_all(&mut d, b"\xbf"), Err(HpackError::Index(63)));
    // Past the allowed size, or after a field: refused.
    assert_eq!(decode_all(&mut d, b"\x3f\xe2\x1f"), Err(HpackError::TableSize));
    assert_eq!(decode_all(&mut d, b"\x82\x20"), Err(HpackError::TableSize));
}

#[test]
fn broken_blocks_are_errors_not_panics() {
    let mut d = Decoder::default();
    for block in [
        &b"\x80"[..],
        b"\x41",
        b"\x41\x0fwww",
        b"\x7f",
        b"\x7f\xff\xff\xff\xff\xff\x01",
        b"\x41\x85\xff\xff\xff\xff\xff",
        b"\x00\x03ab",
    ] {
        assert!(decode_all(&mut d, block).is_err(), "{block:?}");
    }
}

#[test]
fn odd_names_are_kept_but_marked() {
    let mut d = Decoder::default();
    let fields = decode_all(&mut d, b"\x40\x03Abc\x01x\x40\x04:foo\x01y\x40\x01a\x01z").unwrap();
    assert_eq!(
        fields,
        pairs(&[("invalid:Abc", "x"), ("invalid::foo", "y"), ("a", "z")])
    );
    // Each went into the table all the same.
    assert_eq!(d.dynamic.len(), 3);
}

#[test]
fn encoded_heads_decode_to_what_was_written() {
    let mut block = Vec::new();
    encode_status(StatusCode::OK, &mut block);
    encode_status(StatusCode::IM_A_TEAPOT, &mut block);
    encode_header(
        &http::header::CONTENT_TYPE,
        &HeaderValue::from_static("text/plain"),
        &mut block,
    );
    let mut secret = HeaderValue::from_static("sid=1");
    secret.set_sensitive(true);
    encode_header(&http::header::SET_COOKIE, &secret, &mut block);
    let long = "v".repeat(300);
    encode_header(
        &HeaderName::from_static("x-long"),
        &HeaderValue::from_str(&long).unwrap(),
        &mut block,
    );
    encode_line(b"etag", b"\"v1\"", &mut block);
    encode_line(b"x-app", b"kept", &mut block);
    encode_length(1234, &mut block);
    encode_date(&mut block);
    assert_eq!(block[0], 0x88);
    let mut fields = decode_all(&mut Decoder::default(), &block).unwrap();
    let (name, date) = fields.pop().unwrap();
    assert_eq!(name, "date");
    assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    assert_eq!(
        fields,
        pairs(&[
            ("Status", "200"),
            ("Status", "418"),
            ("content-type", "text/plain"),
            ("set-cookie", "sid=1"),
            ("x-long", &long),
            ("etag", "\"v1\""),
            ("x-app", "kept"),
            ("content-length", "1234")
        ])
    );
}

#[test]
fn header_names_point_at_their_static_entries() {
    // Every name the lookup knows is in the table, so this reaches
    // every one of its arms.
    let mut known = 0;
    for (name, _) in &STATIC_FIELDS {
        if let Some(index) = static_name_index(name.as_bytes()) {
            assert_eq!(STATIC_FIELDS[index - 1].0, *name);
            known += 1;
        }
    }
    // Every entry but the pseudo-headers, host and transfer-encoding.
    assert_eq!(known, 45);
    assert_eq!(static_name_index(b"x-app"), None);
    assert_eq!(static_name_index(b"Content-Type"), None);
}

#[test]
fn integers_follow_rfc_7541_c1() {
    assert_eq!(integer(&[0x0a], 5), Ok((10, 1)));
    assert_eq!(integer(&[0x1f, 0x9a, 0x0a], 5), Ok((1337, 3)));
    let mut out = Vec::new();
    write_integer(&mut out, 5, 0, 1337);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
}

#[test]
fn table_entries_hold_their_own_bytes_not_the_frames() {
    // A literal with incremental indexing in a large read buffer: the entry
    // kept in the table must not point into it (it would pin the buffer).
    let literal = b"\x40\x0ax-trace-id\x0bvalue-kept1";
    let mut buffer = vec![0u8; 4096];
    buffer[..literal.len()].copy_from_slice(literal);
    let buffer = Bytes::from(buffer);
    let block = buffer.slice(..literal.len());
    let mut d = Decoder::default();
    let mut seen = Vec::new();
    d.decode(&block, |f| seen.push(f.value.as_bytes().to_vec())).unwrap();
    assert_eq!(seen, vec![b"value-kept1".to_vec()]);
    let entry = d.dynamic.front().unwrap();
    assert_eq!(entry.value.as_bytes(), b"value-kept1");
    assert!(!buffer.as_ptr_range().contains(&entry.value.as_bytes().as_ptr()));
    // And the entry still answers an indexed reference, as before.
    assert_eq!(
        decode_all(&mut d, b"\xbe").unwrap(),
        pairs(&[("x-trace-id", "value-kept1")])
    );
}
