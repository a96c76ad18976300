//! The demo scenario: believable approval requests arriving over time, each with a
//! timeline that keeps advancing (policy evaluated, reviewer assigned, a second
//! reviewer's approval where two are needed) until someone decides or it expires.
//!
//! The scenario only schedules steps for actions it created in this process run, so a
//! restart never replays a step.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use countersign_core::model::{ActionKind, Detail, Review, ReviewVerdict, TimelineKind};
use countersign_core::protocol::NewAction;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::shutdown::Shutdown;
use crate::state::{now, Step, Store, StoreError};
use crate::ScenarioConfig;

/// The kinds of request the demo produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Template {
    DbSession,
    Deployment,
    AgentToolCall,
    Command,
    Terraform,
}

const TEMPLATES: [Template; 5] = [
    Template::DbSession,
    Template::Deployment,
    Template::AgentToolCall,
    Template::Command,
    Template::Terraform,
];

/// A step of an action's story, relative to its creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Beat {
    PolicyEvaluated(String),
    ReviewerAssigned(String),
    SecondReview { reviewer: String, comment: String },
}

impl Beat {
    fn into_step(self) -> Step {
        match self {
            Beat::PolicyEvaluated(text) => Step::Timeline {
                kind: TimelineKind::PolicyEvaluated,
                actor: Some("policy-engine".into()),
                text,
            },
            Beat::ReviewerAssigned(text) => Step::Timeline {
                kind: TimelineKind::ReviewerAssigned,
                actor: Some("policy-engine".into()),
                text,
            },
            Beat::SecondReview { reviewer, comment } => Step::Review(Review {
                reviewer,
                verdict: ReviewVerdict::Approved,
                at: now(),
                comment: Some(comment),
            }),
        }
    }
}

/// One generated request and its scripted future.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub new: NewAction,
    pub beats: Vec<(Duration, Beat)>,
}

const PEOPLE: &[&str] = &[
    "dana.kim@acme.io",
    "omar.haddad@acme.io",
    "li.wei@acme.io",
    "sofia.rossi@acme.io",
    "jake.miller@acme.io",
    "priya.nair@acme.io",
    "noah.schmidt@acme.io",
];

struct Group {
    name: &'static str,
    on_call: &'static [&'static str],
    comments: &'static [&'static str],
}

const DBA: Group = Group {
    name: "dba",
    on_call: &[
        "marcus.lee@acme.io",
        "ana.gomez@acme.io",
        "tomasz.nowak@acme.io",
    ],
    comments: &[
        "Query is scoped by primary key; fine to run.",
        "Checked the WHERE clause against the incident notes.",
        "OK, please post the affected row count in #inc-billing.",
    ],
};
const RELEASE: Group = Group {
    name: "release-managers",
    on_call: &["hana.sato@acme.io", "felix.braun@acme.io"],
    comments: &["Canary metrics look clean."],
};
const AI_OVERSIGHT: Group = Group {
    name: "ai-oversight",
    on_call: &["grace.obi@acme.io", "ravi.menon@acme.io"],
    comments: &["Arguments match the ticket."],
};
const SRE: Group = Group {
    name: "sre-oncall",
    on_call: &["lucas.martin@acme.io", "emma.berg@acme.io"],
    comments: &["Matches the runbook step."],
};
const PLATFORM: Group = Group {
    name: "platform",
    on_call: &[
        "yusuf.demir@acme.io",
        "chloe.dubois@acme.io",
        "ken.ito@acme.io",
    ],
    comments: &[
        "Plan reviewed; destroys are the old listener only.",
        "Matches the change request CHG-1182.",
    ],
};

fn pick<'a, R: Rng>(rng: &mut R, items: &'a [&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or("")
}

fn detail(key: &str, value: impl Into<String>) -> Detail {
    Detail {
        key: key.into(),
        value: value.into(),
    }
}

fn hex_id<R: Rng>(rng: &mut R, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}

/// Time to live: mostly 5–30 minutes, one in four short (2–4 minutes) so that expiry
/// shows up in a demo.
fn ttl_secs<R: Rng>(rng: &mut R) -> u64 {
    if rng.gen_bool(0.25) {
        rng.gen_range(120..=240)
    } else {
        rng.gen_range(300..=1800)
    }
}

