//! API errors: `{"error": {"code", "message"}}` with the status that fits.
//! Messages say what to do; they never carry secrets or internals.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;
use sluice_routing::TableError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A JSON body axum could not take: too large (413) or not valid (400).
    pub fn bad_body(rejection: &axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                format!(
                    "request body is over the admin API's limit of {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        } else {
            Self::bad_request("bad-json", format!("request body: {}", rejection.body_text()))
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required: send `Authorization: Bearer <token>`",
        )
    }

    pub fn forbidden(role: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token's role ({role}) may only read; changes need an operator token"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut res = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
        }
        res
    }
}

impl From<TableError> for ApiError {
    fn from(e: TableError) -> Self {
        let message = e.to_string();
        match e {
            TableError::UnknownPool(_) => ApiError::bad_request("unknown-pool", message),
            TableError::WeightSum(_) | TableError::MissingPool(_) | TableError::NoPools => {
                ApiError::invalid("invalid-weights", message)
            }
            TableError::NoBackends(_) => ApiError::conflict(
                "pool-has-no-backends",
                format!("{message}; add backends first, or send \"force\": true to accept 503s for its share"),
            ),
            TableError::DuplicatePool(_) | TableError::DuplicateBackend(..) | TableError::BadBackend(_) => {
                ApiError::invalid("invalid-backends", message)
            }
            TableError::Persist(_) => ApiError::unavailable(message),
            TableError::Conflict(_) => ApiError::conflict("conflict", message),
            TableError::BackendTls(..) => ApiError::invalid("backend-tls", message),
            TableError::Fenced(_) => ApiError::conflict("contracted", message),
            TableError::PoolCarriesTraffic { .. } => ApiError::conflict("pool-carries-traffic", message),
            TableError::BackendExists(..) => ApiError::conflict("backend-exists", message),
            TableError::UnknownBackend(..) => ApiError::not_found(message),
            TableError::LastBackend(..) => ApiError::conflict("last-backend", message),
        }
    }
}
