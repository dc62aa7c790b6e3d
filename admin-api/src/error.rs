//! API errors: `{"error": {"code", "message"}}` with the status that fits.
//! Messages say what to do; they never carry secrets or internals.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use sluice_routing::TableError;

/// The machine-readable reason in every error body (`error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BackendExists,
    BackendTls,
    BadJson,
    BadQuery,
    BodyTooLarge,
    Conflict,
    Contracted,
    Forbidden,
    InvalidBackends,
    InvalidMatch,
    InvalidRollout,
    InvalidVersion,
    InvalidWeights,
    LastBackend,
    LeaderUnreachable,
    NotFound,
    NotLeader,
    NothingToChange,
    NothingToRollBack,
    PoolCarriesTraffic,
    PoolHasNoBackends,
    RolloutRunning,
    StoreUnavailable,
    Unauthorized,
    UnknownPool,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackendExists => "backend-exists",
            Self::BackendTls => "backend-tls",
            Self::BadJson => "bad-json",
            Self::BadQuery => "bad-query",
            Self::BodyTooLarge => "body-too-large",
            Self::Conflict => "conflict",
            Self::Contracted => "contracted",
            Self::Forbidden => "forbidden",
            Self::InvalidBackends => "invalid-backends",
            Self::InvalidMatch => "invalid-match",
            Self::InvalidRollout => "invalid-rollout",
            Self::InvalidVersion => "invalid-version",
            Self::InvalidWeights => "invalid-weights",
            Self::LastBackend => "last-backend",
            Self::LeaderUnreachable => "leader-unreachable",
            Self::NotFound => "not-found",
            Self::NotLeader => "not-leader",
            Self::NothingToChange => "nothing-to-change",
            Self::NothingToRollBack => "nothing-to-roll-back",
            Self::PoolCarriesTraffic => "pool-carries-traffic",
            Self::PoolHasNoBackends => "pool-has-no-backends",
            Self::RolloutRunning => "rollout-running",
            Self::StoreUnavailable => "store-unavailable",
            Self::Unauthorized => "unauthorized",
            Self::UnknownPool => "unknown-pool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A JSON body axum could not take: too large (413) or not valid (400).
    pub fn bad_body(rejection: &axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!(
                    "request body is over the admin API's limit of {} bytes",
                    crate::MAX_BODY_BYTES
                ),
            )
        } else {
            Self::bad_request(ErrorCode::BadJson, format!("request body: {}", rejection.body_text()))
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn invalid(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid bearer token is required: send `Authorization: Bearer <token>`",
        )
    }

    pub fn forbidden(role: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!("this token's role ({role}) may only read; changes need an operator token"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(sluice_api::ErrorBody {
            error: sluice_api::ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
            },
        });
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
            TableError::UnknownPool(_) => ApiError::bad_request(ErrorCode::UnknownPool, message),
            TableError::WeightSum(_) | TableError::MissingPool(_) | TableError::NoPools => {
                ApiError::invalid(ErrorCode::InvalidWeights, message)
            }
            TableError::NoBackends(_) => ApiError::conflict(
                ErrorCode::PoolHasNoBackends,
                format!("{message}; add backends first, or send \"force\": true to accept 503s for its share"),
            ),
            TableError::DuplicatePool(_) | TableError::DuplicateBackend(..) | TableError::BadBackend(_) => {
                ApiError::invalid(ErrorCode::InvalidBackends, message)
            }
            TableError::Persist(_) => ApiError::unavailable(message),
            TableError::Conflict(_) => ApiError::conflict(ErrorCode::Conflict, message),
            TableError::BackendTls(..) => ApiError::invalid(ErrorCode::BackendTls, message),
            TableError::Fenced(_) => ApiError::conflict(ErrorCode::Contracted, message),
            TableError::PoolCarriesTraffic { .. } => ApiError::conflict(ErrorCode::PoolCarriesTraffic, message),
            TableError::BackendExists(..) => ApiError::conflict(ErrorCode::BackendExists, message),
            TableError::UnknownBackend(..) => ApiError::not_found(message),
            TableError::LastBackend(..) => ApiError::conflict(ErrorCode::LastBackend, message),
        }
    }
}

/// A query string that does not parse (every route with query parameters).
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::bad_request(ErrorCode::BadQuery, e.body_text())
    }
}
