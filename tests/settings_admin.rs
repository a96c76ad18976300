//! `countersign_core::admin`, the settings logic the window and the CLI share, on real
//! config files, the real Secret Service (run inside `bash scripts/with-keyring.sh`) and
//! the reference server as its own process.

mod common;

use std::path::Path;
use std::process::Command;

use common::{new_action, Producer, ServerProcess, TOKEN};
use countersign_core::admin::{
    self, AdminError, BackendInput, NotificationPrefs, OptionPair, Preferences, TokenMode,
};
use countersign_core::config::Config;
use countersign_core::secrets::{OsTokenStore, TokenStore};

const HEADER: &str = "# my approvals\napprover = \"ana@example.com\" # me\n";

/// Tokens under a scope of their own, so parallel tests never share an entry.
fn tokens(test: &str) -> OsTokenStore {
    OsTokenStore::with_scope(Some(format!(
        "settings-admin-{test}-{}",
        std::process::id()
    )))
}

fn secret_tool_lookup(entry: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args(["lookup", "service", "countersign", "username", entry])
        .output()
        .expect("run secret-tool (inside scripts/with-keyring.sh)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn input(name: &str, kind: &str, url: &str) -> BackendInput {
    BackendInput {
        name: name.into(),
        kind: kind.into(),
        url: url.into(),
        command: Vec::new(),
        options: Vec::new(),
        token_mode: TokenMode::Keyring,
        token_env: None,
        poll_interval_secs: None,
        timeout_secs: None,
    }
}

fn fields(e: AdminError) -> Vec<String> {
    match e {
        AdminError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
        other => panic!("not a field error: {other} [{}]", other.code()),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn add_test_edit_remove_with_the_token_only_in_the_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(&dir.path().join("state.sqlite"), "127.0.0.1:0");
    Producer::new(&server.url())
        .create(&new_action("db-1", "Read the billing replica"))
        .await;
    let path = dir.path().join("config.toml");
    std::fs::write(&path, HEADER).unwrap();
    let store = tokens("lifecycle");

    // Add: the token goes to the Secret Service, the entry to the file (comments kept).
    let saved = admin::add_backend(
        &path,
        &BackendInput {
            poll_interval_secs: Some(15),
            ..input("prod", "countersign", &server.url())
        },
        Some(TOKEN),
        &store,
    )
    .unwrap();
    assert!(saved.token_stored && !saved.created_config);
    let text = read(&path);
    assert!(text.starts_with(HEADER), "{text}");
    assert!(text.contains("token_keyring = true") && text.contains("poll_interval_secs = 15"));
    assert!(!text.contains(TOKEN));
    assert_eq!(
        secret_tool_lookup(&store.entry_name("prod")).as_deref(),
        Some(TOKEN)
    );
    let view = admin::settings(&path, &store).unwrap();
    assert!(view.config_exists);
    assert_eq!(view.backends.len(), 1);
    assert!(view.backends[0].token_stored);
    assert_eq!(view.backends[0].poll_interval_secs, Some(15));
    assert!(!serde_json::to_string(&view).unwrap().contains(TOKEN));

    // A duplicate is refused on its name, and nothing changes.
    let e =
        admin::add_backend(&path, &input("prod", "hoop", "http://x"), None, &store).unwrap_err();
    assert_eq!(fields(e), ["name"]);

    // Test: connect and list now.
    let report = admin::test_backend(&path, "prod", &store).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.pending, Some(1));
    assert_eq!(report.sample[0].key, "prod/db-1");
    assert_eq!(report.sample[0].title, "Read the billing replica");

    // Edit with a wrong token: stored, and the test says unauthorized without echoing it.
    admin::edit_backend(
        &path,
        &input("prod", "countersign", &server.url()),
        Some("wrong-token"),
        &store,
    )
    .unwrap();
    let report = admin::test_backend(&path, "prod", &store).await.unwrap();
    assert!(!report.ok);
    assert_eq!(
        report.error_code.as_deref(),
        Some("unauthorized"),
        "{report:?}"
    );
    assert!(!report.error.unwrap_or_default().contains("wrong-token"));
    // The edit dropped the poll interval (not in the input) and kept the comments.
    let text = read(&path);
    assert!(
        text.starts_with(HEADER) && !text.contains("poll_interval_secs"),
        "{text}"
    );

    // The kind cannot change in place; a bad URL is refused on its field.
    let e =
        admin::edit_backend(&path, &input("prod", "hoop", "http://x"), None, &store).unwrap_err();
    assert_eq!(fields(e), ["kind"]);
    let e = admin::edit_backend(
        &path,
        &input("prod", "countersign", "ftp://nope"),
        None,
        &store,
    )
    .unwrap_err();
    assert_eq!(fields(e), ["url"]);

    // Moving the token to an environment variable deletes the keyring copy.
    admin::edit_backend(
        &path,
        &BackendInput {
            token_mode: TokenMode::Env,
            token_env: Some("PROD_TOKEN".into()),
            ..input("prod", "countersign", &server.url())
        },
        None,
        &store,
    )
    .unwrap();
    assert_eq!(secret_tool_lookup(&store.entry_name("prod")), None);
    let config = Config::load(&path).unwrap().unwrap();
    assert_eq!(config.backends[0].token_env.as_deref(), Some("PROD_TOKEN"));
    assert!(!config.backends[0].token_keyring);

    // Back to the keyring with set_token, then remove: entry and token gone.
    admin::edit_backend(
        &path,
        &input("prod", "countersign", &server.url()),
        None,
        &store,
    )
    .unwrap();
    let set = admin::set_token(&path, "prod", TOKEN, &store).unwrap();
    assert!(!set.marker_added);
    assert_eq!(
        store.get("prod").unwrap().as_deref().map(String::as_str),
        Some(TOKEN)
    );
    let removed = admin::remove_backend(&path, "prod", &store).unwrap();
    assert!(removed.token_deleted);
    assert_eq!(secret_tool_lookup(&store.entry_name("prod")), None);
    assert_eq!(read(&path), HEADER, "only the entry is gone");
    let e = admin::remove_backend(&path, "prod", &store).unwrap_err();
    assert_eq!(e.code(), "unknown_backend");
}

#[test]
fn per_kind_forms_write_what_the_engine_builds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/config.toml");
    let store = tokens("kinds");
    // No file yet: the first save creates it (and its directory).
    let saved = admin::add_backend(
        &path,
        &BackendInput {
            options: vec![OptionPair {
                key: "repos".into(),
                value: r#"["octo/app", "octo/api"]"#.into(),
            }],
            token_mode: TokenMode::Env,
            token_env: Some("GITHUB_TOKEN".into()),
            ..input("gh", "github", "")
        },
        None,
        &store,
    )
    .unwrap();
    assert!(saved.created_config && !saved.token_stored);
    admin::add_backend(
        &path,
        &BackendInput {
            command: vec!["/usr/local/bin/plug".into(), "--flag".into()],
            options: vec![OptionPair {
                key: "watch".into(),
                value: "true".into(),
            }],
            token_mode: TokenMode::None,
            ..input("plug", "exec", "")
        },
        None,
        &store,
    )
    .unwrap();
    admin::add_backend(
        &path,
        &BackendInput {
            options: vec![OptionPair {
                key: "username".into(),
                value: "ana".into(),
            }],
            ..input("af", "airflow", "http://127.0.0.1:8080")
        },
        Some("airflow-password"),
        &store,
    )
    .unwrap();
    let config = Config::load(&path).unwrap().unwrap();
    let names: Vec<_> = config.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["gh", "plug", "af"]);
    assert_eq!(
        config.backends[0].options["repos"]
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );
    assert_eq!(
        config.backends[1].command,
        ["/usr/local/bin/plug", "--flag"]
    );
    assert_eq!(config.backends[1].options["watch"].as_bool(), Some(true));
    assert!(!read(&path).contains("airflow-password"));
    // The settings view shows options as text (TOML literals for non-strings).
    let view = admin::settings(&path, &store).unwrap();
    assert_eq!(
        view.backends[0].options[0].value,
        r#"["octo/app", "octo/api"]"#
    );
    assert!(view.backends[2].token_stored);
    admin::remove_backend(&path, "af", &store).unwrap();
    assert!(store.get("af").unwrap().is_none());

    // A bad option value is refused by the kind's own check, on the options.
    let e = admin::add_backend(
        &path,
        &BackendInput {
            options: vec![OptionPair {
                key: "repos".into(),
                value: "not-a-list".into(),
            }],
            ..input("gh2", "github", "")
        },
        None,
        &store,
    )
    .unwrap_err();
    assert_eq!(fields(e), ["options"]);
    assert!(!read(&path).contains("gh2"));
}

