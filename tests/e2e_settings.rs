//! The settings view of the real window, end to end (Xvfb, tauri-driver, the app against
//! the reference server, gnome-keyring as the Secret Service on the test's own bus):
//! a backend added in the form syncs at once without a restart, its token is in the
//! Secret Service and in no file, and once removed its sync stops.

mod common;
mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{new_action, TOKEN};
use countersign_core::store::{ActionQuery, Store};
use e2e::{row, E2e, APPROVER, BACKEND, TOKEN_ENV, WAIT};

const SETTINGS: &str = r#"[data-testid="settings-view"]"#;
const NOTICE: &str = r#"[data-testid="settings-notice"]"#;
/// Configured from the start (token from the environment); it stays for the whole test
/// and shows what the live sync sees while `prod` is gone.
const MIRROR: &str = "mirror";

fn mirror_row(id: &str) -> String {
    format!(r#"[data-testid="inbox-row"][data-key="{MIRROR}/{id}"]"#)
}

/// The token stored for `backend` in the Secret Service of the test's bus, if any.
fn keyring_lookup(e2e: &E2e, backend: &str) -> Option<String> {
    let out = Command::new("secret-tool")
        .args([
            "lookup",
            "service",
            "countersign",
            "username",
            &format!("backend-token:{backend}"),
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", e2e.bus_address())
        .output()
        .expect("run secret-tool (apt-get install libsecret-tools)");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Every regular file under `dir`, recursively (sockets and fifos skipped).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            files(&path, out);
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// Keys of `backend`'s actions in the app's store file, whatever the inbox shows.
fn stored_keys(data_dir: &Path, backend: &str) -> Vec<String> {
    let store = Store::open_in_dir(data_dir).expect("open the app's store");
    store
        .actions(&ActionQuery {
            backend: Some(backend.to_owned()),
            status: None,
            limit: None,
        })
        .expect("read actions")
        .into_iter()
        .map(|a| a.key.to_string())
        .collect()
}

#[tokio::test]
async fn add_a_backend_in_settings_then_remove_it() {
    let mut e2e = E2e::start("settings_add_remove");
    // A config naming one backend (not the one the test adds), with a comment to keep.
    std::fs::write(
        e2e.config_path(),
        format!(
            "# written by hand\napprover = \"{APPROVER}\"\n\n[[backend]]\nname = \"{MIRROR}\"\n\
             kind = \"countersign\"\nurl = \"{}\"\ntoken_env = \"{TOKEN_ENV}\"\n",
            e2e.server.url()
        ),
    )
    .expect("write config.toml");
    e2e.producer
        .create(&new_action(
            "before-1",
            "Rotate the billing database password",
        ))
        .await;
    e2e.launch_ready().await;
    e2e.wait_for(&mirror_row("before-1"), WAIT).await;
    assert_eq!(
        e2e.count(&row("before-1")).await,
        0,
        "no `prod` backend yet"
    );

    e2e.click(r#"[data-testid="nav-settings"]"#).await;
    e2e.wait_for(SETTINGS, WAIT).await;
    e2e.wait_for(
        &format!(r#"[data-testid="backend-row"][data-name="{MIRROR}"]"#),
        WAIT,
    )
    .await;
    e2e.click(r#"[data-testid="backend-add"]"#).await;
    e2e.wait_for(r#"[data-testid="backend-form"]"#, WAIT).await;
    // The form says what is missing before anything is sent.
    e2e.click(r#"[data-testid="backend-save"]"#).await;
    e2e.wait_text(r#"[data-testid="field-error-name"]"#, WAIT, |t| {
        t.contains("name")
    })
    .await;
    e2e.wait_text(r#"[data-testid="field-error-url"]"#, WAIT, |t| {
        t.contains("URL")
    })
    .await;
    assert_eq!(
        e2e.attr(r#"[data-testid="backend-token"]"#, "type").await,
        Some("password".into())
    );
    e2e.type_text(r#"[data-testid="backend-name"]"#, BACKEND)
        .await;
    e2e.type_text(r#"[data-testid="backend-url"]"#, &e2e.server.url())
        .await;
    e2e.type_text(r#"[data-testid="backend-token"]"#, TOKEN)
        .await;
    let passed = e2e.axe("settings (add form)").await;
    assert!(passed > 0, "axe-core ran no rule");
    e2e.click(r#"[data-testid="backend-save"]"#).await;
    e2e.wait_text(NOTICE, WAIT, |t| {
        t.contains("Token stored in the OS keyring")
    })
    .await;

    // The token is in the Secret Service, and in no file: not the config (which kept
    // its comment), not the data dir, not the home or XDG dirs, not the app's log.
    assert_eq!(keyring_lookup(&e2e, BACKEND).as_deref(), Some(TOKEN));
    let config = std::fs::read_to_string(e2e.config_path()).unwrap();
    assert!(config.starts_with("# written by hand\n"), "{config}");
    assert!(config.contains("name = \"prod\"") && config.contains("token_keyring = true"));
    let mut all = Vec::new();
    files(e2e.dir.path(), &mut all);
    let log = e2e::target_dir().join("e2e-logs/settings_add_remove.log");
    all.push(log);
    assert!(all.iter().any(|p| p.ends_with("config.toml")));
    for path in &all {
        let bytes = std::fs::read(path).unwrap_or_default();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            path.display()
        );
    }

    // Its actions are in the inbox without a restart, and new ones follow live.
    e2e.wait_for(
        r#"[data-testid="backend-row"][data-name="prod"] [data-testid="backend-status"]"#,
        WAIT,
    )
    .await;
    e2e.click(r#"[data-testid="backend-test"][data-name="prod"]"#)
        .await;
    e2e.wait_text(r#"[data-testid="backend-test-result"]"#, WAIT, |t| {
        t.contains("1 pending action listed")
    })
    .await;
    e2e.wait_text(
        r#"[data-testid="backend-row"][data-name="prod"] [data-testid="backend-status"]"#,
        WAIT,
        |t| t == "ok",
    )
    .await;
    e2e.screenshot("settings").await;
    e2e.axe("settings").await;
    // The dark theme: set on <html>, kept by the window, and as readable.
    e2e.click(r#"[data-testid="theme-dark"]"#).await;
    let theme = e2e
        .js(
            "return [document.documentElement.dataset.theme, localStorage.getItem('countersign.theme')];",
            vec![],
        )
        .await;
    assert_eq!(theme, serde_json::json!(["dark", "dark"]));
    e2e.axe("settings (dark theme)").await;
    e2e.screenshot("settings-dark").await;
    e2e.click(r#"[data-testid="theme-system"]"#).await;
    e2e.click(r#"[data-testid="nav-inbox"]"#).await;
    e2e.wait_for(&row("before-1"), WAIT).await;
    e2e.producer
        .create(&new_action(
            "after-add",
            "Open port 5432 to the analytics VPC",
        ))
        .await;
    e2e.wait_for(&row("after-add"), WAIT).await;

    // Edit it: the token is never shown again, only that it is stored; a new poll
    // interval is written and the backend keeps syncing.
    e2e.click(r#"[data-testid="nav-settings"]"#).await;
    e2e.click(r#"[data-testid="backend-row"][data-name="prod"] [data-testid="backend-edit"]"#)
        .await;
    e2e.wait_text(r#"[data-testid="backend-token-stored"]"#, WAIT, |t| {
        t.contains("Token stored in keyring")
    })
    .await;
    let shown = e2e
        .js(
            "return document.querySelector('[data-testid=\"backend-token\"]').value;",
            vec![],
        )
        .await;
    assert_eq!(shown, serde_json::json!(""), "the token field starts empty");
    e2e.type_text(r#"[data-testid="backend-poll"]"#, "7").await;
    e2e.click(r#"[data-testid="backend-save"]"#).await;
    e2e.wait_text(NOTICE, WAIT, |t| t.contains("Saved backend \"prod\""))
        .await;
    let config = std::fs::read_to_string(e2e.config_path()).unwrap();
    assert!(config.contains("poll_interval_secs = 7"), "{config}");
    assert_eq!(keyring_lookup(&e2e, BACKEND).as_deref(), Some(TOKEN));
    e2e.click(r#"[data-testid="nav-inbox"]"#).await;
    e2e.producer
        .create(&new_action("after-edit", "Restart the search cluster"))
        .await;
    e2e.wait_for(&row("after-edit"), WAIT).await;

    // Remove it (behind a confirmation): its rows leave the inbox, its token the keyring.
    e2e.click(r#"[data-testid="nav-settings"]"#).await;
    e2e.click(r#"[data-testid="backend-row"][data-name="prod"] [data-testid="backend-remove"]"#)
        .await;
    e2e.click(r#"[data-testid="backend-remove-confirm"]"#).await;
    e2e.wait_text(NOTICE, WAIT, |t| t.contains("Removed backend \"prod\""))
        .await;
    assert_eq!(keyring_lookup(&e2e, BACKEND), None);
    let config = std::fs::read_to_string(e2e.config_path()).unwrap();
    assert!(
        config.starts_with("# written by hand\n") && !config.contains("\"prod\""),
        "{config}"
    );
    e2e.click(r#"[data-testid="nav-inbox"]"#).await;
    e2e.wait_gone(&row("before-1"), WAIT).await;
    let before = stored_keys(&e2e.data_dir(), BACKEND);
    assert!(before.contains(&"prod/after-add".to_owned()), "{before:?}");

    // Its sync has stopped: new actions reach the backend that stays (both follow the
    // same server's event stream) but never `prod`, in the inbox or in the store.
    e2e.producer
        .create(&new_action(
            "after-remove",
            "Scale the payments workers to 40",
        ))
        .await;
    e2e.wait_for(&mirror_row("after-remove"), WAIT).await;
    e2e.producer
        .create(&new_action(
            "after-remove-2",
            "Delete the staging snapshots",
        ))
        .await;
    e2e.wait_for(&mirror_row("after-remove-2"), WAIT).await;
    assert_eq!(e2e.count(&row("after-remove")).await, 0);
    assert_eq!(stored_keys(&e2e.data_dir(), BACKEND), before);
    e2e.close().await;
}

#[tokio::test]
async fn the_first_backend_replaces_the_embedded_demo() {
    let mut e2e = E2e::start("settings_first_backend");
    // No config file: the app runs the embedded demo server.
    std::fs::remove_file(e2e.config_path()).expect("remove config.toml");
    e2e.producer
        .create(&new_action("real-1", "Approve the quarterly access review"))
        .await;
    e2e.launch_ready().await;
    let demo_rows = r#"[data-testid="inbox-row"][data-key^="demo/"]"#;
    e2e.wait_for(demo_rows, WAIT).await;

    e2e.click(r#"[data-testid="nav-settings"]"#).await;
    e2e.wait_text(r#"[data-testid="settings-embedded"]"#, WAIT, |t| {
        t.contains("the demo then stops")
    })
    .await;
    e2e.click(r#"[data-testid="backend-add"]"#).await;
    e2e.wait_text(r#"[data-testid="settings-demo-note"]"#, WAIT, |t| {
        t.contains("Saving creates")
    })
    .await;
    e2e.type_text(r#"[data-testid="backend-name"]"#, BACKEND)
        .await;
    e2e.type_text(r#"[data-testid="backend-url"]"#, &e2e.server.url())
        .await;
    e2e.type_text(r#"[data-testid="backend-token"]"#, TOKEN)
        .await;
    // Usable at 800×600: the form fits the width, its buttons are reachable.
    e2e.client()
        .set_window_size(800, 600)
        .await
        .expect("resize the window");
    let fits = e2e
        .js(
            "const v = document.querySelector('[data-testid=\"settings-view\"]');
             return innerWidth <= 800 && v.scrollWidth <= v.clientWidth;",
            vec![],
        )
        .await;
    assert_eq!(
        fits,
        serde_json::json!(true),
        "the settings view fits 800 pixels"
    );
    e2e.screenshot("settings-800x600").await;
    e2e.click(r#"[data-testid="backend-save"]"#).await;
    e2e.wait_text(NOTICE, WAIT, |t| t.contains("embedded demo no longer runs"))
        .await;
    let config = std::fs::read_to_string(e2e.config_path()).expect("config.toml created");
    assert!(
        config.contains("name = \"prod\"") && !config.contains(TOKEN),
        "{config}"
    );
    assert_eq!(keyring_lookup(&e2e, BACKEND).as_deref(), Some(TOKEN));
    e2e.wait_gone(r#"[data-testid="settings-embedded"]"#, WAIT)
        .await;
    // The header follows the new engine: no demo badge.
    e2e.wait_gone(r#"[data-testid="embedded-badge"]"#, WAIT)
        .await;

    // The approver set in Settings signs from now on, without a restart.
    e2e.type_text(r#"[data-testid="prefs-approver"]"#, "ops@example.com")
        .await;
    e2e.click(r#"[data-testid="prefs-save"]"#).await;
    // textContent: at 800 px WebDriver counts the header's identity as not displayed.
    let end = std::time::Instant::now() + WAIT;
    while e2e.text_contents(r#"[data-testid="approver"]"#).await != ["ops@example.com"] {
        if std::time::Instant::now() > end {
            e2e.fail("the header never showed the new approver").await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let config = std::fs::read_to_string(e2e.config_path()).unwrap();
    assert!(
        config.contains("approver = \"ops@example.com\""),
        "{config}"
    );

    // The demo's actions leave the inbox (they stay in history); the real ones arrive.
    e2e.click(r#"[data-testid="nav-inbox"]"#).await;
    e2e.wait_for(&row("real-1"), WAIT).await;
    e2e.wait_gone(demo_rows, WAIT).await;
    e2e.close().await;
}
