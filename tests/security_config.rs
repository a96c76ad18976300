//! The window's security settings, read from the files the app is built from at test
//! time (so commands added later are checked too):
//! - `tauri.conf.json`: the CSP forbids inline script, eval and every remote origin;
//!   the page gets no global Tauri object and a frozen prototype.
//! - `src-tauri/capabilities/*.json`: each is bound to named windows that exist, and the
//!   commands they allow are exactly the commands the UI calls (`commands.<name>` in
//!   ui/src, mapped to command names through the generated ui/src/bindings.ts), both
//!   ways; every command the shell registers needs a permission (it is in build.rs's
//!   app manifest), and nothing else is granted beyond listening to events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Tauri config the build merges: the main file and any platform override.
fn configs() -> Vec<(PathBuf, Value)> {
    let mut out = vec![];
    for dir in [root(), root().join("src-tauri")] {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("tauri.") && name.ends_with(".json") && name.contains("conf") {
                out.push((entry.path(), json(&entry.path())));
            }
        }
    }
    assert!(
        out.iter().any(|(p, _)| p.ends_with("tauri.conf.json")),
        "tauri.conf.json not found"
    );
    out
}

/// A CSP as directive → sources (lower-cased; the first occurrence wins, as browsers do).
fn parse_csp(csp: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for directive in csp.split(';') {
        let mut parts = directive.split_ascii_whitespace();
        let Some(name) = parts.next() else { continue };
        out.entry(name.to_ascii_lowercase())
            .or_insert_with(|| parts.map(str::to_ascii_lowercase).collect());
    }
    out
}

/// Whether a CSP source lets the page reach something outside the app itself.
fn is_remote(source: &str) -> bool {
    const LOCAL: &[&str] = &[
        "'self'",
        "'none'",
        // Tauri's IPC: the custom protocol, and its localhost form on Linux and Windows.
        "ipc:",
        "http://ipc.localhost",
        // Images inlined by the app's own CSS/bundle.
        "data:",
    ];
    if LOCAL.contains(&source) || source.starts_with("'sha") || source.starts_with("'nonce-") {
        return false;
    }
    // Anything else — `*`, a scheme such as `https:`, or a host — is an origin outside
    // the app's bundle.
    true
}

#[test]
fn csp_forbids_inline_script_eval_and_remote_origins() {
    for (path, config) in configs() {
        let Some(security) = config.pointer("/app/security") else {
            continue; // an override without a security section inherits the main one
        };
        let where_ = path.display();
        let csp = match &security["csp"] {
            Value::String(s) => s.clone(),
            // The object form: directive → string or list.
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k} {s}"),
                    Value::Array(a) => format!(
                        "{k} {}",
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    other => panic!("{where_}: csp.{k} = {other}"),
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => panic!("{where_}: app.security.csp must be set, found {other}"),
        };
        let csp = parse_csp(&csp);
        let default = csp
            .get("default-src")
            .unwrap_or_else(|| panic!("{where_}: no default-src (everything would be allowed)"));
        assert_eq!(default, &vec!["'self'".to_owned()], "{where_}: default-src");
        // Scripts: script-src, or default-src when it is absent; the element/attribute
        // forms fall back to script-src.
        let script = csp.get("script-src").unwrap_or(default);
        for name in ["script-src-elem", "script-src-attr"] {
            if let Some(sources) = csp.get(name) {
                assert!(
                    sources.iter().all(|s| s == "'self'" || s == "'none'"),
                    "{where_}: {name} {sources:?}"
                );
            }
        }
        assert!(
            script.iter().all(|s| s == "'self'"),
            "{where_}: script-src must be 'self' only (no inline, eval, data: or remote): {script:?}"
        );
        for (name, sources) in &csp {
            for s in sources {
                assert!(
                    !matches!(
                        s.as_str(),
                        "'unsafe-inline'"
                            | "'unsafe-eval'"
                            | "'unsafe-hashes'"
                            | "'wasm-unsafe-eval'"
                    ),
                    "{where_}: {name} allows {s}"
                );
                assert!(
                    !is_remote(s),
                    "{where_}: {name} allows the remote origin {s}"
                );
            }
        }
        assert_eq!(
            csp.get("object-src"),
            Some(&vec!["'none'".to_owned()]),
            "{where_}: object-src"
        );
        assert_eq!(
            csp.get("base-uri"),
            Some(&vec!["'none'".to_owned()]),
            "{where_}: base-uri"
        );
        // Tauri adds hashes of its own scripts to the CSP at build time unless told not
        // to; turning that off would mean inline script is being allowed some other way.
        assert_ne!(
            security.get("dangerousDisableAssetCspModification"),
            Some(&Value::Bool(true)),
            "{where_}"
        );
        assert_eq!(
            security.get("freezePrototype"),
            Some(&Value::Bool(true)),
            "{where_}"
        );
        if let Some(dev) = security.get("devCsp") {
            assert!(
                dev.is_null(),
                "{where_}: a devCsp would weaken dev builds only"
            );
        }
        if let Some(remote) = security.pointer("/capabilities") {
            for c in remote.as_array().into_iter().flatten() {
                assert!(
                    c.get("remote").is_none(),
                    "{where_}: inline capability for remote URLs: {c}"
                );
            }
        }
        assert_ne!(
            config.pointer("/app/withGlobalTauri"),
            Some(&Value::Bool(true)),
            "{where_}: window.__TAURI__ would hand every script the whole API"
        );
    }
}

