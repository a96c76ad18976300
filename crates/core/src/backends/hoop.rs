//! hoop.dev reviews (kind `hoop`). hoop has no event stream and no idempotency key:
//! reviews are polled (`GET /api/reviews`, filtered to PENDING here), each enriched from
//! its session, and a decision is a `PUT /api/reviews/{id}` made only after re-reading
//! the review, so a retried delivery never applies twice.
//!
//! API facts from hoophq/hoop (commit e939597dc425d78dbd146d98fad21b7171ccaaf5):
//! routes in gateway/api/server.go, handlers and the approval rule in
//! gateway/api/review/review.go, wire types in gateway/api/openapi/types.go
//! (`Review`, `ReviewGroup`, `ReviewOwner`, `ReviewRequest`, `Session`), the web review
//! page in webapp/src/webapp/routes.cljs (`/reviews/:review-id`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, Answer};
use super::{
    Backend, BackendError, BuildError, Capabilities, DecisionDelivery, DeliveryOutcome, Limits,
    ListOutcome, SyncCursor,
};
use crate::config::BackendConfig;
use crate::model::{
    ActionKey, ActionKind, ActionSnapshot, ActionStatus, Decision, Detail, EventSource,
    PendingAction, RemoteAction, Review, ReviewVerdict, TimelineEvent, TimelineKind, Verdict,
};

pub const KIND: &str = "hoop";

/// Settings read from `[backends.options]`.
const OPTIONS: &[&str] = &["web_url", "reviewer_email"];

pub struct Hoop {
    name: String,
    base: String,
    web_base: String,
    token: Option<String>,
    limits: Limits,
    client: reqwest::Client,
    /// The hoop account the token belongs to; from `reviewer_email` or `/api/userinfo`.
    me: Mutex<Option<String>>,
}

impl Hoop {
    pub fn new(
        config: &BackendConfig,
        token: Option<String>,
        limits: Limits,
    ) -> Result<Self, BuildError> {
        let invalid = |detail: String| BuildError::Invalid {
            name: config.name.clone(),
            detail,
        };
        let base = http::base_url(&config.name, &config.url)?;
        http::known_options(&config.name, KIND, &config.options, OPTIONS)?;
        let string_option = |key: &str| http::string_option(&config.name, &config.options, key);
        let web_base = string_option("web_url")?
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| base.clone());
        let me = string_option("reviewer_email")?;
        let client = http::client(&limits).map_err(invalid)?;
        Ok(Self {
            name: config.name.clone(),
            base,
            web_base,
            token,
            limits,
            client,
            me: Mutex::new(me),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api{path}", self.base)
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        http::bearer(request, self.token.as_deref())
    }

    fn error(&self, url: &str, answer: &Answer) -> BackendError {
        if let Some(e) = http::common_error(url, answer) {
            return e;
        }
        http::status_error(url, answer, hoop_message(&answer.body))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, BackendError> {
        let answer = http::send(url, &self.limits, self.authorized(self.client.get(url))).await?;
        if !answer.status.is_success() {
            return Err(self.error(url, &answer));
        }
        http::decode(url, &answer.body)
    }

    async fn review(&self, id: &str) -> Result<HoopReview, BackendError> {
        self.get_json(&self.url(&format!("/reviews/{}", http::path_segment(id))))
            .await
    }

    async fn session(&self, id: &str) -> Result<HoopSession, BackendError> {
        self.get_json(&self.url(&format!("/sessions/{}", http::path_segment(id))))
            .await
    }

    async fn enrich(&self, review: HoopReview) -> Result<RemoteAction, BackendError> {
        // A review whose session is gone still shows (requester and script unknown)
        // rather than failing the whole list.
        let session = match self.session(&review.session).await {
            Err(BackendError::NotFound(_)) => HoopSession::default(),
            other => other?,
        };
        Ok(to_remote(&self.name, &self.web_base, &review, &session))
    }

    /// The email of the hoop user behind the token, asked once.
    async fn me(&self) -> Result<String, BackendError> {
        if let Some(me) = self.me.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(me);
        }
        let info: UserInfo = self.get_json(&self.url("/userinfo")).await?;
        *self.me.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.email.clone());
        Ok(info.email)
    }
}

