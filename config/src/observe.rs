//! The observability sections: `[access_log]` and `[tracing]`.

use crate::model::{AccessLogConfig, AccessLogFormat, TracingConfig};
use crate::reader::{Problems, Section};

pub(crate) fn access_log(section: Option<Section>, problems: &mut Problems) -> AccessLogConfig {
    let mut a = AccessLogConfig::default();
    let Some(mut s) = section else { return a };
    if let Some(v) = s.take("enabled", problems) {
        a.enabled = v;
    }
    if let Some(path) = s.take::<String>("path", problems) {
        if path.trim().is_empty() {
            problems.push(s.key_path("path"), "must name a file, or be \"-\" for standard output");
        } else {
            a.path = path;
        }
    }
    if let Some(format) = s.take::<String>("format", problems) {
        match format.as_str() {
            "json" => a.format = AccessLogFormat::Json,
            "combined" => a.format = AccessLogFormat::Combined,
            other => problems.push(
                s.key_path("format"),
                format!("{other:?} is not a format; use \"json\" or \"combined\""),
            ),
        }
    }
    if let Some(sample) = s.take::<f64>("sample", problems) {
        if (0.0..=1.0).contains(&sample) {
            a.sample = sample;
        } else {
            problems.push(
                s.key_path("sample"),
                format!("{sample} is not a share; write a number from 0 to 1"),
            );
        }
    }
    s.finish(problems);
    a
}

pub(crate) fn tracing(section: Option<Section>, problems: &mut Problems) -> TracingConfig {
    let mut t = TracingConfig::default();
    let Some(mut s) = section else { return t };
    let propagate = s.take::<bool>("propagate", problems);
    if let Some(endpoint) = s.take::<String>("otlp_endpoint", problems) {
        match otlp_endpoint(&endpoint) {
            Ok(()) => t.otlp_endpoint = Some(endpoint),
            Err(why) => problems.push(s.key_path("otlp_endpoint"), why),
        }
    }
    if let Some(propagate) = propagate {
        t.propagate = propagate;
        if !propagate && t.otlp_endpoint.is_some() {
            problems.push(
                s.key_path("propagate"),
                "must be true when otlp_endpoint is set: spans whose ids never reach the backend cannot be joined to its spans",
            );
        }
    }
    if let Some(ratio) = s.take::<f64>("sample_ratio", problems) {
        if (0.0..=1.0).contains(&ratio) {
            t.sample_ratio = ratio;
        } else {
            problems.push(
                s.key_path("sample_ratio"),
                format!("{ratio} is not a share; write a number from 0 to 1"),
            );
        }
    }
    s.finish(problems);
    t
}

/// An OTLP/HTTP traces URL sluice can send to: plain `http://` with a host.
fn otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let example = "write e.g. \"http://127.0.0.1:4318/v1/traces\"";
    if endpoint.starts_with("https://") {
        return Err(format!(
            "{endpoint:?}: https collectors are not supported; send to a local collector or agent over http"
        ));
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!("{endpoint:?} is not an http:// URL; {example}"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']' | '_');
    if authority.is_empty() || !authority.chars().all(fine) || rest.chars().any(char::is_whitespace) {
        return Err(format!("{endpoint:?} names no host; {example}"));
    }
    Ok(())
}
