//! The observability sections: `[access_log]`.

use crate::model::{AccessLogConfig, AccessLogFormat};
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
