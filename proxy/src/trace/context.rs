//! W3C trace context (`traceparent`, `tracestate`; Trace Context level 1)
//! as one request carries it: read from the client's header, and what
//! goes to the backend.
//!
//! With an exporter, sluice is a participant: its span is the parent the
//! backend sees, a caller's trace id and sampled flag are kept, and a
//! request without a valid `traceparent` starts a new trace (sampled by
//! `sample_ratio`; the decision is carried in the sampled flag, so the
//! backend follows it). Without one, a valid `traceparent` passes
//! unchanged and an invalid one is removed, with its `tracestate`.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use crate::ids::random_u64s;
use crate::noted::Noted;
pub(crate) use crate::noted::{TRACEPARENT, TRACESTATE};

/// `00-` 32 hex `-` 16 hex `-` 2 hex.
pub(crate) const VALUE: usize = 55;

/// What a valid `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) sampled: bool,
}

/// One request's trace context, kept in the connection's scratch. Held
/// as the `traceparent` text itself: sluice's own is made as hex digits
/// straight from random bits (no binary id turned into hex per request);
/// the exporter reads the binary ids back from it for the few it records.
#[derive(Debug, Clone, Copy)]
pub struct Trace {
    state: State,
    /// The sampled flag sent on (or the caller's, when only checked).
    pub(crate) sampled: bool,
    /// sluice's `traceparent` is not in the request's header map (it had
    /// none): it is written as one more line, or put in the map by the
    /// paths that send from maps.
    pub(crate) as_line: bool,
    /// The caller's span (all zero: sluice started the trace).
    pub(crate) parent: [u8; 8],
    /// `00-<trace id>-<span id>-<flags>`: sluice's (`State::Own`) or the
    /// caller's first 55 characters (`State::Caller`); unread otherwise.
    value: [u8; VALUE],
}

/// A request's trace context as the connection's scratch keeps it: boxed,
/// made the first time a request needs one and reused after. (The scratch
/// rides in every HTTP/2 stream's future: 72 more bytes inline took that
/// future past 4 KiB, where glibc's memcpy changes method, and callgrind
/// counted +4% instructions a request on h2c.)
#[derive(Debug, Default)]
pub struct TraceSlot(Option<Box<Trace>>);

impl TraceSlot {
    /// The request's context, when it is in a trace.
    pub(crate) fn get(&self) -> Option<&Trace> {
        self.0.as_deref().filter(|t| t.state != State::None)
    }

    /// sluice's `traceparent`, when it goes as a line of its own.
    pub(crate) fn line(&self) -> Option<&[u8; VALUE]> {
        self.get().filter(|t| t.as_line).map(Trace::value)
    }

    pub(crate) fn clear(&mut self) {
        if let Some(trace) = &mut self.0 {
            trace.clear();
        }
    }

    /// The context to fill in, made on first use.
    pub(crate) fn make(&mut self) -> &mut Trace {
        self.0.get_or_insert_with(Box::default)
    }

    /// Lets go of the box (an idle connection).
    pub(crate) fn release(&mut self) {
        self.0 = None;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In no trace (or not looked at).
    None,
    /// A caller's valid trace context went on unchanged.
    Caller,
    /// sluice's span is in the trace, the backend's parent.
    Own,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            state: State::None,
            sampled: false,
            as_line: false,
            parent: [0; 8],
            value: [b'-'; VALUE],
        }
    }
}

impl Trace {
    /// No trace (the value's bytes are left as they are: unread).
    pub(crate) fn clear(&mut self) {
        self.state = State::None;
        self.sampled = false;
        self.as_line = false;
    }

    /// The trace id as 32 hex digits, if the request is in a trace.
    pub(crate) fn trace_id_hex(&self) -> Option<&[u8]> {
        match self.state {
            State::None => None,
            State::Caller | State::Own => self.value.get(3..35),
        }
    }

    /// Whether sluice records a span for this request.
    pub(crate) fn recorded(&self) -> bool {
        self.sampled && self.state == State::Own
    }

    /// A caller's valid `traceparent`, noted (its trace id is logged).
    pub(crate) fn note_caller(&mut self, traceparent: &[u8]) -> Option<Parent> {
        let parent = parse(traceparent)?;
        self.value.copy_from_slice(traceparent.get(..VALUE)?);
        self.state = State::Caller;
        self.sampled = parent.sampled;
        Some(parent)
    }

    /// Without an exporter: a single valid `traceparent` is kept as it
    /// is; an invalid one (or several) is removed with its `tracestate`.
    pub(crate) fn check(&mut self, headers: &mut HeaderMap) {
        self.clear();
        let Some(found) = single(headers) else { return };
        if found.and_then(|v| self.note_caller(v.as_bytes())).is_none() {
            headers.remove(&TRACEPARENT);
            headers.remove(&TRACESTATE);
        }
    }

