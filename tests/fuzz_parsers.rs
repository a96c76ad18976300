//! The fuzz targets of `fuzz/` as a bounded, seeded property loop on stable Rust, so CI
//! runs something real without nightly or cargo-fuzz: every backend's response parsers
//! and the audit CSV verifier get realistic seeds, then thousands of mutations of them
//! (bit flips, byte edits, splices, truncations, JSON-ish tokens dropped in); each must
//! return — an error is fine — and never panic.
//!
//! `FUZZ_ITERATIONS` (per target, default 2,000) and `FUZZ_SEED` change the run (the seed
//! is printed; a failure prints the input as hex). `FUZZ_WRITE_SEEDS=DIR` writes the
//! seeds as `DIR/<target>/seed-N`, the corpus `scripts/fuzz.sh` starts cargo-fuzz from.

use std::panic::AssertUnwindSafe;

use countersign_core::backends::fuzzing;
use countersign_core::model::{ActionKey, ActionKind, ActionSnapshot, ActionStatus, PendingAction};
use countersign_core::protocol::{WireAction, WireTimelineEvent};

type Target = fn(&[u8]);

fn targets() -> Vec<(&'static str, Target, Vec<Vec<u8>>)> {
    vec![
        (
            "countersign",
            fuzzing::countersign as Target,
            countersign_seeds(),
        ),
        ("hoop", fuzzing::hoop, hoop_seeds()),
        ("github", fuzzing::github, github_seeds()),
        ("prefect", fuzzing::prefect, prefect_seeds()),
        ("airflow", fuzzing::airflow, airflow_seeds()),
        ("exec", fuzzing::exec, exec_seeds()),
        ("audit_csv", fuzzing::audit_csv, csv_seeds()),
    ]
}

fn wire(id: &str) -> WireAction {
    let snapshot = ActionSnapshot {
        kind: ActionKind::Command,
        title: format!("restart {id}"),
        summary: "**bold** and `code`\nsecond line".into(),
        requester: "dana@example.com".into(),
        requested_at: "2026-11-25T06:00:00Z".parse().unwrap(),
        expires_at: Some("2026-11-25T07:00:00Z".parse().unwrap()),
        resource: "host-1".into(),
        details: vec![countersign_core::model::Detail {
            key: "query".into(),
            value: "SELECT 1".into(),
        }],
        approvals_required: 2,
        reviews: vec![],
        status: ActionStatus::Pending,
        web_url: Some("https://example.com/a".into()),
        form: None,
    };
    let action = PendingAction::new(ActionKey::new("fuzz", id), snapshot.clone());
    WireAction {
        id: id.to_owned(),
        snapshot,
        snapshot_hash: action.snapshot_hash,
        timeline: vec![WireTimelineEvent {
            id: "e1".into(),
            at: "2026-11-25T06:00:00Z".parse().unwrap(),
            kind: "requested".into(),
            actor: Some("dana".into()),
            text: "requested".into(),
        }],
    }
}

fn countersign_seeds() -> Vec<Vec<u8>> {
    let a = serde_json::to_string(&wire("a1")).unwrap();
    vec![
        format!(r#"{{"actions":[{a},{}],"cursor":"12"}}"#, serde_json::to_string(&wire("a2")).unwrap()).into_bytes(),
        format!(r#"{{"action":{a}}}"#).into_bytes(),
        format!(
            "id: 13\nevent: action.created\ndata: {a}\n\n: ping\r\nid: 14\nevent: timeline.appended\ndata: {{\"action_id\":\"a1\",\"event\":{{\"id\":\"e2\",\"at\":1764050400000,\"kind\":\"comment\",\"text\":\"hi\"}}}}\n\n"
        )
        .into_bytes(),
    ]
}

fn compact(path: &str) -> String {
    let text = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&text).unwrap()).unwrap()
}

