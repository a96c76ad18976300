//! The real Countersign window, end to end: Xvfb, tauri-driver, WebKitWebDriver and the
//! `countersign-app` binary against the reference server as its own process. Each test
//! is its own session (own display, server, temp dirs); nextest runs them one at a time
//! (test group `e2e` in .config/nextest.toml).
//!
//! The UI is addressed only through its `data-testid` contract (docs in the harness).

mod common;
mod e2e;

#[path = "common/airflow.rs"]
mod airflow;
#[path = "common/prefect.rs"]
mod prefect;

use std::time::Duration;

use common::{new_action, Producer};
use countersign_core::model::{ActionStatus, Detail};
use e2e::{row, E2e, APPROVER, WAIT};

const ROWS: &str = r#"[data-testid="inbox-row"]"#;
const DETAIL: &str = r#"[data-testid="detail"]"#;
const DETAIL_TITLE: &str = r#"[data-testid="detail-title"]"#;
const REASON: &str = r#"[data-testid="reason"]"#;
const APPROVE: &str = r#"[data-testid="approve"]"#;
const RESULT: &str = r#"[data-testid="decision-result"]"#;
const STALE: &str = r#"[data-testid="stale-refusal"]"#;

fn event(kind: &str) -> String {
    format!(r#"[data-testid="timeline-event"][data-kind="{kind}"]"#)
}

/// A realistic small inbox, so the README screenshot shows something worth seeing.
async fn seed(producer: &Producer) {
    use countersign_core::model::ActionKind;
    let mut deploy = new_action("deploy-4812", "Deploy billing-api v2.31.0 to production");
    deploy.kind = ActionKind::Deployment;
    deploy.requester = "ci@example.com".into();
    deploy.resource = "billing-api".into();
    deploy.summary = "Canary passed; 14 commits since v2.30.2".into();
    deploy.details = vec![
        Detail {
            key: "image".into(),
            value: "registry.example.com/billing-api:2.31.0".into(),
        },
        Detail {
            key: "strategy".into(),
            value: "rolling, 25% at a time".into(),
        },
    ];
    producer.create(&deploy).await;
    let mut tool = new_action("agent-77", "Agent wants to run `terraform apply`");
    tool.kind = ActionKind::AgentToolCall;
    tool.requester = "ops-agent".into();
    tool.resource = "infra/prod".into();
    tool.details = vec![Detail {
        key: "plan".into(),
        value: "2 to add, 1 to change, 0 to destroy".into(),
    }];
    producer.create(&tool).await;
}

#[tokio::test]
async fn smoke_window_opens() {
    let mut e2e = E2e::start("smoke_window_opens");
    e2e.launch().await;
    assert_eq!(e2e.title().await, "Countersign");
    // Scripts from WebDriver run despite the strict CSP (the helpers rely on it).
    let end = std::time::Instant::now() + WAIT;
    while e2e.js("return document.readyState;", vec![]).await != "complete" {
        assert!(std::time::Instant::now() < end, "document never loaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What tauri-driver was given is what the app process runs with.
    let env = e2e.app_process_env();
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing in the app's environment"))
    };
    assert_eq!(get("DISPLAY"), e2e.xvfb.name());
    assert_eq!(
        get("COUNTERSIGN_CONFIG"),
        e2e.config_path().display().to_string()
    );
    assert_eq!(
        get("COUNTERSIGN_DATA_DIR"),
        e2e.data_dir().display().to_string()
    );
    assert_eq!(get(e2e::TOKEN_ENV), common::TOKEN);
    assert_eq!(
        get("HOME"),
        e2e.dir.path().join("home").display().to_string()
    );
    assert!(get("XDG_DATA_HOME").starts_with(&e2e.dir.path().display().to_string()));

    let shot = e2e.screenshot("window").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    e2e.close().await;
}

#[tokio::test]
async fn inbox_lists_server_actions() {
    let mut e2e = E2e::start("inbox_lists_server_actions");
    e2e.producer
        .create(&new_action("a-1", "Read-only session on prod-billing"))
        .await;
    e2e.producer
        .create(&new_action("a-2", "Second pending request"))
        .await;
    e2e.launch_ready().await;

    e2e.wait_for(&row("a-1"), WAIT).await;
    e2e.wait_for(&row("a-2"), WAIT).await;
    let mut keys = Vec::new();
    for el in e2e.find_all(ROWS).await {
        keys.push(el.attr("data-key").await.unwrap().unwrap_or_default());
    }
    keys.sort();
    assert_eq!(keys, ["prod/a-1", "prod/a-2"]);
    e2e.close().await;
}

#[tokio::test]
async fn new_action_appears_without_reload() {
    let mut e2e = E2e::start("new_action_appears_without_reload");
    e2e.producer
        .create(&new_action("first", "Already there"))
        .await;
    e2e.launch_ready().await;
    e2e.wait_for(&row("first"), WAIT).await;

    // Mark the document: a reload would lose the mark.
    e2e.js("window.__e2eMark = 42; return null;", vec![]).await;
    e2e.producer
        .create(&new_action("late", "Created while the window is open"))
        .await;
    e2e.wait_for(&row("late"), WAIT).await;
    let mark = e2e.js("return window.__e2eMark ?? null;", vec![]).await;
    assert_eq!(mark, 42, "the page was reloaded");
    assert_eq!(e2e.count(ROWS).await, 2);
    e2e.close().await;
}

#[tokio::test]
async fn detail_shows_timeline() {
    let mut e2e = E2e::start("detail_shows_timeline");
    seed(&e2e.producer).await;
    e2e.producer
        .create(&new_action("db-9", "Read-only session on prod-billing"))
        .await;
    e2e.launch_ready().await;

    e2e.click(&row("deploy-4812")).await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.wait_text(DETAIL_TITLE, WAIT, |t| {
        t == "Deploy billing-api v2.31.0 to production"
    })
    .await;
    e2e.wait_for(&event("requested"), WAIT).await;
    // Opening it is itself recorded (the server tells the requester someone looked).
    e2e.wait_for(&event("viewed"), WAIT).await;
    let fields = e2e
        .text_contents(r#"[data-testid="detail-field"]"#)
        .await
        .join("\n");
    assert!(
        fields.contains("registry.example.com/billing-api:2.31.0"),
        "{fields}"
    );
    e2e.screenshot("inbox-detail").await;
    e2e.close().await;
}

#[tokio::test]
async fn approve_with_reason_records_one_decision() {
    let mut e2e = E2e::start("approve_with_reason_records_one_decision");
    e2e.producer
        .create(&new_action("ok-1", "Read-only session on prod-billing"))
        .await;
    e2e.launch_ready().await;

    e2e.click(&row("ok-1")).await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.type_text(REASON, "Reconciliation ticket FIN-2231")
        .await;
    e2e.click(APPROVE).await;
    e2e.wait_for(RESULT, WAIT).await;
    e2e.wait_gone(&row("ok-1"), WAIT).await;

    let action = e2e.producer.get("ok-1").await;
    assert_eq!(action.snapshot.reviews.len(), 1, "{:?}", action.snapshot);
    assert_eq!(action.snapshot.reviews[0].reviewer, APPROVER);
    assert_eq!(action.snapshot.status, ActionStatus::Approved);
    e2e.close().await;
}

#[tokio::test]
async fn stale_snapshot_is_refused() {
    let mut e2e = E2e::start("stale_snapshot_is_refused");
    let mut two = new_action("two-1", "Needs two approvals");
    two.approvals_required = Some(2);
    e2e.producer.create(&two).await;
    e2e.launch_ready().await;

    e2e.click(&row("two-1")).await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.wait_for(&event("viewed"), WAIT).await;

    // Another reviewer approves straight on the server while the detail is open.
    let seen = e2e.producer.get("two-1").await;
    e2e.producer
        .decide_as(
            "two-1",
            "sam@example.com",
            seen.snapshot_hash.as_str(),
            "sam-1",
        )
        .await;

    e2e.type_text(REASON, "Looks fine").await;
    e2e.click(APPROVE).await;
    e2e.wait_for(STALE, WAIT).await;
    e2e.wait_for(
        r#"[data-testid="stale-refusal"] [data-testid="changed-field"][data-field="reviews"]"#,
        WAIT,
    )
    .await;

    let after = e2e.producer.get("two-1").await;
    let reviewers: Vec<_> = after.snapshot.reviews.iter().map(|r| &r.reviewer).collect();
    assert_eq!(reviewers, ["sam@example.com"], "{:?}", after.snapshot);
    assert_eq!(after.snapshot.status, ActionStatus::Pending);
    e2e.close().await;
}

#[tokio::test]
async fn hostile_text_stays_text() {
    const TITLE: &str =
        r#"<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>"#;
    const VALUE: &str = "<b>bold</b><script>alert(1)</script>";
    let mut e2e = E2e::start("hostile_text_stays_text");
    let mut evil = new_action("evil-1", TITLE);
    evil.summary = TITLE.into();
    evil.details = vec![Detail {
        key: "payload".into(),
        value: VALUE.into(),
    }];
    e2e.producer.create(&evil).await;
    e2e.launch_ready().await;

    let inbox = e2e.text_contents(&row("evil-1")).await.join("\n");
    assert!(inbox.contains(TITLE), "inbox row: {inbox:?}");
    e2e.click(&row("evil-1")).await;
    e2e.wait_for(DETAIL, WAIT).await;
    assert_eq!(e2e.text(DETAIL_TITLE).await, TITLE);

    // Some element inside the detail holds exactly the value, as text.
    let exact = e2e
        .js(
            "const want = arguments[0];
             return Array.from(document.querySelectorAll(
               '[data-testid=\"detail\"] [data-testid=\"detail-field\"], \
                [data-testid=\"detail\"] [data-testid=\"detail-field\"] *'))
               .some(e => e.textContent.trim() === want);",
            vec![serde_json::json!(VALUE)],
        )
        .await;
    let fields = e2e.text_contents(r#"[data-testid="detail-field"]"#).await;
    assert_eq!(exact, true, "no detail field shows {VALUE:?}: {fields:?}");

    // Give a would-be onerror/script a moment to run before asserting it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        e2e.client().get_alert_text().await.is_err(),
        "an alert opened"
    );
    assert_eq!(e2e.title().await, "Countersign");
    let injected = r#"[data-testid="detail"] script, [data-testid="detail"] img,
        [data-testid="inbox-row"] script, [data-testid="inbox-row"] img"#;
    assert_eq!(
        e2e.count(injected).await,
        0,
        "markup from the payload was parsed"
    );
    let bold = e2e
        .js(
            "return Array.from(document.querySelectorAll('[data-testid=\"detail\"] b'))
               .some(e => e.textContent === 'bold');",
            vec![],
        )
        .await;
    assert_eq!(bold, false, "<b>bold</b> was parsed as markup");
    e2e.close().await;
}

/// Issue 5 in the window: a decision made there is signed with the keyring-held key and
/// accepted by a server that only takes signed decisions; the audit view's export
/// through the save dialog writes a CSV that `countersign verify` accepts.
#[tokio::test]
async fn signed_approval_then_audit_export_verifies() {
    let mut e2e = E2e::start("signed_approval_then_audit_export_verifies");
    seed(&e2e.producer).await;
    let signers = e2e.require_signatures();
    e2e.launch_ready().await;

    e2e.click(&row("deploy-4812")).await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.type_text(REASON, "CHG-881 approved in CAB").await;
    e2e.click(APPROVE).await;
    e2e.wait_for(
        r#"[data-testid="decision-result"][data-outcome="delivered"]"#,
        WAIT,
    )
    .await;
    let theirs = e2e.producer.get("deploy-4812").await;
    assert_eq!(
        theirs.snapshot.reviews.len(),
        1,
        "the signed decision was accepted"
    );
    assert_eq!(theirs.snapshot.reviews[0].reviewer, APPROVER);

    let csv = e2e.dir.path().join("window-export.csv");
    // The audit view, no date range or backend: the whole chain.
    e2e.click(r#"[data-testid="nav-audit"]"#).await;
    e2e.click(r#"[data-testid="export-csv"]"#).await;
    e2e.answer_save_dialog("Export the audit log", &csv);
    e2e.wait_for(
        r#"[data-testid="audit-export-result"][data-ok="true"]"#,
        WAIT,
    )
    .await;
    e2e.screenshot("audit-exported").await;
    let out = std::process::Command::new(common::bin("countersign"))
        .arg("verify")
        .arg(&csv)
        .arg("--allowed-signers")
        .arg(&signers)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("2 entries, 1 signatures verified"), "{text}");
    e2e.close().await;
}

/// Issue 6 in the window: a real Airflow human-in-the-loop step (options, several may be
/// chosen, typed params) is answered by choosing; Airflow records exactly that answer.
#[tokio::test]
async fn airflow_options_and_params_are_answered_in_the_window() {
    let mut e2e = E2e::start("airflow_options_and_params_are_answered_in_the_window");
    let af = airflow::Airflow::start(&e2e.dir.path().join("airflow")).await;
    af.trigger("win-1").await;
    af.await_open_steps(3).await;
    let mut config = std::fs::read_to_string(e2e.config_path()).unwrap();
    config.push_str(&format!(
        "\n[[backend]]\nname = \"airflow\"\nkind = \"airflow\"\nurl = \"{}\"\n\
         token_env = \"{}\"\npoll_interval_secs = 2\n\n[backend.options]\nusername = \"{}\"\n",
        af.url,
        e2e::TOKEN_ENV,
        airflow::USER
    ));
    std::fs::write(e2e.config_path(), config).unwrap();
    e2e.launch_ready().await;

    let step =
        r#"[data-testid="inbox-row"][data-key="airflow/countersign_hitl/win-1/choose_region/-1"]"#;
    e2e.click(step).await;
    e2e.wait_for(DETAIL, WAIT).await;
    let option = |name: &str| format!(r#"[data-testid="form-option"][data-option="{name}"] input"#);
    e2e.wait_for(&option("Deploy US"), WAIT).await;
    let offered = e2e.text_contents(r#"[data-testid="form-option"]"#).await;
    assert_eq!(offered.len(), 3, "{offered:?}");
    assert_eq!(e2e.count(APPROVE).await, 0, "a choice step is not approved");
    e2e.wait_for(r#"[data-testid="form-field"][data-field="replicas"]"#, WAIT)
        .await;
    e2e.screenshot("airflow-form").await;

    // Skip is the default: drop it, pick Deploy US, 3 replicas.
    e2e.click(&option("Skip")).await;
    e2e.click(&option("Deploy US")).await;
    let replicas = e2e.wait_for("#form-field-replicas", WAIT).await;
    replicas.clear().await.expect("clear replicas");
    replicas.send_keys("3").await.expect("type replicas");
    e2e.click(r#"[data-testid="choose"]"#).await;
    e2e.wait_for(
        r#"[data-testid="decision-result"][data-outcome="delivered"]"#,
        Duration::from_secs(30),
    )
    .await;
    e2e.screenshot("airflow-chosen").await;
    let answer = af.hitl("win-1", "choose_region").await;
    assert_eq!(
        answer["chosen_options"],
        serde_json::json!(["Deploy US"]),
        "{answer}"
    );
    assert_eq!(answer["params_input"]["replicas"], 3, "{answer}");
    e2e.close().await;
}

/// Issue 6 in the window: a real Prefect run paused for input shows its form (typed
/// fields from the run input's JSON Schema); approving resumes it with the answer.
#[tokio::test]
async fn a_prefect_input_form_is_shown_and_approving_resumes_the_run() {
    let mut e2e = E2e::start("a_prefect_input_form_is_shown_and_approving_resumes_the_run");
    let (_server, url) = prefect::start_server(e2e.dir.path()).await;
    let (_flow, out) = prefect::start_flow(e2e.dir.path(), &url, "win-gate");
    let mut config = std::fs::read_to_string(e2e.config_path()).unwrap();
    config.push_str(&format!(
        "\n[[backend]]\nname = \"prefect\"\nkind = \"prefect\"\nurl = \"{url}\"\n\
         poll_interval_secs = 2\n"
    ));
    std::fs::write(e2e.config_path(), config).unwrap();
    e2e.launch_ready().await;

    let row = r#"[data-testid="inbox-row"][data-key^="prefect/"]"#;
    e2e.wait_for(row, Duration::from_secs(60)).await;
    e2e.click(row).await;
    e2e.wait_for(DETAIL, WAIT).await;
    e2e.wait_for(
        r#"[data-testid="form-field"][data-field="approved"][data-type="boolean"]"#,
        WAIT,
    )
    .await;
    e2e.wait_for(
        r#"[data-testid="form-field"][data-field="reason"][data-type="text"]"#,
        WAIT,
    )
    .await;
    assert_eq!(e2e.count(r#"[data-testid="form-option"]"#).await, 0);
    e2e.screenshot("prefect-form").await;

    e2e.type_text(REASON, "CAB-77 signed off").await;
    e2e.click(APPROVE).await;
    e2e.wait_for(
        r#"[data-testid="decision-result"][data-outcome="delivered"]"#,
        Duration::from_secs(30),
    )
    .await;
    // The flow got the answer and wrote it down.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let answer: serde_json::Value = loop {
        if let Ok(text) = std::fs::read_to_string(&out) {
            break serde_json::from_str(&text).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flow never resumed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(answer["approved"], true, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .unwrap()
            .starts_with("CAB-77 signed off [countersign "),
        "{answer}"
    );
    e2e.close().await;
}
