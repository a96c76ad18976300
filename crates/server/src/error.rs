//! Error types: [`ServerError`] for the library's callers, [`ApiError`] for HTTP answers
//! (always an [`ErrorBody`] with one of the protocol's codes).

use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use countersign_core::model::ActionStatus;
use countersign_core::protocol::ErrorBody;

use crate::state::StoreError;

/// Everything that can go wrong starting or driving the server from Rust.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the bearer token is empty; clients could not authenticate")]
    EmptyToken,
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open state file {}: {reason}", .path.display())]
    OpenState { path: PathBuf, reason: String },
    #[error("state file {} is not a countersign-server state database ({reason}); left untouched", .path.display())]
    NotAStateFile { path: PathBuf, reason: String },
    #[error(
        "state file {} was written by a newer countersign-server (schema version {found}, this build supports up to {supported}); left untouched",
        .path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An in-process request was refused the way the HTTP API would refuse it.
    #[error("{code}: {message}")]
    Rejected {
        code: String,
        message: String,
        field: Option<String>,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// An HTTP error answer. Its [`IntoResponse`] writes the protocol's [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    Unauthorized,
    NotFound(String),
    Malformed {
        message: String,
        field: Option<String>,
    },
    TooLarge(String),
    Expired(String),
    NotPending(ActionStatus),
    Stale {
        expected: String,
        current: String,
    },
    Forbidden(String),
    Internal(String),
}

impl ApiError {
    pub(crate) fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Malformed {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Malformed { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Expired(_) => StatusCode::GONE,
            Self::NotPending(_) | Self::Stale { .. } => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        match self {
            Self::Unauthorized => ErrorBody::new(
                "unauthorized",
                "missing or wrong bearer token (send `Authorization: Bearer <token>`)",
            ),
            Self::NotFound(what) => ErrorBody::new("not_found", what.clone()),
            Self::Malformed { message, field } => {
                let mut body = ErrorBody::new("malformed", message.clone());
                body.error.field = field.clone();
                body
            }
            Self::TooLarge(message) => ErrorBody::new("too_large", message.clone()),
            Self::Expired(message) => ErrorBody::new("expired", message.clone()),
            Self::NotPending(status) => {
                let mut body = ErrorBody::new(
                    "not_pending",
                    format!("the action is {}, not pending", status.as_str()),
                );
                body.error.status = Some(status.as_str().to_owned());
                body
            }
            Self::Stale { expected, current } => {
                let mut body = ErrorBody::new(
                    "stale_snapshot",
                    "the action changed since the snapshot the decision was made on",
                );
                body.error.expected_snapshot_hash = Some(expected.clone());
                body.error.current_snapshot_hash = Some(current.clone());
                body
            }
            Self::Forbidden(message) => ErrorBody::new("forbidden", message.clone()),
            // The detail goes to the log, not to the client.
            Self::Internal(_) => ErrorBody::new("internal", "internal server error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<ApiError> for ServerError {
    fn from(e: ApiError) -> Self {
        let body = e.body().error;
        Self::Rejected {
            code: body.code,
            message: body.message,
            field: body.field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if self == Self::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"countersign\""),
            );
        }
        response
    }
}