#[async_trait]
impl Backend for Hoop {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            list: true,
            fetch: true,
            decide: true,
            subscribe: false,
        }
    }

    async fn list_pending(&self, _cursor: &SyncCursor) -> Result<ListOutcome, BackendError> {
        // Every review of the org, no filter, no paging (review.go `List`).
        let url = self.url("/reviews");
        let raw: Vec<serde_json::Value> = self.get_json(&url).await?;
        let mut actions = Vec::new();
        for (i, value) in raw.iter().enumerate() {
            // Skip other statuses unread, but a status that is not a string is not
            // "not pending": it is a review we cannot read, and must not vanish silently.
            match value.get("status") {
                Some(serde_json::Value::String(s)) if s == STATUS_PENDING => {}
                Some(serde_json::Value::String(_)) => continue,
                _ => {
                    return Err(BackendError::Malformed {
                        url: url.clone(),
                        field: format!("[{i}].status"),
                        detail: "expected a string".into(),
                    })
                }
            }
            let review: HoopReview = decode_value(&url, &format!("[{i}]"), value)?;
            actions.push(self.enrich(review).await?);
        }
        Ok(ListOutcome::Listed {
            actions,
            etag: None,
            cursor: None,
        })
    }

    async fn fetch(&self, external_id: &str) -> Result<RemoteAction, BackendError> {
        let review = self.review(external_id).await?;
        self.enrich(review).await
    }

    async fn decide(&self, delivery: &DecisionDelivery) -> Result<DeliveryOutcome, BackendError> {
        let d = &delivery.decision;
        let id = &d.action.external_id;
        let me = self.me().await?;
        let target = match d.verdict {
            Verdict::Approve => STATUS_APPROVED,
            Verdict::Deny => STATUS_REJECTED,
            // hoop reviews have no options; the engine refuses `choose` before this.
            Verdict::Choose => return Ok(choose_refused()),
        };
        // No idempotency key at hoop: look before writing, so a retry after a lost answer
        // finds its own review recorded and does not apply it again.
        let current = self.review(id).await?;
        if recorded_by(&current, &me, target) {
            let action = self.enrich(current).await.ok().map(Box::new);
            return Ok(DeliveryOutcome::Delivered { action });
        }
        if current.status != STATUS_PENDING {
            return Ok(DeliveryOutcome::NotPending {
                status: map_status(&current.status).as_str().to_owned(),
            });
        }
        let url = self.url(&format!("/reviews/{}", http::path_segment(id)));
        let body = match d.verdict {
            Verdict::Approve | Verdict::Choose => serde_json::json!({ "status": target }),
            Verdict::Deny => serde_json::json!({
                "status": target,
                "rejection_reason": rejection_reason(d),
            }),
        };
        let request = self.authorized(self.client.put(&url)).json(&body);
        let answer = http::send(&url, &self.limits, request).await?;
        if answer.status.is_success() {
            let updated: HoopReview = http::decode(&url, &answer.body)?;
            // Delivered either way; the state after is a courtesy the next poll repeats.
            let action = self.enrich(updated).await.ok().map(Box::new);
            return Ok(DeliveryOutcome::Delivered { action });
        }
        match answer.status {
            StatusCode::BAD_REQUEST => Ok(DeliveryOutcome::Rejected {
                reason: refusal(&hoop_message(&answer.body)),
            }),
            StatusCode::FORBIDDEN => Ok(DeliveryOutcome::Rejected {
                reason: format!("not allowed: {}", hoop_message(&answer.body)),
            }),
            _ => Err(self.error(&url, &answer)),
        }
    }
}

const STATUS_PENDING: &str = "PENDING";
const STATUS_APPROVED: &str = "APPROVED";
const STATUS_REJECTED: &str = "REJECTED";

/// gateway/api/openapi/types.go `Review` (decoded leniently; the strict mirror lives in
/// tests/backend_hoop.rs).
#[derive(Debug, Clone, Deserialize)]
struct HoopReview {
    id: String,
    session: String,
    #[serde(rename = "type", default)]
    kind: String,
    /// Nanoseconds (Go `time.Duration`).
    #[serde(default)]
    access_duration: i64,
    status: String,
    #[serde(default)]
    revoke_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    #[serde(default)]
    review_groups_data: Option<Vec<HoopGroup>>,
    #[serde(default)]
    time_window: Option<TimeWindow>,
    #[serde(default)]
    access_request_rule_name: Option<String>,
    #[serde(default)]
    min_approvals: Option<i64>,
    #[serde(default)]
    force_approval_groups: Option<Vec<String>>,
    #[serde(default)]
    rejection_reason: Option<String>,
}

