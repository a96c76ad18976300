//! What raises a notification, what it says, and when it goes away. Pure: every
//! function takes the time it works with, so the rules are tested without a clock or a
//! bus. The D-Bus side ([`crate::service`]) only carries out what [`Planner`] decides.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Duration, Utc};
use countersign_core::config::NotificationsConfig;
use countersign_core::model::{ActionKey, ActionStatus, PendingAction};
use countersign_core::snapshot::SnapshotHash;

/// Leading-edge coalescing per backend: a new action after a quiet spell is notified at
/// once (a person waiting on one request should not wait for a timer); whatever else
/// arrives within this long of that notification shares one ("7 new requests on
/// hoop-prod"), sent when the window closes, which opens the next window.
pub const COALESCE_WINDOW: Duration = Duration::milliseconds(1000);
/// Under this much time left, a notification is critical.
pub const CRITICAL_UNDER: Duration = Duration::minutes(5);
/// Titles listed in a coalesced notification before "and N more".
const BATCH_LINES: usize = 5;
/// Longest single line taken from request text (which the requester controls).
const MAX_LINE: usize = 160;

/// The `[notifications]` settings the planner applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub enabled: bool,
    pub muted_backends: BTreeSet<String>,
    pub dnd_until: Option<DateTime<Utc>>,
    pub default_deny_reason: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&NotificationsConfig::default()).0
    }
}

impl Settings {
    /// Settings from the config table, and a warning for each value that could not be
    /// used (a `dnd_until` that is not RFC 3339 is ignored rather than stopping the app).
    pub fn from_config(config: &NotificationsConfig) -> (Self, Vec<String>) {
        let mut warnings = Vec::new();
        let dnd_until =
            config
                .dnd_until
                .as_deref()
                .and_then(|text| match DateTime::parse_from_rfc3339(text) {
                    Ok(t) => Some(t.with_timezone(&Utc)),
                    Err(e) => {
                        warnings.push(format!(
                        "[notifications] dnd_until `{text}` is not an RFC 3339 time ({e}); ignored"
                    ));
                        None
                    }
                });
        let settings = Self {
            enabled: config.enabled,
            muted_backends: config.muted_backends.iter().cloned().collect(),
            dnd_until,
            default_deny_reason: config
                .default_deny_reason
                .clone()
                .filter(|r| !r.trim().is_empty()),
        };
        (settings, warnings)
    }
}

/// Why a new action raises no notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Disabled,
    MutedBackend,
    DoNotDisturb,
    Paused,
    /// The approver asked for it: they cannot approve their own request.
    OwnRequest,
    /// This person already reviewed it (on the backend) or decided it here.
    AlreadyDecided,
    NotPending,
    Expired,
    AlreadyNotified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Normal,
    Critical,
}

/// A notification's buttons: D-Bus action id and label. `default` is the body click.
pub const ACTIONS_DECIDE: &[(&str, &str)] = &[
    ("approve", "Approve"),
    ("deny", "Deny"),
    ("open", "Open"),
    ("default", "Open"),
];
pub const ACTIONS_OPEN: &[(&str, &str)] = &[("open", "Open"), ("default", "Open")];

/// What a notification shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub summary: String,
    /// Plain text with `&`, `<` and `>` escaped (servers may read the body as markup).
    pub body: String,
    pub urgency: Urgency,
    pub actions: &'static [(&'static str, &'static str)],
}

/// What a shown notification stands for, so its buttons know what to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One action, as it was when shown: Approve binds to exactly this snapshot.
    Single {
        key: ActionKey,
        snapshot_hash: SnapshotHash,
        expires_at: Option<DateTime<Utc>>,
    },
    /// Several new actions of one backend, soonest expiry first.
    Batch {
        backend: String,
        keys: Vec<ActionKey>,
    },
    /// A message about an action (why a decision from a notification did not happen).
    Notice { key: ActionKey },
}

impl Target {
    pub fn keys(&self) -> Vec<ActionKey> {
        match self {
            Self::Single { key, .. } | Self::Notice { key } => vec![key.clone()],
            Self::Batch { keys, .. } => keys.clone(),
        }
    }

