import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it } from "vitest";
import type {
  BackendInput_Deserialize,
  BackendSettings_Serialize,
  Preferences_Deserialize,
  SaveResult_Serialize,
  SettingsView_Serialize,
  TestReport_Serialize,
} from "../bindings.ts";
import SettingsView from "../components/views/SettingsView.svelte";
import { err, FakeShell, ok, waitFor } from "../test/fixtures.ts";
import { ConsoleState } from "./console.svelte.ts";
import {
  applyTheme,
  describeTest,
  emptyForm,
  errorsOf,
  formFor,
  instantOf,
  listLiteral,
  listText,
  localInput,
  SettingsState,
  storedTheme,
  THEME_KEY,
  toInput,
  toPreferences,
} from "./settings.svelte.ts";

function backend(name: string, over: Partial<BackendSettings_Serialize> = {}): BackendSettings_Serialize {
  return {
    name,
    kind: "countersign",
    url: "https://approvals.example.com",
    command: [],
    options: [],
    token_mode: "keyring",
    token_env: null,
    token_stored: true,
    poll_interval_secs: null,
    timeout_secs: null,
    ...over,
  };
}

function settingsView(backends: BackendSettings_Serialize[], over: Partial<SettingsView_Serialize> = {}): SettingsView_Serialize {
  return {
    config_path: "/home/ana/.config/countersign/config.toml",
    config_exists: true,
    approver: null,
    default_approver: "ana@host",
    backends,
    notifications: { enabled: true, muted_backends: [], dnd_until: null, default_deny_reason: null, close_to_tray: true },
    kinds: ["countersign", "hoop", "github", "prefect", "airflow", "exec"],
    keyring_service: "countersign",
    ...over,
  };
}

/** A fake shell with a config the settings commands edit; records what they received. */
function settingsShell(initial: SettingsView_Serialize): {
  shell: FakeShell;
  sent: { inputs: BackendInput_Deserialize[]; tokens: (string | null)[]; prefs: Preferences_Deserialize[]; removed: string[] };
  state: { view: SettingsView_Serialize; answer: SaveResult_Serialize | null; test: TestReport_Serialize };
} {
  const shell = new FakeShell();
  const sent = { inputs: [] as BackendInput_Deserialize[], tokens: [] as (string | null)[], prefs: [] as Preferences_Deserialize[], removed: [] as string[] };
  const state = {
    view: initial,
    answer: null as SaveResult_Serialize | null,
    test: {
      backend: "prod",
      kind: "countersign",
      ok: true,
      pending: 2,
      sample: [],
      error: null,
      error_code: null,
      partial: null,
    } as TestReport_Serialize,
  };
  const save = (input: BackendInput_Deserialize, token: string | null) => {
    sent.inputs.push(input);
    sent.tokens.push(token);
    if (state.answer !== null) return Promise.resolve(ok(state.answer));
    const created = !state.view.config_exists;
    const stored = backend(input.name, { kind: input.kind, url: input.url ?? "", token_stored: token !== null });
    state.view = { ...state.view, config_exists: true, backends: [...state.view.backends.filter((b) => b.name !== input.name), stored] };
    return Promise.resolve(ok({ saved: { name: input.name, created_config: created, token_stored: token !== null }, errors: [] }));
  };
  shell.extra = {
    settingsView: () => Promise.resolve(ok(structuredClone(state.view))),
    addBackend: save,
    editBackend: save,
    testBackend: () => Promise.resolve(ok(state.test)),
    removeBackend: (name: string) => {
      sent.removed.push(name);
      state.view = { ...state.view, backends: state.view.backends.filter((b) => b.name !== name) };
      return Promise.resolve(ok({ name, token_deleted: true }));
    },
    savePreferences: (p: Preferences_Deserialize) => {
      sent.prefs.push(p);
      return Promise.resolve(ok({ saved: null, errors: [] }));
    },
  };
  return { shell, sent, state };
}