impl HoopReview {
    fn groups(&self) -> &[HoopGroup] {
        self.review_groups_data.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct HoopGroup {
    id: String,
    group: String,
    status: String,
    #[serde(default)]
    reviewed_by: Option<Owner>,
    #[serde(default)]
    review_date: Option<DateTime<Utc>>,
    #[serde(default)]
    forced_review: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Owner {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TimeWindow {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    configuration: Option<BTreeMap<String, String>>,
}

/// The parts of types.go `Session` a reviewer needs.
#[derive(Debug, Clone, Default, Deserialize)]
struct HoopSession {
    #[serde(default)]
    user: String,
    #[serde(default)]
    user_name: String,
    #[serde(default)]
    connection: String,
    #[serde(default)]
    connection_subtype: String,
    #[serde(default)]
    verb: String,
    /// `SessionScriptType` is `map[string]string`; the input is under `data`.
    #[serde(default)]
    script: Option<BTreeMap<String, String>>,
}

impl HoopSession {
    fn script(&self) -> &str {
        self.script
            .as_ref()
            .and_then(|s| s.get("data"))
            .map_or("", String::as_str)
    }
}

#[derive(Deserialize)]
struct UserInfo {
    email: String,
}

/// hoop's error body is `{"message": "…"}` (gin.H in review.go).
fn hoop_message(body: &[u8]) -> String {
    http::message_field(body, "message")
}

/// Names hoop's 400 answers (review.go `ErrSelfApproval`, `ErrNotEligible`,
/// `ErrWrongState`) while keeping hoop's own words.
fn refusal(message: &str) -> String {
    let label = match message {
        "unable to self approve review" => "self-approval",
        "not eligible for review" => "not eligible",
        "review is in wrong state" => "wrong state",
        _ => return format!("refused: {message}"),
    };
    format!("{label}: {message}")
}

/// Decodes one list element, naming the bad field with its index.
fn decode_value<T: serde::de::DeserializeOwned>(
    url: &str,
    prefix: &str,
    value: &serde_json::Value,
) -> Result<T, BackendError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        BackendError::Malformed {
            url: url.to_owned(),
            field: if path == "." {
                prefix.to_owned()
            } else {
                format!("{prefix}.{path}")
            },
            detail: e.into_inner().to_string(),
        }
    })
}

/// hoop review status → ours.
fn map_status(status: &str) -> ActionStatus {
    match status {
        "PENDING" => ActionStatus::Pending,
        "APPROVED" => ActionStatus::Approved,
        "REJECTED" => ActionStatus::Denied,
        "REVOKED" => ActionStatus::Cancelled,
        "PROCESSING" | "EXECUTED" => ActionStatus::Executed,
        _ => ActionStatus::Failed,
    }
}

/// Approvals hoop needs (review.go `doIndividualReview`): every group, or fewer when an
/// access request rule sets `min_approvals`. (Without a rule hoop uses the connection's
/// `min_review_approvals`, which the review API does not expose: all groups then.)
fn approvals_required(review: &HoopReview) -> u32 {
    let groups = review.groups().len() as i64;
    let needed = match (&review.access_request_rule_name, review.min_approvals) {
        (Some(_), Some(min)) => groups.min(min),
        _ => groups,
    };
    u32::try_from(needed.max(1)).unwrap_or(u32::MAX)
}

/// Whether `me` already recorded `target` on one of the review's groups.
fn recorded_by(review: &HoopReview, me: &str, target: &str) -> bool {
    review.groups().iter().any(|g| {
        g.status == target
            && g.reviewed_by
                .as_ref()
                .is_some_and(|o| o.email.eq_ignore_ascii_case(me))
    })
}

/// `1h 30m`, `45s`, from nanoseconds.
fn human_duration(nanos: i64) -> String {
    let secs = nanos / 1_000_000_000;
    if secs <= 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    parts.join(" ")
}

fn person(name: &str, email: &str) -> String {
    match (name.trim(), email.trim()) {
        ("", "") => "unknown".into(),
        ("", e) => e.to_owned(),
        (n, "") => n.to_owned(),
        (n, e) if n.eq_ignore_ascii_case(e) => e.to_owned(),
        (n, e) => format!("{n} <{e}>"),
    }
}

fn time_window(window: &TimeWindow) -> String {
    let config = window.configuration.clone().unwrap_or_default();
    match (config.get("start_time"), config.get("end_time")) {
        (Some(start), Some(end)) => format!("{start}–{end} ({})", window.kind),
        _ => {
            let pairs: Vec<String> = config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} {}", window.kind, pairs.join(", "))
        }
    }
}

