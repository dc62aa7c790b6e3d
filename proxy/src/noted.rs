//! One pass over a request's header names for the few sluice reads before
//! it routes: the request id's header and W3C trace context. Comparing
//! names is cheaper than hashing each for a lookup, for the few headers
//! requests carry (callgrind: a `traceparent` lookup alone was ~200
//! instructions a request).

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What the pass found.
#[derive(Debug, Default)]
pub(crate) struct Noted {
    /// The last value in the id header, and how many there were.
    pub(crate) id: Option<HeaderValue>,
    pub(crate) ids: u32,
    pub(crate) traceparent: bool,
    pub(crate) tracestate: bool,
}

/// Looks for `id` (when ids are on) and, when `trace`, the trace context.
#[inline]
pub(crate) fn note(headers: &HeaderMap, id: Option<&HeaderName>, trace: bool) -> Noted {
    let mut noted = Noted::default();
    let mut found = None;
    for (name, value) in headers {
        if id.is_some_and(|id| name == id) {
            found = Some(value);
            noted.ids += 1;
        } else if trace && name == TRACEPARENT {
            noted.traceparent = true;
        } else if trace && name == TRACESTATE {
            noted.tracestate = true;
        }
    }
    noted.id = found.cloned();
    noted
}