/// Generates one request of the given kind with its scripted steps.
pub(crate) fn generate<R: Rng>(rng: &mut R, template: Template) -> Planned {
    let requester = pick(rng, PEOPLE).to_owned();
    let (new, group, policy) = match template {
        Template::DbSession => {
            const REQUESTS: &[(&str, &str, &str, &str)] = &[
                (
                    "prod-billing",
                    "read-write",
                    "UPDATE invoices SET status = 'void', voided_at = now() WHERE id IN (884120, 884121) AND status = 'open';",
                    "INC-4821: customer double-charged after a checkout retry",
                ),
                (
                    "prod-billing",
                    "read-only",
                    "SELECT customer_id, count(*) AS charges, sum(amount_cents) FROM charges WHERE created_at > now() - interval '24 hours' GROUP BY customer_id HAVING count(*) > 20 ORDER BY 3 DESC LIMIT 50;",
                    "Fraud review: unusual charge volume flagged overnight",
                ),
                (
                    "prod-orders",
                    "read-write",
                    "DELETE FROM order_locks WHERE acquired_at < now() - interval '2 hours';",
                    "INC-4833: stale order locks are blocking fulfilment",
                ),
                (
                    "prod-accounts",
                    "read-write",
                    "UPDATE users SET mfa_enforced = true WHERE org_id = 'org_7Qm2kD';",
                    "Customer security request SUP-20931",
                ),
                (
                    "prod-billing",
                    "schema change",
                    "ALTER TABLE payments ADD COLUMN IF NOT EXISTS processor_ref text;",
                    "Hotfix for the payment reconciliation job",
                ),
            ];
            let &(db, access, query, reason) = REQUESTS.choose(rng).unwrap_or(&REQUESTS[0]);
            let host = format!("{db}.db.internal:5432");
            let new = NewAction {
                id: None,
                kind: ActionKind::DbSession,
                title: format!("psql session to {db} ({access})"),
                summary: reason.to_owned(),
                requester: requester.clone(),
                resource: db.to_owned(),
                details: vec![
                    detail("Database", format!("{db} (PostgreSQL 16, primary)")),
                    detail("Host", host),
                    detail("Access", access),
                    detail("Client", "psql 16.3 via the prod bastion gateway"),
                    detail("Query", query),
                    detail("Reason", reason),
                    detail("Session length", "30 min"),
                ],
                approvals_required: Some(2),
                expires_in_secs: Some(ttl_secs(rng)),
                web_url: None,
                form: None,
            };
            (
                new,
                &DBA,
                "Policy prod-db-access: 2 approvals from group dba".to_owned(),
            )
        }
        Template::Deployment => {
            const SERVICES: &[&str] = &[
                "checkout-api",
                "search-indexer",
                "auth-gateway",
                "notifications-worker",
                "ledger-service",
            ];
            const PRS: &[&str] = &[
                "Retry card authorisation on 502 from the processor",
                "Add rate limit to /v1/login",
                "Fix N+1 query in order history",
                "Move sessions to Redis 7",
                "Bump tokio to 1.47",
            ];
            const STRATEGIES: &[&str] = &[
                "canary 10% → 50% → 100%",
                "blue/green",
                "rolling, max unavailable 1",
            ];
            const REGIONS: &[&str] = &["eu-west-1", "us-east-1", "ap-southeast-2"];
            let service = pick(rng, SERVICES);
            let (major, minor, patch) = (
                rng.gen_range(1..5),
                rng.gen_range(0..30),
                rng.gen_range(1..10),
            );
            let version = format!("v{major}.{minor}.{patch}");
            let previous = format!("v{major}.{minor}.{}", patch - 1);
            let commit = hex_id(rng, 40);
            let pr: u32 = rng.gen_range(1800..2400);
            let commits: u32 = rng.gen_range(2..25);
            let region = pick(rng, REGIONS);
            let run: u32 = rng.gen_range(10_000..99_999);
            let new = NewAction {
                id: None,
                kind: ActionKind::Deployment,
                title: format!("Deploy {service} {version} to production"),
                summary: format!(
                    "{commits} commits since {previous}, including #{pr} \"{}\"",
                    pick(rng, PRS)
                ),
                requester: requester.clone(),
                resource: format!("{service} (production, {region})"),
                details: vec![
                    detail("Service", service),
                    detail("Version", version.clone()),
                    detail("Commit", commit),
                    detail("Environment", "production"),
                    detail("Region", region),
                    detail("Strategy", pick(rng, STRATEGIES)),
                    detail("Changes", format!("{commits} commits since {previous}")),
                ],
                approvals_required: Some(1),
                expires_in_secs: Some(ttl_secs(rng)),
                web_url: Some(format!("https://ci.acme.io/{service}/pipelines/{run}")),
                form: None,
            };
            (
                new,
                &RELEASE,
                "Policy prod-deploy: 1 approval from group release-managers".to_owned(),
            )
        }
        Template::AgentToolCall => {
            const CALLS: &[(&str, &str, &str, &str)] = &[
                (
                    "support-copilot",
                    "stripe.refunds.create",
                    r#"{"charge":"ch_3PqL2sK9aZ","amount":4999,"currency":"usd","reason":"requested_by_customer"}"#,
                    "Refund order #A-10442 after a failed delivery",
                ),
                (
                    "ops-agent",
                    "kubernetes.scale",
                    r#"{"namespace":"prod","deployment":"ingest-worker","replicas":0}"#,
                    "Pause ingestion while the queue backlog drains",
                ),
                (
                    "data-assistant",
                    "snowflake.execute",
                    r#"{"warehouse":"ANALYTICS_XL","sql":"CREATE TABLE finance.q3_churn AS SELECT account_id, churned_at FROM events.subscriptions WHERE churned_at >= '2025-07-01'"}"#,
                    "Build the Q3 churn table for the finance review",
                ),
                (
                    "release-bot",
                    "github.merge_pull_request",
                    r#"{"repo":"acme/checkout-api","pull_number":2291,"merge_method":"squash"}"#,
                    "Merge the reviewed hotfix",
                ),
                (
                    "support-copilot",
                    "zendesk.users.delete",
                    r#"{"user_id":90412231,"permanent":true}"#,
                    "GDPR erasure request from the customer",
                ),
            ];
            let &(agent, tool, args, why) = CALLS.choose(rng).unwrap_or(&CALLS[0]);
            let new = NewAction {
                id: None,
                kind: ActionKind::AgentToolCall,
                title: format!("{agent} wants to call {tool}"),
                summary: why.to_owned(),
                requester: format!("{agent} (AI agent)"),
                resource: tool.to_owned(),
                details: vec![
                    detail("Agent", agent),
                    detail("On behalf of", requester.clone()),
                    detail("Tool", tool),
                    detail("Arguments", args),
                    detail("Agent's reason", why),
                    detail("Conversation", format!("conv_{}", hex_id(rng, 12))),
                ],
                approvals_required: Some(1),
                expires_in_secs: Some(ttl_secs(rng)),
                web_url: None,
                form: None,
            };
            (
                new,
                &AI_OVERSIGHT,
                "Policy agent-tools: a person approves tools that move money or change production"
                    .to_owned(),
            )
        }
        Template::Command => {
            const COMMANDS: &[(&str, &str, &str, &str)] = &[
                (
                    "web-7.prod.eu-west-1",
                    "sudo systemctl restart nginx",
                    "root",
                    "INC-4840: 502s after a config reload",
                ),
                (
                    "kafka-2.prod.us-east-1",
                    "kafka-topics.sh --bootstrap-server localhost:9092 --alter --topic payments.events --partitions 24",
                    "kafka",
                    "Consumer lag on payments.events",
                ),
                (
                    "bastion-1.prod",
                    "sudo iptables -I INPUT -s 203.0.113.0/24 -j DROP",
                    "root",
                    "Credential-stuffing traffic from one range",
                ),
                (
                    "db-replica-3.prod.eu-west-1",
                    "sudo -u postgres pg_ctl promote -D /var/lib/postgresql/16/main",
                    "postgres",
                    "Failover drill DR-12",
                ),
                (
                    "worker-12.prod.us-east-1",
                    "sudo journalctl --vacuum-size=2G && sudo docker system prune -af",
                    "root",
                    "Disk at 94% on /var",
                ),
            ];
            let &(host, command, user, why) = COMMANDS.choose(rng).unwrap_or(&COMMANDS[0]);
            let new = NewAction {
                id: None,
                kind: ActionKind::Command,
                title: format!("Run a command on {host}"),
                summary: why.to_owned(),
                requester: requester.clone(),
                resource: host.to_owned(),
                details: vec![
                    detail("Host", host),
                    detail("Command", command),
                    detail("Run as", user),
                    detail("Reason", why),
                    detail("Session", "ssh via bastion, recorded"),
                ],
                approvals_required: Some(1),
                expires_in_secs: Some(ttl_secs(rng)),
                web_url: None,
                form: None,
            };
            (
                new,
                &SRE,
                "Policy prod-shell: 1 approval from group sre-oncall".to_owned(),
            )
        }
        Template::Terraform => {
            const WORKSPACES: &[&str] = &[
                "network-prod",
                "iam-prod",
                "data-platform-prod",
                "edge-prod",
            ];
            const RESOURCES: &[&str] = &[
                "aws_security_group_rule.ingress_https",
                "aws_lb_listener.https",
                "aws_route53_record.api",
                "aws_iam_role_policy.ci_deploy",
                "aws_s3_bucket_lifecycle_configuration.logs",
                "aws_wafv2_web_acl.edge",
                "aws_lb_listener.http_legacy",
            ];
            let workspace = pick(rng, WORKSPACES);
            let add = rng.gen_range(1..=4usize);
            let change = rng.gen_range(0..=2usize);
            let destroy = usize::from(rng.gen_bool(0.3));
            let mut touched: Vec<&str> = RESOURCES.to_vec();
            touched.shuffle(rng);
            let mut lines = Vec::new();
            for (i, name) in touched.iter().take(add + change + destroy).enumerate() {
                let sign = if i < add {
                    '+'
                } else if i < add + change {
                    '~'
                } else {
                    '-'
                };
                lines.push(format!("{sign} {name}"));
            }
            let plan = format!("+{add} ~{change} -{destroy}");
            let approvals = if destroy > 0 || workspace == "iam-prod" {
                2
            } else {
                1
            };
            let run = hex_id(rng, 10);
            let new = NewAction {
                id: None,
                kind: ActionKind::Other,
                title: format!("terraform apply {workspace} ({plan})"),
                summary: format!(
                    "Plan {plan}: {add} to add, {change} to change, {destroy} to destroy"
                ),
                requester: requester.clone(),
                resource: format!("terraform workspace {workspace}"),
                details: vec![
                    detail("Workspace", workspace),
                    detail("Plan", plan),
                    detail("Resources", lines.join("\n")),
                    detail("Terraform", "1.9.5"),
                    detail("Run", format!("run-{run}")),
                ],
                approvals_required: Some(approvals),
                expires_in_secs: Some(ttl_secs(rng)),
                web_url: Some(format!(
                    "https://tf.acme.io/workspaces/{workspace}/runs/run-{run}"
                )),
                form: None,
            };
            let policy = if approvals == 2 {
                "Policy infra-apply: 2 approvals from group platform (destroys or IAM)"
            } else {
                "Policy infra-apply: 1 approval from group platform"
            };
            (new, &PLATFORM, policy.to_owned())
        }
    };

    let policy_at = Duration::from_millis(rng.gen_range(2_000..=5_000));
    let assign_at = Duration::from_millis(rng.gen_range(5_000..=10_000))
        .max(policy_at + Duration::from_millis(500));
    let assignee = pick(rng, group.on_call).to_owned();
    let mut beats = vec![
        (policy_at, Beat::PolicyEvaluated(policy)),
        (
            assign_at,
            Beat::ReviewerAssigned(format!(
                "Assigned to group {} (on call: {assignee})",
                group.name
            )),
        ),
    ];
    if new.approvals_required == Some(2) {
        let others: Vec<&str> = group
            .on_call
            .iter()
            .copied()
            .filter(|p| *p != requester)
            .collect();
        beats.push((
            Duration::from_millis(rng.gen_range(20_000..=60_000)),
            Beat::SecondReview {
                reviewer: pick(rng, &others).to_owned(),
                comment: pick(rng, group.comments).to_owned(),
            },
        ));
    }
    Planned { new, beats }
}