#[test]
fn the_csp_check_catches_what_it_names() {
    // The checks above rest on these two helpers: prove they see the bad cases.
    let csp = parse_csp(
        "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.example; img-src *",
    );
    assert_eq!(csp["script-src"].len(), 3);
    assert!(is_remote("https://cdn.example"));
    assert!(is_remote("*"));
    assert!(is_remote("https:"));
    assert!(is_remote("blob:"));
    assert!(!is_remote("'self'"));
    assert!(!is_remote("ipc:"));
}

/// `camelName` → `snake_name` for every command in the generated bindings.
fn bindings() -> BTreeMap<String, String> {
    let text = read(&root().join("ui/src/bindings.ts"));
    let start = text
        .find("export const commands = {")
        .expect("bindings.ts has a commands object");
    let mut out = BTreeMap::new();
    for line in text[start..].lines().skip(1) {
        let trimmed = line.trim_start();
        if trimmed.starts_with('}') && !line.starts_with('\t') && !line.starts_with(' ') {
            break;
        }
        let Some((name, rest)) = trimmed.split_once(':') else {
            continue;
        };
        let Some(at) = rest.find("__TAURI_INVOKE(\"") else {
            continue;
        };
        let command = &rest[at + "__TAURI_INVOKE(\"".len()..];
        let command = &command[..command.find('"').expect("closing quote")];
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(name.to_owned(), command.to_owned());
        }
    }
    assert!(!out.is_empty(), "no commands found in bindings.ts");
    out
}

/// Every `commands.<name>` in the UI's own sources (not the bindings, not tests).
fn ui_calls() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "test" && name != "node_modules" {
                    walk(&path, out);
                }
                continue;
            }
            let source = name.ends_with(".ts") || name.ends_with(".svelte");
            if !source || name == "bindings.ts" || name.contains(".test.") {
                continue;
            }
            let text = read(&path);
            let mut rest = text.as_str();
            while let Some(at) = rest.find("commands.") {
                let before = rest[..at].chars().next_back();
                rest = &rest[at + "commands.".len()..];
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue; // `mycommands.x` is something else
                }
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() {
                    out.insert(ident);
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("ui/src"), &mut out);
    out
}