fn hoop_seeds() -> Vec<Vec<u8>> {
    let reviews = compact("tests/fixtures/hoop/reviews.json");
    let sessions: serde_json::Value =
        serde_json::from_str(&compact("tests/fixtures/hoop/sessions.json")).unwrap();
    let session = serde_json::to_string(&sessions[0]).unwrap();
    vec![
        format!("{reviews}\n{session}").into_bytes(),
        compact("tests/fixtures/hoop/reviews_malformed.json").into_bytes(),
    ]
}

fn github_seeds() -> Vec<Vec<u8>> {
    let runs = r#"{"total_count":1,"workflow_runs":[{"id":7,"name":"deploy","display_title":"Ship it","head_branch":"main","head_sha":"0123abc","run_number":42,"event":"push","path":".github/workflows/deploy.yml","status":"waiting","html_url":"https://github.com/o/r/actions/runs/7","created_at":"2026-11-25T06:00:00Z","actor":{"login":"dana"},"triggering_actor":{"login":"dana"}}]}"#;
    let pending = r#"[{"environment":{"id":5,"name":"production"},"wait_timer":30,"wait_timer_started_at":"2026-11-25T06:00:00Z","current_user_can_approve":true,"reviewers":[{"type":"User","reviewer":{"login":"ana"}},{"type":"Team","reviewer":{"slug":"ops"}}]}]"#;
    let approvals = r#"[{"environments":[{"id":5,"name":"production"}],"state":"approved","user":{"login":"bob"},"comment":"ok"}]"#;
    vec![format!("{runs}\n{pending}\n{approvals}").into_bytes()]
}

fn prefect_seeds() -> Vec<Vec<u8>> {
    let runs = r#"[{"id":"r1","name":"nimble-fox","flow_id":"f1","deployment_id":"d1","parameters":{"n":1},"tags":["prod"],"created_by":{"display_value":"dana","type":"USER"},"created":"2026-11-25T06:00:00Z","state":{"id":"s1","type":"PAUSED","name":"Suspended","timestamp":"2026-11-25T06:01:00Z","message":"waiting","state_details":{"pause_timeout":"2026-11-25T07:00:00Z","run_input_keyset":{"description":"paused-1-description","response":"paused-1-response","schema":"paused-1-schema"}}}}]"#;
    let states = r#"[{"type":"RUNNING","name":"Running","timestamp":"2026-11-25T06:00:30Z"},{"type":"PAUSED","name":"Paused","timestamp":"2026-11-25T06:01:00Z"}]"#;
    let schema = r#"{"title":"Approve","type":"object","properties":{"approved":{"type":"boolean","default":false},"reason":{"type":"string","title":"Reason"},"level":{"enum":["a","b"]}},"required":["approved"]}"#;
    vec![format!("{runs}\n{states}\n{schema}").into_bytes()]
}

fn airflow_seeds() -> Vec<Vec<u8>> {
    let list = r##"{"hitl_details":[{"task_instance":{"dag_id":"deploy","dag_run_id":"manual__2026-11-25T06:00:00+00:00","task_id":"approve","map_index":-1,"state":"deferred","dag_display_name":"Deploy","task_display_name":"Approve","operator":"HITLOperator","note":null,"rendered_map_index":null},"options":["Approve","Reject","Later"],"subject":"Ship **v2**?","body":"# Release\n* item _one_\n`code` [link](https://x)","defaults":["Later"],"multiple":true,"params":{"count":{"value":3,"description":"how many","schema":{"type":"integer","minimum":1}},"note":{"value":"","schema":{"type":"string"}}},"assigned_users":[{"id":"1","name":"ana"}],"created_at":"2026-11-25T06:00:00Z","responded_by_user":null,"responded_at":null,"chosen_options":null,"params_input":{},"response_received":false}],"total_entries":1}"##;
    let run = r#"{"triggering_user_name":"dana","triggered_by":"ui","run_type":"manual","conf":{"version":"2.0"}}"#;
    let tries = r#"{"task_instances":[{"try_number":1,"state":"failed","start_date":"2026-11-25T06:00:00Z","end_date":"2026-11-25T06:00:10Z"},{"try_number":2,"state":"deferred"}],"total_entries":2}"#;
    vec![format!("{list}\n{run}\n{tries}").into_bytes()]
}

