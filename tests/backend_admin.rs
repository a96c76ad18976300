//! `countersign backend add|test|remove|set-token` as a person uses them: the real binary
//! with its own config and data directory, the reference server as its own process, and
//! the real Secret Service (run inside `bash scripts/with-keyring.sh`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

#[path = "common/github_hub.rs"]
mod github_hub;

/// The keyring entry `env`'s token for backend `name` is kept under.
fn token_entry(env: &CliEnv, name: &str) -> String {
    format!("{}/backend-token:{name}", env.keyring_entry())
}

fn keyring_lookup(entry: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "countersign", "username", entry])
        .output()
        .expect("run secret-tool (inside scripts/with-keyring.sh)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `backend set-token NAME` with `token` on standard input.
fn set_token(env: &CliEnv, name: &str, token: &str) -> std::process::Output {
    let mut child = env
        .cmd(&["backend", "set-token", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_backend_command_has_help() {
    let env = CliEnv::new();
    for cmd in [
        vec!["backend", "--help"],
        vec!["backend", "add", "--help"],
        vec!["backend", "test", "--help"],
        vec!["backend", "remove", "--help"],
        vec!["backend", "set-token", "--help"],
    ] {
        let out = env.ok(&cmd);
        assert!(out.contains("Usage: countersign"), "{cmd:?}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_set_token_test_sync_then_remove() {
    let env = CliEnv::new();
    // The server's own state lives outside the env dir, which must hold no token.
    let server_dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(&server_dir.path().join("server.db"), "127.0.0.1:0");
    let producer = Producer::new(&server.url());
    producer
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    producer
        .create(&new_action("db-2", "psql to prod-ledger"))
        .await;
    let header = "# my approvals\napprover = \"ana@example.com\" # me\n";
    env.write_config(header);

    let added = env.ok(&[
        "backend",
        "add",
        "countersign",
        "prod",
        "--url",
        &server.url(),
    ]);
    assert!(added.contains("backend set-token prod"), "{added}");
    let config = std::fs::read_to_string(env.config()).unwrap();
    assert!(config.starts_with(header), "comments kept: {config}");
    assert!(config.contains("token_keyring = true"), "{config}");

    // No token yet: the test says what to run, and a sync degrades only that backend.
    let err = env.fails(&["backend", "test", "prod"]);
    assert!(
        err.contains("run `countersign backend set-token prod`"),
        "{err}"
    );

    let out = set_token(&env, "prod", TOKEN);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "set-token: {stderr}");
    assert!(stdout.contains("Stored the token"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert_eq!(
        keyring_lookup(&token_entry(&env, "prod")).as_deref(),
        Some(TOKEN)
    );

    let tested = env.ok(&["backend", "test", "prod"]);
    assert!(tested.contains("2 pending actions"), "{tested}");
    assert!(tested.contains("prod/db-1"), "{tested}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["backend", "test", "prod", "--json"])).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["pending"], 2);

    let sync = env.ok(&["sync"]);
    assert!(sync.contains("prod: 2 new"), "{sync}");
    let list = env.ok(&["list"]);
    assert!(
        list.contains("prod/db-1") && list.contains("prod/db-2"),
        "{list}"
    );

    // The token is in the keyring and nowhere under the env dir (config, database, …).
    let mut all = Vec::new();
    files(env.dir.path(), &mut all);
    assert!(all.iter().any(|p| p.ends_with("config.toml")));
    for path in &all {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token leaked into {}",
            path.display()
        );
    }

    // A wrong token is reported with its code and exit 1.
    assert!(set_token(&env, "prod", "wrong-token").status.success());
    let out = env.run(&["backend", "test", "prod"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[unauthorized]"), "{err}");
    assert!(!err.contains("wrong-token"), "{err}");

    // Removed while its server is down: nothing contacts it any more.
    server.kill9();
    let removed = env.ok(&["backend", "remove", "prod"]);
    assert!(removed.contains("Deleted its token"), "{removed}");
    assert!(removed.contains("stay in the local history"), "{removed}");
    assert_eq!(keyring_lookup(&token_entry(&env, "prod")), None);
    let config = std::fs::read_to_string(env.config()).unwrap();
    assert_eq!(config, header, "only the entry is gone");

    let out = env.run(&["sync"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        !stdout.contains("prod") && !stderr.contains("prod"),
        "{stdout}{stderr}"
    );
    let history = env.ok(&["history"]);
    assert!(history.contains("prod/db-1"), "{history}");
    let list = env.ok(&["list"]);
    assert!(!list.contains("prod/db-1"), "{list}");
    let backends = env.ok(&["backends"]);
    assert!(!backends.contains("prod"), "{backends}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_keyring_token_degrades_only_its_backend() {
    let env = CliEnv::new();
    let server_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&server_dir.path().join("server.db"), "127.0.0.1:0");
    Producer::new(&server.url())
        .create(&new_action("db-1", "psql to prod-billing"))
        .await;
    env.ok(&[
        "backend",
        "add",
        "countersign",
        "prod",
        "--url",
        &server.url(),
        "--token-env",
        "PROD_TOKEN",
    ]);
    env.ok(&[
        "backend",
        "add",
        "countersign",
        "staging",
        "--url",
        &server.url(),
    ]);
    let out = env.run(&["sync"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("prod: 1 new"), "{stdout}");
    assert!(
        stdout.contains("staging: error: backend `staging`: no token in the OS keyring; run `countersign backend set-token staging`"),
        "{stdout}"
    );
    let backends: serde_json::Value =
        serde_json::from_str(&env.ok(&["backends", "--json"])).unwrap();
    let staging = backends
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "staging")
        .unwrap();
    assert_eq!(staging["status"], "degraded");
    // One backend, one place for its token.
    let err = env.fails(&["backend", "set-token", "prod"]);
    assert!(err.contains("token_env"), "{err}");
}

#[test]
fn bad_inputs_give_one_line_errors() {
    let env = CliEnv::new();
    let err = env.fails(&["backend", "add", "gitlab", "x", "--url", "https://x"]);
    assert!(err.contains("unknown kind `gitlab`"), "{err}");
    assert!(!env.config().exists(), "nothing written on a refusal");

    let err = env.fails(&["backend", "add", "countersign", "prod"]);
    assert_eq!(
        err,
        "countersign: backend `prod`: kind `countersign` needs --url URL"
    );
    let err = env.fails(&["backend", "add", "exec", "plug", "--no-token"]);
    assert!(err.contains("needs --command"), "{err}");
    let err = env.fails(&["backend", "add", "countersign", "a/b", "--url", "http://x"]);
    assert!(err.contains("letters, digits"), "{err}");

    env.ok(&["backend", "add", "countersign", "prod", "--url", "http://x"]);
    let err = env.fails(&["backend", "add", "hoop", "prod", "--url", "http://y"]);
    assert!(err.contains("`prod` already exists"), "{err}");

    // A token can never be given on the command line.
    for args in [
        vec!["backend", "set-token", "prod", "s3cr3t-value"],
        vec![
            "backend",
            "add",
            "countersign",
            "q",
            "--url",
            "http://x",
            "--token",
            "s3cr3t-value",
        ],
        vec![
            "backend",
            "add",
            "countersign",
            "q",
            "--url",
            "http://x",
            "--option",
            "api_token=s3cr3t-value",
        ],
    ] {
        let err = env.fails(&args);
        assert!(err.contains("set-token"), "{args:?}: {err}");
        assert!(!err.contains("s3cr3t-value"), "{err}");
    }
    let config = std::fs::read_to_string(env.config()).unwrap();
    assert!(!config.contains("s3cr3t-value") && !config.contains("\"q\""));

    let err = env.fails(&["backend", "test", "nope"]);
    assert!(err.contains("no backend named `nope`"), "{err}");
    let err = env.fails(&["backend", "remove", "nope"]);
    assert!(err.contains("no backend named `nope`"), "{err}");
    // An empty token is refused before touching the keyring.
    let out = set_token(&env, "prod", "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("countersign: no token given"), "{err}");
}

/// `backend test` fails, naming the repository, when a GitHub backend lists only part of
/// its repositories (one gone): a configuration to fix, not an OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_test_reports_a_repository_it_could_not_list() {
    let (hub, addr) = github_hub::start_hub().await;
    hub.unreadable
        .lock()
        .unwrap()
        .insert("octo/gone".into(), 404);
    let env = CliEnv::new();
    env.write_config(&format!(
        "approver = \"ana\"\n\n[[backend]]\nname = \"gh\"\nkind = \"github\"\n\
         url = \"http://{addr}\"\ntoken_env = \"CS_TEST_GH_TOKEN\"\n\n\
         [backend.options]\nrepos = [\"octo/app\", \"octo/gone\"]\n"
    ));
    let out = env
        .cmd(&["backend", "test", "gh"])
        .env("CS_TEST_GH_TOKEN", github_hub::TOKEN)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("pending action"),
        "what was listed is shown: {stdout}{stderr}"
    );
    assert!(stderr.contains("listed only in part"), "{stderr}");
    assert!(stderr.contains("octo/gone"), "{stderr}");
}