    /// With an exporter: sluice's span joins the caller's trace, or starts
    /// one (sampled when its random bits fall under `threshold`); the
    /// backend is sent sluice's span as its parent.
    pub(crate) fn join_or_start(&mut self, headers: &mut HeaderMap, threshold: u64, noted: &Noted) {
        let found = if noted.traceparent { single(headers) } else { None };
        let joined = found.flatten().and_then(|v| self.note_caller(v.as_bytes()));
        let [span, high, low] = random_u64s::<3>();
        let (span, _) = hex16(span);
        match joined {
            Some(parent) => self.parent = parent.span_id,
            None => {
                let (high, _) = hex16(high);
                let (low, bits) = hex16(low);
                self.value[3..19].copy_from_slice(&high);
                self.value[19..35].copy_from_slice(&low);
                self.parent = [0; 8];
                self.sampled = (bits >> 1) < threshold;
            }
        }
        self.value[..3].copy_from_slice(b"00-");
        self.value[35] = b'-';
        self.value[36..52].copy_from_slice(&span);
        self.value[52] = b'-';
        self.value[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        self.state = State::Own;
        self.as_line = found.is_none();
        if found.is_some() {
            // A caller's (valid or not) is replaced in place; a new trace
            // keeps no caller's tracestate.
            if joined.is_none() {
                headers.remove(&TRACESTATE);
            }
            if let Some(value) = self.header_value() {
                headers.insert(&TRACEPARENT, value);
            }
        } else if noted.tracestate {
            headers.remove(&TRACESTATE);
        }
    }

    /// The `traceparent` value: sluice's when it takes part.
    pub(crate) fn value(&self) -> &[u8; VALUE] {
        &self.value
    }

    /// The value as a header value, for header maps; sensitive, as a
    /// request id is ([`crate::request_id::RequestId::value`]): a value
    /// that never repeats stays out of HPACK's dynamic table.
    pub(crate) fn header_value(&self) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(&self.value)).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

/// 64 random bits as 16 lower-case hex digits (never all zero) and the
/// bits behind them: 4 bits a digit, each byte's low nibble one digit and
/// its high nibble another, so a draw makes all 16 with a few word-wide
/// operations. (Not the bits' hex form: the ids are just random.)
#[inline]
fn hex16(bits: u64) -> ([u8; 16], u64) {
    let bits = bits.max(1);
    let digits = |x: u64| {
        // Each byte n (0–15): '0' + n, and 39 more for the letters.
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (x + 0x3030_3030_3030_3030 + letters * 39).to_le_bytes()
    };
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&digits(bits & 0x0F0F_0F0F_0F0F_0F0F));
    out[8..].copy_from_slice(&digits((bits >> 4) & 0x0F0F_0F0F_0F0F_0F0F));
    (out, bits)
}

/// `None`: no `traceparent`; `Some(None)`: more than one (invalid);
/// `Some(Some(v))`: exactly one.
fn single(headers: &HeaderMap) -> Option<Option<&HeaderValue>> {
    let mut all = headers.get_all(&TRACEPARENT).iter();
    let first = all.next()?;
    Some(all.next().is_none().then_some(first))
}

/// A well-formed `traceparent`: version 00 exactly, or a later version
/// read as 00 (its first 55 characters, then only a `-` and more); ids not
/// all zero; lower-case hex.
pub(crate) fn parse(b: &[u8]) -> Option<Parent> {
    let (version, rest) = b.split_at_checked(2)?;
    let valid = hex(version)
        && version != b"ff"
        && (rest.len() == 53 || (version != b"00" && rest.get(53) == Some(&b'-')))
        && rest.first() == Some(&b'-')
        && rest.get(33) == Some(&b'-')
        && rest.get(50) == Some(&b'-');
    if !valid {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut span_id = [0u8; 8];
    unhex(rest.get(1..33)?, &mut trace_id)?;
    unhex(rest.get(34..50)?, &mut span_id)?;
    let mut flags = [0u8; 1];
    unhex(rest.get(51..53)?, &mut flags)?;
    (trace_id != [0; 16] && span_id != [0; 8]).then_some(Parent {
        trace_id,
        span_id,
        sampled: flags[0] & 1 == 1,
    })
}

fn hex(s: &[u8]) -> bool {
    s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lower-case hex digits into bytes; `None` on anything else.
fn unhex(digits: &[u8], out: &mut [u8]) -> Option<()> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *byte = nibble(*hi)? << 4 | nibble(*lo)?;
    }
    Some(())
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