/// Seconds until the next arrival of a Poisson process with `rate_per_min`.
fn next_arrival<R: Rng>(rng: &mut R, rate_per_min: f64) -> Duration {
    let u: f64 = rng.gen_range(f64::EPSILON..=1.0);
    let secs = -u.ln() * 60.0 / rate_per_min;
    Duration::from_secs_f64(secs.clamp(0.5, 86_400.0))
}

struct Scheduled {
    at: Instant,
    seq: u64,
    action_id: String,
    beat: Beat,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(crate) struct Scenario {
    store: Arc<Store>,
    rng: StdRng,
    rate_per_min: f64,
    created: usize,
    first_kinds: Vec<Template>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
}

impl Scenario {
    pub(crate) fn new(store: Arc<Store>, config: &ScenarioConfig) -> Self {
        let mut rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        // The first five requests show one of each kind, in a random order.
        let mut first_kinds = TEMPLATES.to_vec();
        first_kinds.shuffle(&mut rng);
        Self {
            store,
            rng,
            rate_per_min: config.rate_per_min,
            created: 0,
            first_kinds,
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Creates one request now and schedules its steps.
    pub(crate) async fn create_one(&mut self) -> Result<(), StoreError> {
        let template = match self.first_kinds.get(self.created) {
            Some(t) => *t,
            None => TEMPLATES
                .choose(&mut self.rng)
                .copied()
                .unwrap_or(Template::Command),
        };
        self.created += 1;
        let planned = generate(&mut self.rng, template);
        let new = planned.new;
        let created = self
            .store
            .call(move |s| {
                s.create(new, now())
                    .map_err(|e| StoreError::Corrupt(format!("demo request refused: {e:?}")))
            })
            .await?;
        let start = Instant::now();
        for (after, beat) in planned.beats {
            self.seq += 1;
            self.queue.push(Reverse(Scheduled {
                at: start + after,
                seq: self.seq,
                action_id: created.0.id.clone(),
                beat,
            }));
        }
        Ok(())
    }

    pub(crate) async fn run(mut self, mut shutdown: Shutdown) {
        let mut arrival = (self.rate_per_min > 0.0)
            .then(|| Instant::now() + next_arrival(&mut self.rng, self.rate_per_min));
        loop {
            let next_beat = self.queue.peek().map(|Reverse(s)| s.at);
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = sleep_until(arrival) => {
                    if let Err(e) = self.create_one().await {
                        tracing::warn!(error = %e, "demo scenario could not create a request");
                    }
                    arrival = Some(Instant::now() + next_arrival(&mut self.rng, self.rate_per_min));
                }
                _ = sleep_until(next_beat) => {
                    if let Some(Reverse(due)) = self.queue.pop() {
                        let step = due.beat.into_step();
                        let id = due.action_id;
                        if let Err(e) = self.store.call(move |s| s.apply_step(&id, step, now())).await {
                            tracing::warn!(error = %e, "demo scenario step failed");
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::validate_new;

    #[test]
    fn every_template_generates_a_valid_request_with_a_timeline_script() {
        let mut rng = StdRng::seed_from_u64(7);
        for template in TEMPLATES {
            for _ in 0..20 {
                let p = generate(&mut rng, template);
                validate_new(&p.new).expect("valid request");
                assert!(!p.new.details.is_empty());
                let ttl = p.new.expires_in_secs.expect("expires");
                assert!((120..=1800).contains(&ttl), "{ttl}");
                let (policy, assign) = (&p.beats[0], &p.beats[1]);
                assert!(matches!(policy.1, Beat::PolicyEvaluated(_)));
                assert!(matches!(assign.1, Beat::ReviewerAssigned(_)));
                assert!(policy.0 >= Duration::from_secs(2) && policy.0 <= Duration::from_secs(5));
                assert!(assign.0 > policy.0 && assign.0 <= Duration::from_secs(10));
                let two = p.new.approvals_required == Some(2);
                assert_eq!(p.beats.len(), if two { 3 } else { 2 });
                if let Some((at, Beat::SecondReview { reviewer, .. })) = p.beats.get(2) {
                    assert!(*at >= Duration::from_secs(20) && *at <= Duration::from_secs(60));
                    assert_ne!(reviewer, &p.new.requester);
                }
            }
        }
    }

    #[test]
    fn db_sessions_need_two_approvals_and_carry_the_exact_query() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = generate(&mut rng, Template::DbSession);
        assert_eq!(p.new.kind, ActionKind::DbSession);
        assert_eq!(p.new.approvals_required, Some(2));
        let query = p
            .new
            .details
            .iter()
            .find(|d| d.key == "Query")
            .expect("query");
        assert!(query.value.ends_with(';'));
    }

    #[test]
    fn about_one_in_four_requests_is_short_lived() {
        let mut rng = StdRng::seed_from_u64(42);
        let short = (0..1000).filter(|_| ttl_secs(&mut rng) <= 240).count();
        assert!((200..=300).contains(&short), "{short}");
    }

    #[test]
    fn arrivals_average_to_the_rate() {
        let mut rng = StdRng::seed_from_u64(3);
        let total: f64 = (0..2000)
            .map(|_| next_arrival(&mut rng, 6.0).as_secs_f64())
            .sum();
        let mean = total / 2000.0;
        assert!((8.5..=11.5).contains(&mean), "{mean}");
    }

    #[test]
    fn seeded_scenarios_are_reproducible() {
        let a = generate(&mut StdRng::seed_from_u64(9), Template::Deployment);
        let b = generate(&mut StdRng::seed_from_u64(9), Template::Deployment);
        assert_eq!(a.new, b.new);
        assert_eq!(a.beats, b.beats);
    }
}