fn exec_seeds() -> Vec<Vec<u8>> {
    let mut action = serde_json::to_value(wire("p1")).unwrap();
    action.as_object_mut().unwrap().remove("snapshot_hash");
    vec![
        format!(r#"{{"actions":[{action}]}}"#).into_bytes(),
        action.to_string().into_bytes(),
        format!(
            "{{\"type\":\"upsert\",\"event_id\":\"3\",\"action\":{action}}}\n{{\"type\":\"timeline\",\"action_id\":\"p1\",\"event\":{{\"id\":\"e9\",\"at\":1764050400000,\"kind\":\"comment\",\"text\":\"hi\"}}}}\n{{\"type\":\"heartbeat\"}}\n{{\"type\":\"error\",\"error\":{{\"code\":\"x\",\"message\":\"boom\"}}}}\n"
        )
        .into_bytes(),
    ]
}

fn csv_seeds() -> Vec<Vec<u8>> {
    // A real export: a store with a decision-less chain still has its header and rows;
    // the verifier's format comes from the exporter itself.
    let dir = tempfile::tempdir().unwrap();
    let store = countersign_core::store::Store::open_in_dir(dir.path()).unwrap();
    let engine = countersign_core::Engine::new(store, "ana").with_key_store(std::sync::Arc::new(
        countersign_core::signer::MemoryKeyStore::default(),
    ));
    engine.rotate_key(chrono::Utc::now()).unwrap();
    engine.rotate_key(chrono::Utc::now()).unwrap();
    let entries = engine.audit(&Default::default()).unwrap();
    let mut text = Vec::new();
    countersign_core::export::write_csv(&entries, &mut text).unwrap();
    assert!(text.len() > 100, "an export with rows");
    vec![text]
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"-9223372036854775809",
    b"18446744073709551616",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\ud800\"",
    b"\xff\xfe",
    b"\"2026-13-45T25:61:61Z\"",
    b"\"9999-12-31T23:59:59Z\"",
    b"\"-262144-01-01T00:00:00Z\"",
    b"[[[[[[[[",
    b"\n",
    b"\r\n\r\n",
    b"data: ",
    b"id: \0",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\x1b[31m",
    "\u{202e}".as_bytes(),
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = data.len().max(1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len);
                let end = (i + rng.below(32)).min(data.len());
                data.drain(i.min(data.len())..end);
            }
            3 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(data.len() + 1);
                data.splice(i..i, t.iter().copied());
            }
            4 => {
                // Replace a JSON value after a colon with a token of another type.
                let colons: Vec<usize> = data
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b':')
                    .map(|(i, _)| i + 1)
                    .collect();
                if let Some(&at) = colons.get(rng.below(colons.len().max(1))) {
                    let end = data[at..]
                        .iter()
                        .position(|&b| b == b',' || b == b'}')
                        .map_or(data.len(), |p| at + p);
                    let t = TOKENS[rng.below(TOKENS.len())];
                    data.splice(at..end, t.iter().copied());
                }
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let (i, j) = (rng.below(data.len() + 1), rng.below(other.len() + 1));
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            _ => {
                data.truncate(rng.below(len + 1));
            }
        }
    }
    data
}

#[test]
fn every_parser_survives_mutated_input() {
    let iterations: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de_2026_1125);
    eprintln!("FUZZ_SEED={seed} FUZZ_ITERATIONS={iterations}");
    let write = std::env::var_os("FUZZ_WRITE_SEEDS");
    for (name, target, seeds) in targets() {
        if let Some(dir) = &write {
            let dir = std::path::Path::new(dir).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for (i, s) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), s).unwrap();
            }
        }
        let mut rng = Rng(seed ^ name.len() as u64 ^ 0x9e37_79b9_7f4a_7c15);
        let inputs = seeds
            .iter()
            .cloned()
            .chain((0..iterations).map(|_| mutate(&mut rng, &seeds)));
        for input in inputs {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target(&input)));
            assert!(
                outcome.is_ok(),
                "{name} panicked on input (hex) {}",
                hex::encode(&input)
            );
        }
    }
}