/// The answer to a `choose` sent to a backend whose actions offer no options.
pub(crate) fn choose_refused() -> DeliveryOutcome {
    DeliveryOutcome::Rejected {
        reason: "this request offers no options to choose from; approve or deny it".into(),
    }
}

fn rejection_reason(d: &Decision) -> String {
    let reason = d.reason.trim();
    if reason.is_empty() {
        crate::audit::proof_reference(d)
    } else {
        format!("{reason} {}", crate::audit::proof_reference(d))
    }
}

fn to_remote(
    backend: &str,
    web_base: &str,
    review: &HoopReview,
    session: &HoopSession,
) -> RemoteAction {
    let script = session.script();
    let onetime = review.kind == "onetime";
    let kind = if onetime && !script.trim().is_empty() {
        ActionKind::Command
    } else {
        ActionKind::DbSession
    };
    let connection = if session.connection.is_empty() {
        "(unknown connection)".to_owned()
    } else {
        session.connection.clone()
    };
    let title = if onetime {
        format!("One-time run on {connection}")
    } else {
        format!(
            "Access to {connection} for {}",
            human_duration(review.access_duration)
        )
    };
    let summary = script
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(160).collect())
        .unwrap_or_default();
    let requester = person(&session.user_name, &session.user);

    let mut details = Vec::new();
    let mut add = |key: &str, value: String| {
        details.push(Detail {
            key: key.into(),
            value,
        })
    };
    add(
        "connection",
        if session.connection_subtype.is_empty() {
            connection.clone()
        } else {
            format!("{connection} ({})", session.connection_subtype)
        },
    );
    if !script.is_empty() {
        add(
            if session.verb == "exec" || onetime {
                "script"
            } else {
                "command"
            },
            script.to_owned(),
        );
    }
    add(
        "access type",
        match review.kind.as_str() {
            "onetime" => "one-time execution".into(),
            "jit" => "just-in-time access".into(),
            other => other.to_owned(),
        },
    );
    if review.kind == "jit" {
        add("access duration", human_duration(review.access_duration));
    }
    if let Some(window) = &review.time_window {
        add("time window", time_window(window));
    }
    if let Some(rule) = &review.access_request_rule_name {
        add("access request rule", rule.clone());
    }
    let mut groups: Vec<&str> = review.groups().iter().map(|g| g.group.as_str()).collect();
    groups.sort_unstable();
    if !groups.is_empty() {
        add("review groups", groups.join(", "));
    }
    let force: Vec<&str> = review
        .force_approval_groups
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if !force.is_empty() {
        add("force-approval groups", force.join(", "));
    }
    add("session", review.session.clone());

    let mut reviews: Vec<Review> = review
        .groups()
        .iter()
        .filter_map(|g| {
            let verdict = match g.status.as_str() {
                STATUS_APPROVED => ReviewVerdict::Approved,
                STATUS_REJECTED => ReviewVerdict::Denied,
                _ => return None,
            };
            let reviewer = g
                .reviewed_by
                .as_ref()
                .map_or_else(|| g.group.clone(), |o| person(&o.name, &o.email));
            Some(Review {
                reviewer,
                verdict,
                at: g.review_date.unwrap_or(review.created_at),
                comment: Some(format!(
                    "group {}{}",
                    g.group,
                    if g.forced_review { " (forced)" } else { "" }
                )),
            })
        })
        .collect();
    // hoop's group order is not guaranteed; the snapshot hash must not depend on it.
    reviews.sort_by(|a, b| (a.at, &a.reviewer, &a.comment).cmp(&(b.at, &b.reviewer, &b.comment)));

    let snapshot = ActionSnapshot {
        kind,
        title,
        summary,
        requester: requester.clone(),
        requested_at: review.created_at,
        expires_at: None,
        resource: connection.clone(),
        details,
        approvals_required: approvals_required(review),
        reviews,
        status: map_status(&review.status),
        web_url: Some(format!(
            "{web_base}/reviews/{}",
            http::path_segment(&review.id)
        )),
        form: None,
    };
    let action = PendingAction::new(ActionKey::new(backend, &review.id), snapshot);
    RemoteAction {
        action,
        timeline: timeline(review, &requester, &connection),
    }
}

