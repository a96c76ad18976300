//! Bounded HTTP for backends: every request has a deadline, every body a size cap,
//! and every JSON error names the field.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::{BackendError, Limits};

pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A base URL without its trailing slash; only http(s).
pub(crate) fn base_url(backend: &str, url: &str) -> Result<String, super::BuildError> {
    let base = url.trim().trim_end_matches('/').to_owned();
    if base.starts_with("http://") || base.starts_with("https://") {
        Ok(base)
    } else {
        Err(super::BuildError::Invalid {
            name: backend.to_owned(),
            detail: format!("url `{url}` must start with http:// or https://"),
        })
    }
}

/// Refuses `[backend.options]` keys this kind does not read (a typo is not ignored).
pub(crate) fn known_options(
    backend: &str,
    kind: &str,
    options: &toml::Table,
    known: &[&str],
) -> Result<(), super::BuildError> {
    match options.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(super::BuildError::Invalid {
            name: backend.to_owned(),
            detail: format!(
                "unknown option `{key}` for kind {kind} (known: {})",
                known.join(", ")
            ),
        }),
    }
}

/// A string `[backend.options]` value; `None` when absent, an error naming the key when
/// it is not a string.
pub(crate) fn string_option(
    backend: &str,
    options: &toml::Table,
    key: &str,
) -> Result<Option<String>, super::BuildError> {
    match options.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(super::BuildError::Invalid {
            name: backend.to_owned(),
            detail: format!("option `{key}` must be a string"),
        }),
    }
}

/// Adds `Authorization: Bearer …` when there is a token.
pub(crate) fn bearer(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

pub(crate) fn client(limits: &Limits) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(limits.connect_timeout)
        // Event streams have no overall deadline; they are bounded by idle time instead.
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

pub(crate) fn transport_error(url: &str, limits: &Limits, e: &reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout {
            url: url.to_owned(),
            secs: limits.request_timeout.as_secs(),
        }
    } else {
        // reqwest's Display hides the cause ("error sending request"); the chain says why.
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            detail = format!("{detail}: {s}");
            source = s.source();
        }
        BackendError::Unreachable {
            url: url.to_owned(),
            detail,
        }
    }
}

/// Sends a request and reads the whole body, within the request deadline and the size cap.
pub(crate) async fn send(
    url: &str,
    limits: &Limits,
    request: RequestBuilder,
) -> Result<Answer, BackendError> {
    let work = async {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(url, limits, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(len) = response.content_length() {
            if len > limits.max_body_bytes as u64 {
                return Err(BackendError::TooLarge {
                    url: url.to_owned(),
                    limit: limits.max_body_bytes,
                });
            }
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport_error(url, limits, &e))?;
            if body.len() + chunk.len() > limits.max_body_bytes {
                return Err(BackendError::TooLarge {
                    url: url.to_owned(),
                    limit: limits.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    };
    tokio::time::timeout(limits.request_timeout, work)
        .await
        .map_err(|_| BackendError::Timeout {
            url: url.to_owned(),
            secs: limits.request_timeout.as_secs(),
        })?
}

/// Decodes JSON, naming the path of the first field that does not fit.
///
/// Plain serde first: tracking the path of every value cost a tenth of a large sync
/// (profiled). Only a body that fails is decoded again, with the path tracked, to name
/// the field; `serde_path_to_error` wraps the same deserializer, so both runs accept
/// and refuse exactly the same bodies.
pub(crate) fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, BackendError> {
    // Like the tracked run below, trailing bytes after the value are not checked.
    if let Ok(value) = T::deserialize(&mut serde_json::Deserializer::from_slice(body)) {
        return Ok(value);
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        BackendError::Malformed {
            url: url.to_owned(),
            field: if path == "." { "(body)".into() } else { path },
            detail: e.into_inner().to_string(),
        }
    })
}

/// `Retry-After`: delay-seconds, or an HTTP-date (RFC 9110 §10.2.3; proxies and CDNs
/// send that form), read against the clock now: a header is read as it arrives.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, chrono::Utc::now())
}

/// [`retry_after`] at `now`: a date in the past is no wait; an unreadable value is absent.
fn retry_after_at(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822 syntax with the GMT zone.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Maps the statuses every backend treats alike; `None` leaves the answer to the caller.
pub(crate) fn common_error(url: &str, answer: &Answer) -> Option<BackendError> {
    let status = answer.status;
    if status == StatusCode::UNAUTHORIZED {
        return Some(BackendError::Unauthorized {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after(&answer.headers).is_some())
    {
        return Some(BackendError::RateLimited {
            url: url.to_owned(),
            retry_after: retry_after(&answer.headers).unwrap_or(Duration::from_secs(60)),
        });
    }
    if status.is_server_error() {
        return Some(BackendError::Http {
            url: url.to_owned(),
            status: status.as_u16(),
            message: snippet(&answer.body),
        });
    }
    None
}

/// A non-2xx answer that [`common_error`] leaves to the backend: 404 → `NotFound`,
/// anything else → `Http`, with `message` read from the body as that backend words it.
pub(crate) fn status_error(url: &str, answer: &Answer, message: String) -> BackendError {
    if answer.status == StatusCode::NOT_FOUND {
        return BackendError::NotFound(format!("{url}: {message}"));
    }
    BackendError::Http {
        url: url.to_owned(),
        status: answer.status.as_u16(),
        message,
    }
}

/// The top-level `field` of a JSON error body (`{"message": …}`, `{"detail": …}`), or
/// the start of the body when it has none.
pub(crate) fn message_field(body: &[u8], field: &str) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => match m.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => snippet(body),
        },
        _ => snippet(body),
    }
}

/// Percent-encodes an id for use as one path segment.
pub(crate) fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of a body, as text, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T17:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .expect("a valid instant");
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                reqwest::header::RETRY_AFTER,
                value.parse().expect("a header value"),
            );
            retry_after_at(&headers, now)
        };
        assert_eq!(with("120"), Some(Duration::from_secs(120)));
        assert_eq!(with(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            with("Wed, 25 Nov 2026 17:01:30 GMT"),
            Some(Duration::from_secs(90))
        );
        // Already past: retry now, not never.
        assert_eq!(with("Wed, 25 Nov 2026 16:59:00 GMT"), Some(Duration::ZERO));
        assert_eq!(with("soon"), None);
        assert_eq!(with("-5"), None);
        assert_eq!(retry_after_at(&HeaderMap::new(), now), None);
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(path_segment("a/b c?d"), "a%2Fb%20c%3Fd");
        assert_eq!(path_segment("act_01-x.y~z"), "act_01-x.y~z");
    }

    #[test]
    fn error_bodies_give_their_message_or_their_start() {
        assert_eq!(
            message_field(br#"{"message":"access denied"}"#, "message"),
            "access denied"
        );
        assert_eq!(message_field(br#"{"detail":[1]}"#, "detail"), "[1]");
        assert_eq!(
            message_field(b"<html>oops</html>", "message"),
            "<html>oops</html>"
        );
    }
}
