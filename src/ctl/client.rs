//! The admin API over HTTP: one call, its answer or the server's error
//! message; the bearer token from a file or `SLUICE_TOKEN`.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::Value;

use super::args::CtlArgs;
use crate::error::AppError;

pub(super) struct Api {
    pub(super) base: String,
    pub(super) token: Option<String>,
    pub(super) client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub(super) fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Request<Full<Bytes>>, AppError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.trim_end_matches('/')));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        req.header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| AppError::Other(format!("bad admin URL {:?}: {e}", self.base)))
    }

    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, AppError> {
        let req = self.request(method, path, body)?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| AppError::Other(format!("cannot reach the admin API at {}: {e}", self.base)))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| AppError::Other(format!("admin API answer cut off: {e}")))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            Err(AppError::Other(format!("{} {message}", status.as_u16())))
        }
    }
}

pub(super) fn token(args: &CtlArgs) -> Result<Option<String>, AppError> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AppError::Other(format!("cannot read token file {}: {e}", path.display())))?;
        return clean_token(&text, &format!("the token file {}", path.display()));
    }
    match std::env::var("SLUICE_TOKEN") {
        Ok(text) => clean_token(&text, "SLUICE_TOKEN"),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(AppError::Other(
            "the token in SLUICE_TOKEN is not text: a bearer token is visible ASCII".to_owned(),
        )),
    }
}

/// The token as sent: surrounding whitespace (the newline `echo` writes) is
/// not part of it; anything else that cannot go in an Authorization header
/// is refused here, naming where the token came from, never its value.
fn clean_token(text: &str, source: &str) -> Result<Option<String>, AppError> {
    let token = text.trim();
    if token.is_empty() {
        return Ok(None);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::Other(format!(
            "the token in {source} holds a control character, a space or a non-ASCII byte: \
             a bearer token is visible ASCII"
        )));
    }
    Ok(Some(token.to_owned()))
}

/// Percent-encodes a query value (times carry `:` and `+`).
pub(super) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