/// Backend timeline: the review's creation, each group's verdict, the final state.
fn timeline(review: &HoopReview, requester: &str, connection: &str) -> Vec<TimelineEvent> {
    let event = |at, kind, actor: Option<String>, text: String, id: String| TimelineEvent {
        at,
        source: EventSource::Backend,
        kind,
        actor,
        text,
        external_id: Some(format!("hoop:{}:{id}", review.id)),
    };
    let mut out = vec![event(
        review.created_at,
        TimelineKind::Requested,
        Some(requester.to_owned()),
        format!(
            "Review created for session {} on {connection}",
            review.session
        ),
        "created".into(),
    )];
    let mut last = review.created_at;
    for g in review.groups() {
        let verb = match g.status.as_str() {
            STATUS_APPROVED => "approved",
            STATUS_REJECTED => "rejected",
            "REVOKED" => "revoked",
            _ => continue,
        };
        let at = g.review_date.unwrap_or(review.created_at);
        last = last.max(at);
        let actor = g.reviewed_by.as_ref().map(|o| person(&o.name, &o.email));
        let by = actor.as_deref().unwrap_or("someone");
        let forced = if g.forced_review { " (forced)" } else { "" };
        out.push(event(
            at,
            TimelineKind::Reviewed,
            actor.clone(),
            format!("Group {} {verb} by {by}{forced}", g.group),
            format!("group:{}:{}", g.id, g.status),
        ));
    }
    let (kind, text, at) = match review.status.as_str() {
        STATUS_APPROVED => (TimelineKind::Approved, "Review approved".to_owned(), last),
        STATUS_REJECTED => (
            TimelineKind::Denied,
            match &review.rejection_reason {
                Some(r) if !r.is_empty() => format!("Review rejected: {r}"),
                _ => "Review rejected".to_owned(),
            },
            last,
        ),
        "REVOKED" => (
            TimelineKind::Cancelled,
            "Access revoked".to_owned(),
            review.revoke_at.unwrap_or(last),
        ),
        "PROCESSING" | "EXECUTED" => (
            TimelineKind::Executed,
            format!("Review {}", review.status.to_lowercase()),
            last,
        ),
        _ => return out,
    };
    out.push(event(
        at,
        kind,
        None,
        text,
        format!("status:{}", review.status),
    ));
    out
}