describe("the form's own checks", () => {
  it("names each wrong field, per kind", () => {
    const f = emptyForm("hoop");
    f.name = "a/b";
    f.url = "hoop.example.com";
    f.token = "two words";
    f.pollInterval = "0";
    expect(Object.keys("errors" in toInput(f) ? (toInput(f) as { errors: object }).errors : {}).sort()).toEqual(
      ["name", "poll_interval_secs", "token", "url"].sort(),
    );
    const exec = emptyForm("exec");
    exec.name = "plug";
    const r = toInput(exec);
    expect("errors" in r && r.errors["command"]).toContain("plugin program");
    const gh = emptyForm("github");
    gh.name = "gh";
    const g = toInput(gh);
    expect("errors" in g && g.errors["option:repos"]).toContain("repositories");
    const env = emptyForm("countersign");
    Object.assign(env, { name: "p", url: "http://x", tokenMode: "env", tokenEnv: "NOT A VAR" });
    expect("errors" in toInput(env) && (toInput(env) as { errors: Record<string, string> }).errors["token_env"]).toBeTruthy();
  });

  it("builds the engine's input: options as TOML literals, the token beside it", () => {
    const f = emptyForm("github");
    Object.assign(f, { name: "gh", options: { repos: "octo/app, octo/api" }, token: " ghp_x ", pollInterval: "60", extra: "page_size = 50" });
    const r = toInput(f);
    if ("errors" in r) throw new Error(JSON.stringify(r.errors));
    expect(r.token).toBe("ghp_x");
    expect(r.input).toEqual({
      name: "gh",
      kind: "github",
      url: "",
      command: [],
      options: [
        { key: "repos", value: '["octo/app", "octo/api"]' },
        { key: "page_size", value: "50" },
      ],
      token_mode: "keyring",
      token_env: null,
      poll_interval_secs: 60,
      timeout_secs: null,
    });
    const exec = emptyForm("exec");
    Object.assign(exec, { name: "tp", url: "ignored", command: "/bin/plug\n--tsh\n\n/bin/tsh", options: { watch: "true" }, tokenMode: "none" });
    const e = toInput(exec);
    if ("errors" in e) throw new Error(JSON.stringify(e.errors));
    expect(e.input.command).toEqual(["/bin/plug", "--tsh", "/bin/tsh"]);
    expect(e.input.url).toBe("");
    expect(e.input.options).toEqual([{ key: "watch", value: "true" }]);
    expect(e.token).toBeNull();
  });

  it("editing shows known options in their fields and the rest as key = value, never a token", () => {
    const f = formFor(
      backend("gh", {
        kind: "github",
        url: "",
        options: [
          { key: "repos", value: '["octo/app", "octo/api"]' },
          { key: "page_size", value: "50" },
        ],
        poll_interval_secs: 60,
      }),
    );
    expect(f.mode).toBe("edit");
    expect(f.options["repos"]).toBe("octo/app, octo/api");
    expect(f.extra).toBe("page_size = 50");
    expect(f.pollInterval).toBe("60");
    expect(f.token).toBe("");
    expect(f.tokenStored).toBe(true);
    expect(listText(listLiteral("a, b"))).toBe("a, b");
  });

  it("keys the engine's field errors like its own and describes test results", () => {
    expect(errorsOf([{ field: "url", message: "bad" }, { field: "url", message: "worse" }])).toEqual({ url: "bad worse" });
    expect(describeTest({ backend: "p", kind: "k", ok: true, pending: 1, sample: [], error: null, error_code: null, partial: null })).toEqual({
      ok: true,
      text: "Connected: 1 pending action listed.",
    });
    expect(
      describeTest({ backend: "p", kind: "k", ok: false, pending: null, sample: [], error: "HTTP 401", error_code: "unauthorized", partial: null }),
    ).toEqual({ ok: false, text: "HTTP 401 [unauthorized]" });
  });

  it("do-not-disturb round-trips through local time; a bad one is refused", () => {
    const iso = "2026-11-25T18:30:00.000Z";
    expect(instantOf(localInput(iso))).toBe(iso);
    expect(instantOf("")).toBeNull();
    const p = { approver: " ana@example.com ", enabled: true, muted: ["prod"], dndUntil: "nonsense", denyReason: "", closeToTray: true };
    expect(toPreferences(p)).toEqual({ errors: { dnd_until: "Not a date and time." } });
    p.dndUntil = "";
    expect(toPreferences(p)).toEqual({
      preferences: {
        approver: "ana@example.com",
        notifications: { enabled: true, muted_backends: ["prod"], dnd_until: null, default_deny_reason: null, close_to_tray: true },
      },
    });
  });

  it("the theme is stored per window and set as data-theme on <html>", () => {
    const s = new SettingsState(new FakeShell().api());
    s.setTheme("dark");
    expect(document.documentElement.getAttribute("data-theme")).toBe("dark");
    expect(localStorage.getItem(THEME_KEY)).toBe("dark");
    expect(storedTheme()).toBe("dark");
    s.setTheme("system");
    expect(storedTheme()).toBe("system");
    applyTheme("light");
    expect(document.documentElement.getAttribute("data-theme")).toBe("light");
  });

  it('"system" sets the desktop\'s light or dark and follows it while chosen', () => {
    // A desktop whose preference the test switches (jsdom has no matchMedia of its own).
    let dark = true;
    const listeners = new Set<() => void>();
    const query = {
      get matches() {
        return dark;
      },
      addEventListener: (_: string, l: () => void) => listeners.add(l),
      removeEventListener: (_: string, l: () => void) => listeners.delete(l),
    };
    const original = Object.getOwnPropertyDescriptor(window, "matchMedia");
    window.matchMedia = (() => query) as unknown as typeof window.matchMedia;
    try {
      const root = document.documentElement;
      applyTheme("system");
      expect(root.getAttribute("data-theme")).toBe("dark");
      dark = false;
      listeners.forEach((l) => {
        l();
      });
      expect(root.getAttribute("data-theme")).toBe("light");
      applyTheme("dark");
      expect(listeners.size).toBe(0);
      dark = false;
      listeners.forEach((l) => {
        l();
      });
      expect(root.getAttribute("data-theme")).toBe("dark");
      applyTheme("system");
      applyTheme("system");
      expect(listeners.size).toBe(1);
    } finally {
      applyTheme("light");
      if (original) Object.defineProperty(window, "matchMedia", original);
      else Reflect.deleteProperty(window, "matchMedia");
    }
  });
});