/// The app manifest's command list in build.rs (commands outside it need no permission).
fn manifest_commands() -> BTreeSet<String> {
    let text = read(&root().join("src-tauri/build.rs"));
    let start = text.find("const COMMANDS").expect("COMMANDS in build.rs");
    let body = &text[start..];
    let body = &body[body.find('[').unwrap() + 1..body.find("];").unwrap()];
    body.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .flat_map(|l| l.split(','))
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Permissions that are not app commands and are allowed to the page.
const OTHER_ALLOWED: &[&str] = &["core:event:allow-listen", "core:event:allow-unlisten"];

#[test]
fn capabilities_are_bound_to_named_windows_and_grant_exactly_the_commands_the_ui_calls() {
    let conf = json(&root().join("tauri.conf.json"));
    let windows: BTreeSet<String> = conf
        .pointer("/app/windows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|w| w["label"].as_str().unwrap_or("main").to_owned())
        .collect();
    let enabled: Option<BTreeSet<String>> = conf
        .pointer("/app/security/capabilities")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().expect("capabilities by identifier").to_owned())
                .collect()
        });

    let bindings = bindings();
    let calls = ui_calls();
    let unknown: Vec<_> = calls
        .iter()
        .filter(|c| !bindings.contains_key(*c))
        .collect();
    assert!(
        unknown.is_empty(),
        "the UI calls commands that are not in bindings.ts: {unknown:?}"
    );
    let used: BTreeSet<String> = calls.iter().map(|c| bindings[c].clone()).collect();

    let mut allowed = BTreeSet::new();
    let dir = root().join("src-tauri/capabilities");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            assert!(
                path.extension().and_then(|e| e.to_str()) != Some("toml"),
                "{}: only JSON capabilities are checked here",
                path.display()
            );
            continue;
        }
        files += 1;
        let cap = json(&path);
        let id = cap["identifier"].as_str().expect("identifier").to_owned();
        let where_ = path.display();
        if let Some(enabled) = &enabled {
            if !enabled.contains(&id) {
                continue; // present but not in the build's list: not granted
            }
        }
        assert!(
            cap.get("remote").is_none(),
            "{where_}: grants to remote URLs"
        );
        assert!(
            cap.get("webviews").is_none(),
            "{where_}: bind to windows by name, not webviews"
        );
        let bound: Vec<&str> = cap["windows"]
            .as_array()
            .unwrap_or_else(|| panic!("{where_}: must list the windows it applies to"))
            .iter()
            .map(|w| w.as_str().expect("window label"))
            .collect();
        assert!(!bound.is_empty(), "{where_}: bound to no window");
        for w in bound {
            assert!(
                !w.contains('*') && windows.contains(w),
                "{where_}: window `{w}` is not one of the app's named windows {windows:?}"
            );
        }
        for p in cap["permissions"].as_array().expect("permissions") {
            let p = p.as_str().unwrap_or_else(|| {
                panic!("{where_}: scoped permission objects are not expected: {p}")
            });
            if let Some(cmd) = p.strip_prefix("allow-") {
                allowed.insert(cmd.replace('-', "_"));
            } else {
                assert!(
                    OTHER_ALLOWED.contains(&p),
                    "{where_}: grants `{p}` beyond the app's commands and events"
                );
            }
        }
    }
    assert!(files > 0, "no capability files in {}", dir.display());

    let not_used: Vec<_> = allowed.difference(&used).collect();
    assert!(
        not_used.is_empty(),
        "allowed but never called by the UI: {not_used:?}"
    );
    let not_allowed: Vec<_> = used.difference(&allowed).collect();
    assert!(
        not_allowed.is_empty(),
        "called by the UI but not allowed (it would fail at run time): {not_allowed:?}"
    );
    // A registered command left out of the app manifest needs no permission at all.
    let manifest = manifest_commands();
    let unguarded: Vec<_> = bindings
        .values()
        .filter(|c| !manifest.contains(*c))
        .collect();
    assert!(
        unguarded.is_empty(),
        "commands registered without a permission gate (add them to COMMANDS in build.rs): {unguarded:?}"
    );
}
