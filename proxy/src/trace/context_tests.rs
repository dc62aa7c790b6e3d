use super::*;

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

fn noted(headers: &HeaderMap) -> Noted {
    crate::noted::note(headers, None, true)
}

fn text(value: &[u8]) -> &str {
    std::str::from_utf8(value).unwrap()
}

/// What the backend is sent, parsed.
fn sent(headers: &HeaderMap) -> Parent {
    parse(headers.get(&TRACEPARENT).unwrap().as_bytes()).unwrap()
}

#[test]
fn only_well_formed_traceparents_parse() {
    let parent = parse(GOOD.as_bytes()).unwrap();
    assert_eq!(parent.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
    assert_eq!(parent.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    assert!(parent.sampled);
    assert!(
        !parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
            .unwrap()
            .sampled
    );
    // A later version may append fields after a dash.
    assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "",
        "00",
    ] {
        assert_eq!(parse(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn without_an_exporter_a_valid_traceparent_passes_and_an_invalid_one_goes() {
    let mut trace = Trace::default();
    let mut headers = map(&[("traceparent", GOOD), ("tracestate", "a=1")]);
    trace.check(&mut headers);
    assert_eq!(headers.get(&TRACEPARENT).unwrap(), GOOD);
    assert_eq!(headers.get(&TRACESTATE).unwrap(), "a=1");
    assert_eq!(trace.trace_id_hex().map(text), Some(&GOOD[3..35]));
    assert!(!trace.recorded() && !trace.as_line);

    for bad in [
        map(&[("traceparent", "00-xyz"), ("tracestate", "a=1")]),
        map(&[("traceparent", GOOD), ("traceparent", GOOD), ("tracestate", "a=1")]),
    ] {
        let mut headers = bad;
        trace.check(&mut headers);
        assert!(headers.get(&TRACEPARENT).is_none() && headers.get(&TRACESTATE).is_none());
        assert_eq!(trace.trace_id_hex(), None);
    }
}

#[test]
fn sluice_joins_a_callers_trace_as_its_child() {
    let mut trace = Trace::default();
    let mut headers = map(&[("traceparent", GOOD), ("tracestate", "a=1")]);
    let n = noted(&headers);
    trace.join_or_start(&mut headers, 0, &n);
    let caller = parse(GOOD.as_bytes()).unwrap();
    let to_backend = sent(&headers);
    assert_eq!(to_backend.trace_id, caller.trace_id);
    assert_ne!(
        to_backend.span_id, caller.span_id,
        "the backend's parent is sluice's span"
    );
    assert_eq!(parse(trace.value()), Some(to_backend));
    assert_eq!(trace.parent, caller.span_id);
    assert!(
        to_backend.sampled && trace.recorded(),
        "the caller's sampled flag is followed"
    );
    assert_eq!(headers.get(&TRACESTATE).unwrap(), "a=1", "tracestate goes on unchanged");
    assert!(!trace.as_line);

    let mut unsampled = map(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
    let n = noted(&unsampled);
    trace.join_or_start(&mut unsampled, u64::MAX, &n);
    assert!(!trace.recorded(), "a caller's unsampled trace stays unsampled");
    assert!(!sent(&unsampled).sampled);
}

#[test]
fn sluice_starts_a_trace_for_a_request_without_a_valid_one() {
    let mut trace = Trace::default();
    let mut invalid = map(&[("traceparent", "junk"), ("tracestate", "a=1")]);
    let n = noted(&invalid);
    trace.join_or_start(&mut invalid, 1 << 63, &n);
    assert_eq!(parse(trace.value()), Some(sent(&invalid)));
    assert_eq!(trace.parent, [0; 8]);
    assert!(trace.recorded(), "ratio 1 samples every trace");
    assert!(
        invalid.get(&TRACESTATE).is_none(),
        "a new trace keeps no caller's tracestate"
    );

    let mut absent = map(&[("tracestate", "a=1")]);
    let n = noted(&absent);
    trace.join_or_start(&mut absent, 0, &n);
    assert!(trace.as_line && !trace.recorded(), "ratio 0 samples none");
    assert!(
        absent.is_empty(),
        "sluice's traceparent goes as a line, the stray tracestate is gone"
    );
    let value = text(trace.value());
    assert!(value.starts_with("00-") && value.ends_with("-00"), "{value}");
    assert!(parse(trace.value()).is_some(), "{value}");
    assert_eq!(trace.trace_id_hex().map(text), Some(&value[3..35]));
}

#[test]
fn new_ids_are_random_hex_and_a_ratio_samples_about_its_share() {
    let mut trace = Trace::default();
    let threshold = (0.25 * (1u64 << 63) as f64) as u64;
    let mut seen = std::collections::HashSet::new();
    let mut digits = [0usize; 16];
    let mut sampled = 0;
    for _ in 0..20_000 {
        trace.join_or_start(&mut HeaderMap::new(), threshold, &Noted::default());
        let value = *trace.value();
        assert!(parse(&value).is_some(), "{}", text(&value));
        for &c in &value[3..35] {
            digits[usize::from(if c.is_ascii_digit() { c - b'0' } else { c - b'a' + 10 })] += 1;
        }
        assert!(seen.insert(value[3..52].to_vec()), "ids repeat");
        sampled += usize::from(trace.recorded());
    }
    assert!((4_000..6_000).contains(&sampled), "{sampled} of 20,000 at 0.25");
    // 640,000 digits: each of the 16 about 40,000 times.
    assert!(digits.iter().all(|&n| (38_000..42_000).contains(&n)), "{digits:?}");
}
