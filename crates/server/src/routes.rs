//! The HTTP API: axum router and handlers. Handlers parse and validate, then hand the
//! work to the [`Store`](crate::state::Store) on a blocking thread.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use countersign_core::model::ActionStatus;
use countersign_core::protocol::{DecisionBody, NewAction};
use countersign_core::snapshot::sha256_hex;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::{self, TokenDigest};
use crate::error::ApiError;
use crate::events;
use crate::state::{now, Store};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub(crate) struct AppState {
    pub store: Arc<Store>,
    pub token: TokenDigest,
    /// Not a `ShutdownHandle`: the router must not keep the server alive.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    pub keepalive: Duration,
    /// With `--allowed-signers`: only decisions signed by these keys are accepted.
    pub allowed_signers: Option<countersign_core::audit::AllowedSigners>,
}

pub(crate) fn router(app: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/actions", get(list_actions).post(create_action))
        .route("/v1/actions/{id}", get(get_action))
        .route("/v1/actions/{id}/decision", post(decide))
        .route("/v1/events", get(events::stream))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            auth::require_token,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.to_owned(), None)
}

async fn no_route() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    let body = countersign_core::protocol::ErrorBody::new(
        "method_not_allowed",
        "method not allowed on this route",
    );
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
}

async fn list_actions(
    State(app): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed {
        message: e.body_text(),
        field: None,
    })?;
    let status = match query.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(ActionStatus::parse(s).ok_or_else(|| {
            ApiError::malformed(
                "status",
                format!("unknown status {s:?} (pending, approved, denied, expired, cancelled, executed, failed, all)"),
            )
        })?),
    };
    let list = app
        .store
        .call(move |s| s.list(status).map_err(ApiError::from))
        .await?;
    let body = to_json(&list)?;
    Ok(with_etag(&headers, body))
}

async fn get_action(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let lookup = id.clone();
    let action = app
        .store
        .call(move |s| s.get(&lookup).map_err(ApiError::from))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no action with id {id:?}")))?;
    let body = to_json(&action)?;
    Ok(with_etag(&headers, body))
}

async fn create_action(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let new: NewAction = parse_json(&body_bytes(body)?)?;
    let (action, created) = app.store.call(move |s| s.create(new, now())).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(status, to_json(&action)?, None);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/actions/{}", action.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn decide(
    State(app): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = path_id(id)?;
    let decision: DecisionBody = parse_json(&body_bytes(body)?)?;
    validate_decision(&decision)?;
    crate::signatures::check(app.allowed_signers.as_ref(), &id, &decision)?;
    let answer = app
        .store
        .call(move |s| s.decide(&id, &decision, now()))
        .await?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    Ok(json_response(status, answer.body, None))
}

fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    id.map(|Path(id)| id).map_err(|e| ApiError::Malformed {
        message: e.body_text(),
        field: None,
    })
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body larger than {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::Malformed {
                message: e.body_text(),
                field: None,
            }
        }
    })
}

/// Checks what the types alone do not.
pub(crate) fn validate_decision(d: &DecisionBody) -> Result<(), ApiError> {
    let hash = d.snapshot_hash.as_str();
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::malformed(
            "snapshot_hash",
            "snapshot_hash must be 64 lowercase hex digits",
        ));
    }
    if d.approver.trim().is_empty() {
        return Err(ApiError::malformed(
            "approver",
            "approver must not be empty",
        ));
    }
    if d.idempotency_key.is_empty() || d.idempotency_key.len() > 256 {
        return Err(ApiError::malformed(
            "idempotency_key",
            "idempotency_key must be 1-256 bytes",
        ));
    }
    Ok(())
}

/// Parses a JSON body, naming the offending field (its JSON path) when a value is
/// wrong or missing.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| ApiError::Malformed {
        message: format!("invalid JSON: {e}"),
        field: None,
    })?;
    Ok(value)
}

fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if !inner.is_data() {
        return ApiError::Malformed {
            message: format!("invalid JSON: {inner}"),
            field: None,
        };
    }
    let message = inner.to_string();
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| {
            let rest = message.strip_prefix(prefix)?;
            rest.split_once('`').map(|(name, _)| name.to_owned())
        });
    let field = match (path.as_str(), named) {
        (".", Some(name)) => Some(name),
        (".", None) => None,
        (p, Some(name)) if !p.ends_with(&format!(".{name}")) && p != name => {
            Some(format!("{p}.{name}"))
        }
        (p, _) => Some(p.to_owned()),
    };
    let message = match &field {
        Some(f) => format!("{f}: {message}"),
        None => message,
    };
    ApiError::Malformed { message, field }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Internal(e.to_string()))
}

pub(crate) fn json_response(status: StatusCode, body: String, etag: Option<&str>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// Strong ETag of a body: its SHA-256, quoted.
pub(crate) fn etag_of(body: &str) -> String {
    format!("\"{}\"", sha256_hex(body.as_bytes()))
}

/// Whether `If-None-Match` lists `etag` (or `*`). Weak comparison, as RFC 9110
/// prescribes for `If-None-Match`.
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn with_etag(headers: &HeaderMap, body: String) -> Response {
    let etag = etag_of(&body);
    if none_match(headers, &etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert(header::ETAG, value);
        }
        return response;
    }
    json_response(StatusCode::OK, body, Some(&etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(json: &str) -> Option<String> {
        match parse_json::<DecisionBody>(json.as_bytes()) {
            Err(ApiError::Malformed { field, .. }) => field,
            other => panic!("expected malformed, got {other:?}"),
        }
    }

    const OK: &str = r#"{"verdict":"approve","reason":"","snapshot_hash":"00","decided_at":"2026-01-01T00:00:00Z","approver":"a","idempotency_key":"k"}"#;

    #[test]
    fn parse_json_names_wrong_missing_and_unknown_fields() {
        assert!(parse_json::<DecisionBody>(OK.as_bytes()).is_ok());
        assert_eq!(
            field_of(&OK.replace("\"approve\"", "\"maybe\"")).as_deref(),
            Some("verdict")
        );
        assert_eq!(
            field_of(&OK.replace("\"snapshot_hash\":\"00\",", "")).as_deref(),
            Some("snapshot_hash")
        );
        assert_eq!(
            field_of(&OK.replace("\"2026-01-01T00:00:00Z\"", "\"yesterday\"")).as_deref(),
            Some("decided_at")
        );
        assert_eq!(
            field_of(&OK.replace("\"reason\":\"\"", "\"reason\":\"\",\"extra\":1")).as_deref(),
            Some("extra")
        );
        assert_eq!(field_of("{\"verdict\":"), None);
        assert_eq!(field_of(&format!("{OK} trailing")), None);
    }

    #[test]
    fn parse_json_gives_the_full_path_of_nested_fields() {
        let json = r#"{"kind":"command","title":"t","requester":"r","details":[{"key":"k","value":"v"},{"key":"k2"}]}"#;
        match parse_json::<NewAction>(json.as_bytes()) {
            Err(ApiError::Malformed { field, .. }) => {
                assert_eq!(field.as_deref(), Some("details[1].value"))
            }
            other => panic!("{other:?}"),
        }
        let json = r#"{"kind":"command","title":"t","requester":"r","approvals_required":-1}"#;
        match parse_json::<NewAction>(json.as_bytes()) {
            Err(ApiError::Malformed { field, .. }) => {
                assert_eq!(field.as_deref(), Some("approvals_required"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn none_match_handles_lists_weak_tags_and_star() {
        let tag = etag_of("{}");
        let mut h = HeaderMap::new();
        assert!(!none_match(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{tag}")).unwrap(),
        );
        assert!(none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!none_match(&h, &tag));
    }

    #[test]
    fn validate_decision_checks_hash_approver_and_key() {
        let mut d: DecisionBody = parse_json(OK.as_bytes()).unwrap();
        let err = validate_decision(&d).unwrap_err();
        assert_eq!(
            err,
            ApiError::malformed(
                "snapshot_hash",
                "snapshot_hash must be 64 lowercase hex digits"
            )
        );
        d.snapshot_hash.0 = "a".repeat(64);
        assert!(validate_decision(&d).is_ok());
        d.approver = " ".into();
        assert!(
            matches!(validate_decision(&d), Err(ApiError::Malformed { field: Some(f), .. }) if f == "approver")
        );
    }
}