    /// The action Open brings forward.
    pub fn open_key(&self) -> Option<&ActionKey> {
        match self {
            Self::Single { key, .. } | Self::Notice { key } => Some(key),
            Self::Batch { keys, .. } => keys.first(),
        }
    }
}

/// A notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub target: Target,
    pub content: Content,
}

/// Server-side id of a shown notification.
pub type NotificationId = u32;

#[derive(Debug)]
struct Burst {
    first_at: DateTime<Utc>,
    actions: Vec<PendingAction>,
}

/// Decides which new actions are notified, coalesces bursts, and tracks what is shown
/// so answers find their action and withdrawn actions find their notification.
#[derive(Debug)]
pub struct Planner {
    settings: Settings,
    approver: String,
    paused_until: Option<DateTime<Utc>>,
    /// Every action ever queued for a notification (never notified twice).
    notified: HashSet<ActionKey>,
    bursts: BTreeMap<String, Burst>,
    /// Per backend: when its last notification went out (its coalescing window opens).
    last_sent: BTreeMap<String, DateTime<Utc>>,
    shown: BTreeMap<NotificationId, Target>,
}

impl Planner {
    pub fn new(settings: Settings, approver: impl Into<String>) -> Self {
        Self {
            settings,
            approver: approver.into(),
            paused_until: None,
            notified: HashSet::new(),
            bursts: BTreeMap::new(),
            last_sent: BTreeMap::new(),
            shown: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Pause (the tray's "Pause notifications for 1 h"), or resume with `None`.
    pub fn set_paused_until(&mut self, until: Option<DateTime<Utc>>) {
        self.paused_until = until;
    }

    /// Why `action` raises no notification now, if it does not.
    pub fn skip_reason(
        &self,
        action: &PendingAction,
        decided_here: bool,
        now: DateTime<Utc>,
    ) -> Option<Skip> {
        let s = &action.snapshot;
        let me = self.approver.trim();
        Some(if !self.settings.enabled {
            Skip::Disabled
        } else if self.settings.muted_backends.contains(&action.key.backend) {
            Skip::MutedBackend
        } else if self.settings.dnd_until.is_some_and(|t| now < t) {
            Skip::DoNotDisturb
        } else if self.paused_until.is_some_and(|t| now < t) {
            Skip::Paused
        } else if s.status != ActionStatus::Pending {
            Skip::NotPending
        } else if s.requester.trim().eq_ignore_ascii_case(me) {
            Skip::OwnRequest
        } else if decided_here
            || s.reviews
                .iter()
                .any(|r| r.reviewer.trim().eq_ignore_ascii_case(me))
        {
            Skip::AlreadyDecided
        } else if action
            .time_left(now)
            .is_some_and(|left| left <= Duration::zero())
        {
            Skip::Expired
        } else if self.notified.contains(&action.key) {
            Skip::AlreadyNotified
        } else {
            return None;
        })
    }

    /// A new action arrived: queue it for a notification unless a rule says not to.
    /// `decided_here` is whether this Countersign already holds a decision on it.
    pub fn consider(
        &mut self,
        action: &PendingAction,
        decided_here: bool,
        now: DateTime<Utc>,
    ) -> Result<(), Skip> {
        if let Some(skip) = self.skip_reason(action, decided_here, now) {
            return Err(skip);
        }
        self.notified.insert(action.key.clone());
        // Inside the window the last notification opened: wait for it to close.
        // Otherwise due now (the window is counted back from `now`).
        let first_at = match self.last_sent.get(&action.key.backend) {
            Some(&sent) if now < sent + COALESCE_WINDOW => sent,
            _ => now - COALESCE_WINDOW,
        };
        self.bursts
            .entry(action.key.backend.clone())
            .or_insert_with(|| Burst {
                first_at,
                actions: Vec::new(),
            })
            .actions
            .push(action.clone());
        Ok(())
    }

    /// When [`Planner::tick`] next has something to do: a burst to send, or a shown
    /// action that expires.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let bursts = self.bursts.values().map(|b| b.first_at + COALESCE_WINDOW);
        let expiries = self.shown.values().filter_map(|t| match t {
            Target::Single { expires_at, .. } => *expires_at,
            _ => None,
        });
        bursts.chain(expiries).min()
    }

    /// Bursts whose window has passed become notifications (one per backend).
    pub fn flush(&mut self, now: DateTime<Utc>) -> Vec<Outgoing> {
        let due: Vec<String> = self
            .bursts
            .iter()
            .filter(|(_, b)| b.first_at + COALESCE_WINDOW <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut out = Vec::new();
        for name in due {
            let Some(mut burst) = self.bursts.remove(&name) else {
                continue;
            };
            // Something may have expired while it waited for its burst to close.
            burst
                .actions
                .retain(|a| a.time_left(now).is_none_or(|left| left > Duration::zero()));
            match burst.actions.len() {
                0 => continue,
                1 => out.push(single(&burst.actions[0], now)),
                _ => out.push(batch(&name, &mut burst.actions, now)),
            }
            self.last_sent.insert(name, now);
        }
        out
    }

    /// Shown notifications of actions that expired: to close (as withdrawn).
    pub fn expired(&mut self, now: DateTime<Utc>) -> Vec<(NotificationId, Target)> {
        let ids: Vec<NotificationId> = self
            .shown
            .iter()
            .filter(|(_, t)| matches!(t, Target::Single { expires_at: Some(at), .. } if *at <= now))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| self.shown.remove(&id).map(|t| (id, t)))
            .collect()
    }

    /// The notification server showed `target` as `id`.
    pub fn shown(&mut self, id: NotificationId, target: Target) {
        self.shown.insert(id, target);
    }

    pub fn target(&self, id: NotificationId) -> Option<&Target> {
        self.shown.get(&id)
    }

    /// The notification is gone (answered, dismissed, closed by us): forget it. Returns
    /// what it stood for, once; a second answer to the same notification finds nothing.
    pub fn forget(&mut self, id: NotificationId) -> Option<Target> {
        self.shown.remove(&id)
    }

    /// `key` is no longer pending (decided elsewhere, expired, cancelled): drop it from
    /// any burst not sent yet, and return the notifications to close. A coalesced one is
    /// closed once none of its actions is pending any more.
    pub fn left_pending(&mut self, key: &ActionKey) -> Vec<NotificationId> {
        if let Some(burst) = self.bursts.get_mut(&key.backend) {
            burst.actions.retain(|a| &a.key != key);
            if burst.actions.is_empty() {
                self.bursts.remove(&key.backend);
            }
        }
        let mut close = Vec::new();
        for (id, target) in self.shown.iter_mut() {
            match target {
                Target::Single { key: k, .. } if k == key => close.push(*id),
                Target::Batch { keys, .. } if keys.contains(key) => {
                    keys.retain(|k| k != key);
                    if keys.is_empty() {
                        close.push(*id);
                    }
                }
                _ => {}
            }
        }
        for id in &close {
            self.shown.remove(id);
        }
        close
    }
}

/// One action: title, requester, backend, resource, time left; Approve / Deny / Open.
pub fn single(action: &PendingAction, now: DateTime<Utc>) -> Outgoing {
    let s = &action.snapshot;
    let mut body = format!(
        "Requested by {} on {}",
        line(&s.requester),
        line(&action.key.backend)
    );
    if !s.resource.trim().is_empty() {
        body.push_str(&format!("\nResource: {}", line(&s.resource)));
    }
    body.push('\n');
    body.push_str(&time_left_text(action.time_left(now)));
    Outgoing {
        target: Target::Single {
            key: action.key.clone(),
            snapshot_hash: action.snapshot_hash.clone(),
            expires_at: s.expires_at,
        },
        content: Content {
            summary: line(&s.title),
            body: escape(&body),
            urgency: urgency(action, now),
            actions: ACTIONS_DECIDE,
        },
    }
}

/// Several actions of one backend: "7 new requests on hoop-prod", the first titles, and
/// the soonest expiry. Open only: approving several at once from a popup is not offered.
fn batch(backend: &str, actions: &mut [PendingAction], now: DateTime<Utc>) -> Outgoing {
    actions.sort_by_key(|a| (a.snapshot.expires_at.is_none(), a.snapshot.expires_at));
    let mut body: Vec<String> = actions
        .iter()
        .take(BATCH_LINES)
        .map(|a| {
            format!(
                "• {} ({})",
                line(&a.snapshot.title),
                line(&a.snapshot.requester)
            )
        })
        .collect();
    if actions.len() > BATCH_LINES {
        body.push(format!("… and {} more", actions.len() - BATCH_LINES));
    }
    body.push(format!(
        "Soonest: {}",
        time_left_text(actions[0].time_left(now)).to_lowercase()
    ));
    let critical = actions.iter().any(|a| urgency(a, now) == Urgency::Critical);
    Outgoing {
        target: Target::Batch {
            backend: backend.to_owned(),
            keys: actions.iter().map(|a| a.key.clone()).collect(),
        },
        content: Content {
            summary: format!("{} new requests on {}", actions.len(), line(backend)),
            body: escape(&body.join("\n")),
            urgency: if critical {
                Urgency::Critical
            } else {
                Urgency::Normal
            },
            actions: ACTIONS_OPEN,
        },
    }
}

/// A decision from a notification did not happen; says why and offers Open.
pub fn not_decided(action: &PendingAction, verdict: &str, why: &str) -> Outgoing {
    Outgoing {
        target: Target::Notice {
            key: action.key.clone(),
        },
        content: Content {
            summary: format!("Not {verdict}: {}", line(&action.snapshot.title)),
            body: escape(&format!("{}\nOpen it to review it again.", line(why))),
            urgency: Urgency::Normal,
            actions: ACTIONS_OPEN,
        },
    }
}

/// Critical under five minutes left (or already expired), normal otherwise.
pub fn urgency(action: &PendingAction, now: DateTime<Utc>) -> Urgency {
    match action.time_left(now) {
        Some(left) if left < CRITICAL_UNDER => Urgency::Critical,
        _ => Urgency::Normal,
    }
}

/// "Expires in 4 min", "Expires in 1 h 20 min", "Expires in 40 s", "No expiry".
pub fn time_left_text(left: Option<Duration>) -> String {
    let Some(left) = left else {
        return "No expiry".to_owned();
    };
    let secs = left.num_seconds();
    if secs <= 0 {
        return "Expired".to_owned();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("Expires in {h} h {m} min")
    } else if m > 0 {
        format!("Expires in {m} min")
    } else {
        format!("Expires in {s} s")
    }
}

/// One line of request text: control characters (newlines included) become spaces,
/// and it is cut to a length a popup can show.
pub fn line(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let clean = clean.trim();
    if clean.chars().count() > MAX_LINE {
        let cut: String = clean.chars().take(MAX_LINE - 1).collect();
        format!("{cut}…")
    } else {
        clean.to_owned()
    }
}

/// Servers that support body markup would read `<b>` in a title as markup: escape it.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::model::{ActionSnapshot, Review, ReviewVerdict};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// Built from JSON so fields the model gains later default as they would on the wire.
    fn action(backend: &str, id: &str, expires_in: Option<Duration>) -> PendingAction {
        let mut snapshot: ActionSnapshot = serde_json::from_value(serde_json::json!({
            "kind": "db_session", "title": format!("Session {id}"),
            "requester": "dana@example.com", "requested_at": "2026-11-25T10:00:00Z",
            "resource": "prod-billing", "status": "pending"
        }))
        .unwrap();
        snapshot.expires_at = expires_in.map(|d| t0() + d);
        PendingAction::new(ActionKey::new(backend, id), snapshot)
    }

    fn planner() -> Planner {
        Planner::new(Settings::default(), "ana@example.com")
    }

    #[test]
    fn a_single_new_action_shows_title_requester_backend_resource_and_time_left() {
        let mut p = planner();
        let a = action("prod", "a1", Some(Duration::minutes(10)));
        p.consider(&a, false, t0()).unwrap();
        // After a quiet spell: due at once, no waiting for a window.
        assert_eq!(p.next_deadline(), Some(t0()));
        let out = p.flush(t0());
        assert_eq!(out.len(), 1);
        let c = &out[0].content;
        assert_eq!(c.summary, "Session a1");
        assert_eq!(
            c.body,
            "Requested by dana@example.com on prod\nResource: prod-billing\nExpires in 10 min"
        );
        assert_eq!(c.urgency, Urgency::Normal);
        assert_eq!(c.actions, ACTIONS_DECIDE);
        assert_eq!(
            out[0].target,
            Target::Single {
                key: a.key.clone(),
                snapshot_hash: a.snapshot_hash.clone(),
                expires_at: a.snapshot.expires_at,
            }
        );
    }

    #[test]
    fn critical_under_five_minutes_left() {
        let a = action("prod", "a1", Some(Duration::minutes(5)));
        assert_eq!(urgency(&a, t0()), Urgency::Normal);
        assert_eq!(urgency(&a, t0() + Duration::seconds(1)), Urgency::Critical);
        assert_eq!(urgency(&action("prod", "a2", None), t0()), Urgency::Normal);
    }

    #[test]
    fn a_burst_becomes_one_notification_per_backend() {
        let mut p = planner();
        for i in 0..7 {
            let a = action(
                "hoop-prod",
                &format!("h{i}"),
                Some(Duration::minutes(30 - i)),
            );
            p.consider(&a, false, t0() + Duration::milliseconds(100 * i))
                .unwrap();
        }
        p.consider(&action("gh", "g1", Some(Duration::minutes(3))), false, t0())
            .unwrap();
        let out = p.flush(t0() + Duration::seconds(1));
        assert_eq!(out.len(), 2);
        let hoop = out
            .iter()
            .find(|o| o.content.summary == "7 new requests on hoop-prod")
            .expect("coalesced");
        assert_eq!(hoop.content.actions, ACTIONS_OPEN);
        // Soonest expiry first, five titles, then the rest counted.
        assert!(hoop
            .content
            .body
            .starts_with("• Session h6 (dana@example.com)"));
        assert!(hoop.content.body.contains("… and 2 more"));
        assert!(hoop.content.body.ends_with("Soonest: expires in 23 min"));
        assert_eq!(
            hoop.target.open_key(),
            Some(&ActionKey::new("hoop-prod", "h6"))
        );
        let gh = out
            .iter()
            .find(|o| o.content.summary == "Session g1")
            .unwrap();
        assert_eq!(gh.content.urgency, Urgency::Critical);
        assert!(p.flush(t0() + Duration::seconds(5)).is_empty());
    }

    #[test]
    fn the_first_goes_at_once_the_rest_of_a_burst_waits_for_the_window() {
        let mut p = planner();
        p.consider(&action("prod", "a1", None), false, t0())
            .unwrap();
        assert_eq!(p.flush(t0()).len(), 1, "the first one at once");
        for i in 2..=4 {
            let at = t0() + Duration::milliseconds(100 * i);
            p.consider(&action("prod", &format!("a{i}"), None), false, at)
                .unwrap();
            assert!(p.flush(at).is_empty(), "a{i} waits for the window");
        }
        assert_eq!(p.next_deadline(), Some(t0() + COALESCE_WINDOW));
        let out = p.flush(t0() + COALESCE_WINDOW);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].content.summary, "3 new requests on prod");
        // Another backend is not held by this one's window.
        p.consider(&action("gh", "g1", None), false, t0() + COALESCE_WINDOW)
            .unwrap();
        assert_eq!(p.flush(t0() + COALESCE_WINDOW).len(), 1);
    }

    #[test]
    fn an_action_arriving_after_the_window_gets_its_own_notification() {
        let mut p = planner();
        p.consider(&action("prod", "a1", None), false, t0())
            .unwrap();
        assert_eq!(p.flush(t0()).len(), 1);
        p.consider(
            &action("prod", "a2", None),
            false,
            t0() + Duration::seconds(2),
        )
        .unwrap();
        assert_eq!(p.flush(t0() + Duration::seconds(2)).len(), 1);
    }

    #[test]
    fn no_notification_for_what_this_person_cannot_or_need_not_decide() {
        let p = planner();
        let mut own = action("prod", "a1", None);
        own.snapshot.requester = "Ana@Example.com".into();
        assert_eq!(p.skip_reason(&own, false, t0()), Some(Skip::OwnRequest));
        let a = action("prod", "a2", None);
        assert_eq!(p.skip_reason(&a, true, t0()), Some(Skip::AlreadyDecided));
        let mut reviewed = action("prod", "a3", None);
        reviewed.snapshot.reviews.push(Review {
            reviewer: "ana@example.com".into(),
            verdict: ReviewVerdict::Approved,
            at: t0(),
            comment: None,
        });
        assert_eq!(
            p.skip_reason(&reviewed, false, t0()),
            Some(Skip::AlreadyDecided)
        );
        let mut done = action("prod", "a4", None);
        done.snapshot.status = ActionStatus::Approved;
        assert_eq!(p.skip_reason(&done, false, t0()), Some(Skip::NotPending));
        let gone = action("prod", "a5", Some(Duration::seconds(-1)));
        assert_eq!(p.skip_reason(&gone, false, t0()), Some(Skip::Expired));
    }

    #[test]
    fn an_action_is_notified_once() {
        let mut p = planner();
        let a = action("prod", "a1", None);
        p.consider(&a, false, t0()).unwrap();
        assert_eq!(p.consider(&a, false, t0()), Err(Skip::AlreadyNotified));
    }

    #[test]
    fn mutes_do_not_disturb_and_pause() {
        let config = NotificationsConfig {
            muted_backends: vec!["noisy".into()],
            dnd_until: Some("2026-11-25T11:00:00Z".into()),
            ..NotificationsConfig::default()
        };
        let (settings, warnings) = Settings::from_config(&config);
        assert!(warnings.is_empty());
        let mut p = Planner::new(settings, "ana@example.com");
        let a = action("prod", "a1", None);
        assert_eq!(p.skip_reason(&a, false, t0()), Some(Skip::DoNotDisturb));
        let later = t0() + Duration::hours(1);
        assert_eq!(p.skip_reason(&a, false, later), None);
        assert_eq!(
            p.skip_reason(&action("noisy", "n1", None), false, later),
            Some(Skip::MutedBackend)
        );
        p.set_paused_until(Some(later + Duration::hours(1)));
        assert_eq!(p.skip_reason(&a, false, later), Some(Skip::Paused));
        p.set_paused_until(None);
        assert_eq!(p.skip_reason(&a, false, later), None);

        let off = NotificationsConfig {
            enabled: false,
            ..NotificationsConfig::default()
        };
        let p = Planner::new(Settings::from_config(&off).0, "ana@example.com");
        assert_eq!(p.skip_reason(&a, false, later), Some(Skip::Disabled));
    }

    #[test]
    fn settings_come_from_the_config_files_notifications_table() {
        let config = countersign_core::config::Config::parse(
            std::path::Path::new("c.toml"),
            "approver = 'ana@example.com'\n[notifications]\nmuted_backends = ['noisy']\n\
             dnd_until = '2026-11-25T11:00:00Z'\ndefault_deny_reason = 'ask in #ops'\n\
             close_to_tray = false\n",
        )
        .unwrap();
        assert!(!config.notifications.close_to_tray);
        let (s, warnings) = Settings::from_config(&config.notifications);
        assert!(warnings.is_empty());
        assert!(s.enabled, "on unless switched off");
        assert!(s.muted_backends.contains("noisy"));
        assert_eq!(s.dnd_until, Some(t0() + Duration::hours(1)));
        assert_eq!(s.default_deny_reason.as_deref(), Some("ask in #ops"));
        // Without the table: everything on, closing to the tray.
        let bare =
            countersign_core::config::Config::parse(std::path::Path::new("c.toml"), "").unwrap();
        assert_eq!(bare.notifications, NotificationsConfig::default());
        assert!(bare.notifications.enabled && bare.notifications.close_to_tray);
        // A misspelt key is refused like everywhere else in the file.
        assert!(countersign_core::config::Config::parse(
            std::path::Path::new("c.toml"),
            "[notifications]\nmute = ['x']\n"
        )
        .is_err());
    }

    #[test]
    fn a_bad_dnd_time_is_a_warning_not_an_error() {
        let config = NotificationsConfig {
            dnd_until: Some("tomorrow".into()),
            ..NotificationsConfig::default()
        };
        let (settings, warnings) = Settings::from_config(&config);
        assert_eq!(settings.dnd_until, None);
        assert!(warnings[0].contains("`tomorrow`"), "{warnings:?}");
    }

    #[test]
    fn leaving_pending_withdraws_the_notification_and_unsent_bursts() {
        let mut p = planner();
        let (a1, a2, a3) = (
            action("prod", "a1", None),
            action("prod", "a2", None),
            action("other", "b1", None),
        );
        p.shown(
            7,
            Target::Single {
                key: a1.key.clone(),
                snapshot_hash: a1.snapshot_hash.clone(),
                expires_at: None,
            },
        );
        p.shown(
            8,
            Target::Batch {
                backend: "prod".into(),
                keys: vec![a1.key.clone(), a2.key.clone()],
            },
        );
        assert_eq!(p.left_pending(&a1.key), vec![7]);
        assert!(p.target(7).is_none());
        assert_eq!(
            p.left_pending(&a2.key),
            vec![8],
            "the batch goes with its last"
        );
        // Not sent yet: it simply never shows.
        p.consider(&a3, false, t0()).unwrap();
        assert!(p.left_pending(&a3.key).is_empty());
        assert!(p.flush(t0() + Duration::seconds(2)).is_empty());
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn an_answer_finds_its_target_once() {
        let mut p = planner();
        let a = action("prod", "a1", None);
        p.shown(3, Target::Notice { key: a.key.clone() });
        assert!(p.forget(3).is_some());
        assert!(p.forget(3).is_none());
    }

    #[test]
    fn a_shown_action_that_expires_is_withdrawn() {
        let mut p = planner();
        let a = action("prod", "a1", Some(Duration::minutes(2)));
        p.consider(&a, false, t0()).unwrap();
        let out = p.flush(t0() + COALESCE_WINDOW);
        p.shown(1, out[0].target.clone());
        assert_eq!(p.next_deadline(), a.snapshot.expires_at);
        assert!(p.expired(t0() + Duration::minutes(1)).is_empty());
        assert_eq!(p.expired(t0() + Duration::minutes(2)).len(), 1);
    }

    #[test]
    fn request_text_is_one_escaped_line() {
        let mut a = action("prod", "a1", None);
        a.snapshot.title = "Drop <b>prod</b>\nnow & then".into();
        a.snapshot.resource = "x".repeat(500);
        let out = single(&a, t0());
        assert_eq!(out.content.summary, "Drop <b>prod</b> now & then");
        assert!(!out.content.body.contains('<'));
        assert!(out.content.body.contains("xxx…\nNo expiry"));
        let notice = not_decided(&a, "approved", "it <changed>");
        assert_eq!(
            notice.content.summary,
            "Not approved: Drop <b>prod</b> now & then"
        );
        assert!(notice.content.body.starts_with("it &lt;changed&gt;"));
    }

    #[test]
    fn time_left_reads_like_a_person_would_say_it() {
        assert_eq!(time_left_text(None), "No expiry");
        assert_eq!(
            time_left_text(Some(Duration::seconds(40))),
            "Expires in 40 s"
        );
        assert_eq!(
            time_left_text(Some(Duration::seconds(299))),
            "Expires in 4 min"
        );
        assert_eq!(
            time_left_text(Some(Duration::minutes(80))),
            "Expires in 1 h 20 min"
        );
        assert_eq!(time_left_text(Some(Duration::zero())), "Expired");
    }
}