#[test]
fn preferences_keep_the_file_and_refuse_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let prefs = |approver: Option<&str>, dnd: Option<&str>, muted: &[&str]| Preferences {
        approver: approver.map(str::to_owned),
        notifications: NotificationPrefs {
            enabled: true,
            muted_backends: muted.iter().map(|m| (*m).to_owned()).collect(),
            dnd_until: dnd.map(str::to_owned),
            default_deny_reason: None,
            close_to_tray: true,
        },
    };
    // Nothing to say and no file: no file is created (the embedded demo keeps running).
    assert!(!admin::save_preferences(&path, &prefs(None, None, &[])).unwrap());
    assert!(!path.exists());

    std::fs::write(
        &path,
        "# mine\n[[backend]]\nname = \"prod\"\nkind = \"countersign\"\nurl = \"http://x\"\n",
    )
    .unwrap();
    let e = admin::save_preferences(&path, &prefs(None, Some("tomorrow"), &["nope"])).unwrap_err();
    assert_eq!(fields(e), ["dnd_until", "muted_backends"]);
    assert!(admin::save_preferences(
        &path,
        &prefs(
            Some("ana@example.com"),
            Some("2026-11-25T18:00:00Z"),
            &["prod"]
        )
    )
    .unwrap());
    // The comment stays with the table it sits above (a new top-level key goes first).
    let text = read(&path);
    assert!(text.contains("# mine\n[[backend]]"), "{text}");
    let config = Config::load(&path).unwrap().unwrap();
    assert_eq!(config.approver.as_deref(), Some("ana@example.com"));
    assert_eq!(config.notifications.muted_backends, ["prod"]);
    assert_eq!(
        config.notifications.dnd_until.as_deref(),
        Some("2026-11-25T18:00:00Z")
    );
    // Clearing them removes the keys again.
    assert!(admin::save_preferences(&path, &prefs(None, None, &[])).unwrap());
    let config = Config::load(&path).unwrap().unwrap();
    assert_eq!(config.approver, None);
    assert!(config.notifications.muted_backends.is_empty());
    assert!(!read(&path).contains("[notifications]"), "{}", read(&path));
}