describe("SettingsState", () => {
  it("a token is sent once with the save and then cleared; the notice says where it went", async () => {
    const { shell, sent } = settingsShell(settingsView([], { config_exists: false }));
    const s = new SettingsState(shell.api());
    await s.load();
    expect(s.embedded).toBe(true);
    s.startAdd("countersign");
    Object.assign(s.form ?? {}, { name: "prod", url: "http://127.0.0.1:9", token: "s3cret" });
    expect(await s.save()).toBe(true);
    expect(sent.tokens).toEqual(["s3cret"]);
    expect(s.form).toBeNull();
    expect(s.notice).toContain("Token stored in the OS keyring");
    expect(s.notice).toContain("embedded demo no longer runs");
    expect(s.view?.backends.map((b) => b.name)).toEqual(["prod"]);
    expect(JSON.stringify(s.view)).not.toContain("s3cret");
  });

  it("the engine's refusal lands on its field and clears the token field", async () => {
    const { shell, state } = settingsShell(settingsView([]));
    state.answer = { saved: null, errors: [{ field: "url", message: "backend `p`: URL must be http(s)" }] };
    const s = new SettingsState(shell.api());
    await s.load();
    s.startAdd("countersign");
    Object.assign(s.form ?? {}, { name: "p", url: "http://x", token: "t" });
    expect(await s.save()).toBe(false);
    expect(s.formErrors).toEqual({ url: "backend `p`: URL must be http(s)" });
    expect(s.form?.token).toBe("");
  });

  it("a keyring failure is shown on the form, not as a field", async () => {
    const { shell } = settingsShell(settingsView([]));
    shell.extra.addBackend = () => Promise.resolve(err("keyring_locked", "the OS keyring refused access"));
    const s = new SettingsState(shell.api());
    await s.load();
    s.startAdd("countersign");
    Object.assign(s.form ?? {}, { name: "p", url: "http://x", token: "t" });
    expect(await s.save()).toBe(false);
    expect(s.formFailure).toContain("keyring refused");
  });

  it("removal waits for confirmation", async () => {
    const { shell, sent } = settingsShell(settingsView([backend("prod"), backend("staging")]));
    const s = new SettingsState(shell.api());
    await s.load();
    s.askRemove("prod");
    expect(sent.removed).toEqual([]);
    s.cancelRemove();
    s.askRemove("staging");
    await s.confirmRemove();
    expect(sent.removed).toEqual(["staging"]);
    expect(s.notice).toContain("deleted its token");
    expect(s.view?.backends.map((b) => b.name)).toEqual(["prod"]);
  });
});