/// Fuzzing entry (see [`super::fuzzing`]): `reviews list \n session`, through the list's
/// decoding and the mapping to an action.
pub(super) fn fuzz_parse(data: &[u8]) {
    let (list, session) = super::fuzzing::split(data);
    let session: HoopSession = serde_json::from_slice(session).unwrap_or_default();
    if let Ok(raw) = serde_json::from_slice::<Vec<serde_json::Value>>(list) {
        for (i, value) in raw.iter().enumerate() {
            if let Ok(review) = decode_value::<HoopReview>("fuzz", &format!("[{i}]"), value) {
                let _ = to_remote("fuzz", "http://hoop", &review, &session);
                let _ = recorded_by(&review, "ana@example.com", STATUS_APPROVED);
                let _ = approvals_required(&review);
            }
        }
    }
    let _ = hoop_message(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(json: serde_json::Value) -> HoopReview {
        serde_json::from_value(json).unwrap()
    }

    fn base_review() -> serde_json::Value {
        serde_json::json!({
            "id": "r1", "session": "s1", "type": "onetime", "access_duration": 0,
            "status": "PENDING", "revoke_at": null, "created_at": "2026-11-25T10:00:00Z",
            "review_groups_data": [
                {"id": "g1", "group": "sre", "status": "APPROVED",
                 "reviewed_by": {"id": "u1", "name": "Bob", "email": "bob@example.com", "slack_id": ""},
                 "review_date": "2026-11-25T10:05:00Z", "forced_review": false},
                {"id": "g2", "group": "dba", "status": "PENDING", "reviewed_by": null,
                 "review_date": null, "forced_review": false},
                {"id": "g3", "group": "security", "status": "PENDING", "reviewed_by": null,
                 "review_date": null, "forced_review": false}
            ],
            "time_window": null, "access_request_rule_name": null, "min_approvals": null,
            "force_approval_groups": null
        })
    }

    fn session() -> HoopSession {
        serde_json::from_value(serde_json::json!({
            "user": "dana@example.com", "user_name": "Dana", "connection": "pg-prod",
            "connection_subtype": "postgres", "verb": "exec",
            "script": {"data": "DELETE FROM t WHERE id = 1;\n"}
        }))
        .unwrap()
    }

    #[test]
    fn statuses_map_to_ours() {
        assert_eq!(map_status("PENDING"), ActionStatus::Pending);
        assert_eq!(map_status("APPROVED"), ActionStatus::Approved);
        assert_eq!(map_status("REJECTED"), ActionStatus::Denied);
        assert_eq!(map_status("REVOKED"), ActionStatus::Cancelled);
        assert_eq!(map_status("PROCESSING"), ActionStatus::Executed);
        assert_eq!(map_status("EXECUTED"), ActionStatus::Executed);
        assert_eq!(map_status("UNKNOWN"), ActionStatus::Failed);
    }

    #[test]
    fn approvals_follow_hoops_rule() {
        // No access request rule: every group must approve.
        assert_eq!(approvals_required(&review(base_review())), 3);
        // A rule's min_approvals caps it, never above the number of groups.
        let mut v = base_review();
        v["access_request_rule_name"] = "prod".into();
        v["min_approvals"] = 2.into();
        assert_eq!(approvals_required(&review(v.clone())), 2);
        v["min_approvals"] = 9.into();
        assert_eq!(approvals_required(&review(v.clone())), 3);
        // min_approvals without a rule is ignored by hoop.
        let mut w = base_review();
        w["min_approvals"] = 1.into();
        assert_eq!(approvals_required(&review(w)), 3);
    }

    #[test]
    fn a_review_maps_with_the_exact_script_and_reviews_so_far() {
        let remote = to_remote(
            "hoop",
            "https://hoop.example",
            &review(base_review()),
            &session(),
        );
        let s = &remote.action.snapshot;
        assert_eq!(s.kind, ActionKind::Command);
        assert_eq!(s.requester, "Dana <dana@example.com>");
        assert_eq!(s.resource, "pg-prod");
        assert_eq!(
            s.web_url.as_deref(),
            Some("https://hoop.example/reviews/r1")
        );
        let script = s.details.iter().find(|d| d.key == "script").unwrap();
        assert_eq!(script.value, "DELETE FROM t WHERE id = 1;\n");
        assert_eq!(s.reviews.len(), 1);
        assert_eq!(s.reviews[0].reviewer, "Bob <bob@example.com>");
        assert_eq!(s.reviews[0].verdict, ReviewVerdict::Approved);
        let kinds: Vec<_> = remote.timeline.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [TimelineKind::Requested, TimelineKind::Reviewed]);
        assert!(recorded_by(
            &review(base_review()),
            "BOB@example.com",
            "APPROVED"
        ));
        assert!(!recorded_by(
            &review(base_review()),
            "bob@example.com",
            "REJECTED"
        ));
    }

    #[test]
    fn jit_reviews_show_duration_and_window() {
        let mut v = base_review();
        v["type"] = "jit".into();
        v["access_duration"] = 5_400_000_000_000_i64.into();
        v["time_window"] = serde_json::json!({"type": "time_range",
            "configuration": {"start_time": "09:00", "end_time": "18:00"}});
        let remote = to_remote("hoop", "https://h", &review(v), &session());
        let s = &remote.action.snapshot;
        assert_eq!(s.kind, ActionKind::DbSession);
        assert_eq!(s.title, "Access to pg-prod for 1h 30m");
        let get = |k: &str| s.details.iter().find(|d| d.key == k).unwrap().value.clone();
        assert_eq!(get("access duration"), "1h 30m");
        assert_eq!(get("time window"), "09:00–18:00 (time_range)");
    }

    #[test]
    fn group_order_does_not_change_the_hash() {
        let a = review(base_review());
        let mut v = base_review();
        v["review_groups_data"].as_array_mut().unwrap().reverse();
        let b = review(v);
        let ha = to_remote("h", "u", &a, &session()).action.snapshot_hash;
        let hb = to_remote("h", "u", &b, &session()).action.snapshot_hash;
        assert_eq!(ha, hb);
    }

    #[test]
    fn refusals_keep_hoops_words() {
        assert_eq!(
            refusal("unable to self approve review"),
            "self-approval: unable to self approve review"
        );
        assert_eq!(
            refusal("not eligible for review"),
            "not eligible: not eligible for review"
        );
        assert_eq!(refusal("odd"), "refused: odd");
        assert_eq!(
            hoop_message(br#"{"message":"access denied"}"#),
            "access denied"
        );
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(1_800_000_000_000), "30m");
        assert_eq!(human_duration(90_061_000_000_000), "1d 1h 1m 1s");
        assert_eq!(human_duration(0), "0s");
    }
}