describe("SettingsView", () => {
  let view: ReturnType<typeof mount> | null = null;
  afterEach(() => {
    if (view !== null) void unmount(view);
    view = null;
    document.body.replaceChildren();
  });
  const q = (id: string): HTMLElement | null => document.querySelector<HTMLElement>(`[data-testid="${id}"]`);
  const type = (id: string, text: string): void => {
    const el = q(id) as HTMLInputElement;
    el.value = text;
    el.dispatchEvent(new Event("input", { bubbles: true }));
  };

  it("adds a backend through the form: labelled fields, a password token field, errors by field", async () => {
    const { shell, sent } = settingsShell(settingsView([backend("prod")]));
    const c = new ConsoleState(shell.api());
    view = mount(SettingsView, { target: document.body, props: { c } });
    await waitFor(() => { expect(q("backend-row")?.dataset["name"]).toBe("prod"); });
    q("backend-add")?.click();
    flushSync();
    const token = q("backend-token") as HTMLInputElement;
    expect(token.type).toBe("password");
    expect(token.getAttribute("autocomplete")).toBe("off");
    for (const el of document.querySelectorAll("input:not([type=radio]):not([type=checkbox]), select, textarea")) {
      expect(document.querySelector(`label[for="${el.id}"]`), el.id).not.toBeNull();
    }
    q("backend-save")?.click();
    await waitFor(() => { expect(q("field-error-name")?.textContent).toContain("name"); });
    expect(q("field-error-url")?.textContent).toContain("URL");
    expect(sent.inputs).toEqual([]);
    type("backend-name", "staging");
    type("backend-url", "http://127.0.0.1:9");
    type("backend-token", "tok");
    flushSync();
    q("backend-save")?.click();
    await waitFor(() => { expect(q("settings-notice")?.textContent).toContain("Added backend"); });
    expect(sent.tokens).toEqual(["tok"]);
    // The header's identity is re-read from the rebuilt engine.
    await waitFor(() => { expect(c.info?.approver).toBe("me@example.com"); });
    expect([...document.querySelectorAll<HTMLElement>('[data-testid="backend-row"]')].map((r) => r.dataset["name"])).toEqual(["prod", "staging"]);
    expect(document.body.textContent).not.toContain("tok\n");
  });

  it("Test shows the listed count, or the error", async () => {
    const { shell, state } = settingsShell(settingsView([backend("prod")]));
    view = mount(SettingsView, { target: document.body, props: { c: new ConsoleState(shell.api()) } });
    await waitFor(() => { expect(q("backend-test")).not.toBeNull(); });
    q("backend-test")?.click();
    await waitFor(() => { expect(q("backend-test-result")?.textContent).toBe("Connected: 2 pending actions listed."); });
    state.test = { ...state.test, ok: false, pending: null, error: "unauthorized (HTTP 401)", error_code: "unauthorized" };
    q("backend-test")?.click();
    await waitFor(() => { expect(q("backend-test-result")?.textContent).toContain("unauthorized (HTTP 401)"); });
  });

  it("says what happens to the demo when there is no config file", async () => {
    const { shell } = settingsShell(settingsView([], { config_exists: false }));
    view = mount(SettingsView, { target: document.body, props: { c: new ConsoleState(shell.api()) } });
    await waitFor(() => { expect(q("settings-embedded")?.textContent).toContain("demo then stops"); });
  });
});
