/**
 * The settings view's state: the backends in the config, the add/edit form per kind,
 * "test" (connect and list now), removal with a confirmation, notification
 * preferences, the approver and the theme. Kept out of the components so the rules live
 * in one place.
 *
 * Rules:
 * - The engine checks every save (`countersign_core::admin`) and answers field by field;
 *   the form checks the same things first so most mistakes show before a round trip.
 *   Errors are keyed by field (`name`, `url`, `command`, `token`, `option:<key>`, …).
 * - A token typed in the form is sent once, with the save, and the field is cleared
 *   after it: the shell stores it in the OS keyring and never returns it. Afterwards the
 *   form only says whether one is stored.
 * - Every save applies at once: the shell rebuilds its engine from the config and the
 *   inbox re-reads (`changed`). With no config file yet (the embedded demo), the first
 *   save creates it and the demo stops; its actions stay in history.
 * - The theme is this window's choice (localStorage), applied as `data-theme` on <html>;
 *   "system" sets the desktop's light or dark and follows its changes.
 */
import type {
  ApiError_Serialize,
  BackendInput_Deserialize,
  BackendSettings_Serialize,
  FieldError,
  Preferences_Deserialize,
  SettingsView_Serialize,
  TestReport_Serialize,
  TokenMode,
} from "../bindings.ts";
import type { Api } from "./api.ts";
import type { Errors } from "./fields.ts";

/** Turns a thrown IPC failure (not an ApiError) into one, so it is shown like the rest. */
function thrownError(e: unknown): ApiError_Serialize {
  return { code: "ipc", message: e instanceof Error ? e.message : String(e), changes: [], current: null };
}

export type OptionType = "text" | "list" | "bool" | "number";

export interface OptionSpec {
  key: string;
  label: string;
  hint: string;
  type: OptionType;
}

export interface KindSpec {
  label: string;
  /** Whether the URL is required, optional (has a default) or not used. */
  url: "required" | "optional" | "none";
  urlHint: string;
  /** An exec plugin: a program and its arguments. */
  command: boolean;
  options: OptionSpec[];
  tokenHint: string;
}

/** Each kind's form, after docs/backends.md. */
export const KINDS: Record<string, KindSpec> = {
  countersign: {
    label: "Countersign open protocol",
    url: "required",
    urlHint: "https://approvals.example.com (the API is under /v1)",
    command: false,
    options: [],
    tokenHint: "Bearer token of the server",
  },
  hoop: {
    label: "hoop.dev reviews",
    url: "required",
    urlHint: "https://hoop.example.com (the gateway)",
    command: false,
    options: [
      { key: "web_url", label: "Web app URL", hint: "for links (default: the URL above)", type: "text" },
      { key: "reviewer_email", label: "Reviewer email", hint: "the token's hoop user (default: asked from hoop)", type: "text" },
    ],
    tokenHint: "Bearer token or API key (hpk_…) of the reviewer",
  },
  github: {
    label: "GitHub deployment reviews",
    url: "optional",
    urlHint: "leave empty for https://api.github.com (Enterprise: https://host/api/v3)",
    command: false,
    options: [
      { key: "repos", label: "Repositories", hint: "owner/name, separated by commas", type: "list" },
      { key: "org", label: "Organisation", hint: "every repository of the org", type: "text" },
    ],
    tokenHint: "Token of the reviewer (repo scope, or Actions read + Deployments write)",
  },
  prefect: {
    label: "Prefect paused flow runs",
    url: "required",
    urlHint: "http://127.0.0.1:4200/api",
    command: false,
    options: [
      { key: "web_url", label: "Web UI URL", hint: "for links (default: the URL without /api)", type: "text" },
      { key: "reason_field", label: "Reason field", hint: "the form field that takes the reason", type: "text" },
    ],
    tokenHint: "API key (Prefect Cloud); none for a local server",
  },
  airflow: {
    label: "Airflow human-in-the-loop",
    url: "required",
    urlHint: "http://127.0.0.1:8080",
    command: false,
    options: [
      { key: "username", label: "User name", hint: "log in with the token as password; empty: the token is a bearer token", type: "text" },
      { key: "web_url", label: "Web UI URL", hint: "for links (default: the URL above)", type: "text" },
    ],
    tokenHint: "Password of the user above, or a bearer token",
  },
  exec: {
    label: "Exec plugin",
    url: "none",
    urlHint: "",
    command: true,
    options: [
      { key: "watch", label: "Plugin pushes changes (watch)", hint: "", type: "bool" },
      { key: "watch_idle_secs", label: "Restart a silent watch after (s)", hint: "default 60", type: "number" },
      { key: "timeout_secs", label: "Per-request timeout (s)", hint: "default 20", type: "number" },
    ],
    tokenHint: "Reaches the plugin as $COUNTERSIGN_TOKEN; none if it needs none",
  },
};

export const KIND_NAMES = Object.keys(KINDS);

/** The add/edit form as it is filled in (all text, as typed). */
export interface BackendForm {
  mode: "add" | "edit";
  name: string;
  kind: string;
  url: string;
  /** The program on the first line, one argument per following line. */
  command: string;
  /** The kind's known options by key ("" = not set). */
  options: Record<string, string>;
  /** Other options, one `key = value` per line. */
  extra: string;
  tokenMode: TokenMode;
  tokenEnv: string;
  /** Typed once, sent with the save, then cleared. */
  token: string;
  /** Whether the keyring holds a token for this backend (edit). */
  tokenStored: boolean;
  pollInterval: string;
  timeout: string;
}

export function emptyForm(kind = "countersign"): BackendForm {
  return {
    mode: "add",
    name: "",
    kind,
    url: "",
    command: "",
    options: {},
    extra: "",
    tokenMode: "keyring",
    tokenEnv: "",
    token: "",
    tokenStored: false,
    pollInterval: "",
    timeout: "",
  };
}

/** A configured backend in the form, for editing. */
export function formFor(b: BackendSettings_Serialize): BackendForm {
  const spec = KINDS[b.kind];
  const known = (spec?.options ?? []).map((o) => o.key);
  const options: Record<string, string> = {};
  const extra: string[] = [];
  for (const o of b.options) {
    if (known.includes(o.key)) {
      const type = spec?.options.find((s) => s.key === o.key)?.type;
      options[o.key] = type === "list" ? listText(o.value) : o.value;
    } else {
      extra.push(`${o.key} = ${o.value}`);
    }
  }
  return {
    mode: "edit",
    name: b.name,
    kind: b.kind,
    url: b.url,
    command: b.command.join("\n"),
    options,
    extra: extra.join("\n"),
    tokenMode: b.token_mode,
    tokenEnv: b.token_env ?? "",
    token: "",
    tokenStored: b.token_stored,
    pollInterval: b.poll_interval_secs === null ? "" : String(b.poll_interval_secs),
    timeout: b.timeout_secs === null ? "" : String(b.timeout_secs),
  };
}

/** `["a", "b"]` (a TOML array as the engine shows it) as `a, b`. */
export function listText(value: string): string {
  const v = value.trim();
  if (!v.startsWith("[")) return v;
  try {
    const parsed: unknown = JSON.parse(v);
    if (Array.isArray(parsed)) return parsed.map(String).join(", ");
  } catch {
    // Not JSON-compatible TOML: show it as it is.
  }
  return v;
}

/** `a, b` as a TOML array literal (JSON string syntax is valid TOML for these). */
export function listLiteral(text: string): string {
  const items = text
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter((s) => s !== "");
  return `[${items.map((s) => JSON.stringify(s)).join(", ")}]`;
}

const NAME = /^[A-Za-z0-9_-]+$/;
const ENV = /^[A-Za-z0-9_]+$/;
const WHOLE = /^[1-9][0-9]*$/;

/** The engine's input for the form, or what is wrong with it (by field). */
export function toInput(f: BackendForm): { input: BackendInput_Deserialize; token: string | null } | { errors: Errors } {
  const errors: Errors = {};
  const spec = KINDS[f.kind];
  const name = f.name.trim();
  if (name === "") errors["name"] = "Give the backend a name.";
  else if (!NAME.test(name)) errors["name"] = "Use letters, digits, - or _ only (the name is part of every action id).";
  if (spec === undefined) errors["kind"] = `Unknown kind "${f.kind}".`;
  const url = f.url.trim();
  if (spec !== undefined && spec.url !== "none") {
    if (url === "" && spec.url === "required") errors["url"] = "This kind needs the server's URL.";
    else if (url !== "" && !/^https?:\/\/[^\s/]+/.test(url)) errors["url"] = "Use an http:// or https:// URL.";
  }
  const command = f.command
    .split("\n")
    .map((s) => s.trim())
    .filter((s) => s !== "");
  if (spec?.command === true && command.length === 0) errors["command"] = "Give the plugin program (and its arguments, one per line).";
  if (f.tokenMode === "env" && !ENV.test(f.tokenEnv.trim())) errors["token_env"] = "Give an environment variable name (letters, digits, _).";
  const token = f.token.trim();
  if (token !== "") {
    if (f.tokenMode !== "keyring") errors["token"] = "A token typed here is kept in the OS keyring: choose the keyring.";
    else if (/\s/.test(token)) errors["token"] = "A token is one line with no spaces.";
  }
  for (const [field, text] of [
    ["poll_interval_secs", f.pollInterval],
    ["timeout_secs", f.timeout],
  ] as const) {
    if (text.trim() !== "" && !WHOLE.test(text.trim())) errors[field] = "A whole number of seconds, at least 1.";
  }
  const options: { key: string; value: string }[] = [];
  for (const o of spec?.options ?? []) {
    const raw = (f.options[o.key] ?? "").trim();
    if (raw === "" || (o.type === "bool" && raw === "false")) continue;
    if (o.type === "number" && !WHOLE.test(raw)) {
      errors[`option:${o.key}`] = "A whole number, at least 1.";
      continue;
    }
    options.push({ key: o.key, value: o.type === "list" ? listLiteral(raw) : raw });
  }
  if (f.kind === "github" && !options.some((o) => o.key === "repos" || o.key === "org")) {
    errors["option:repos"] = "Name repositories or an organisation to watch.";
  }
  for (const line of f.extra.split("\n")) {
    if (line.trim() === "") continue;
    const eq = line.indexOf("=");
    const key = eq < 0 ? "" : line.slice(0, eq).trim();
    if (key === "") {
      errors["options"] = `"${line.trim()}" is not key = value.`;
      continue;
    }
    options.push({ key, value: line.slice(eq + 1).trim() });
  }
  if (Object.keys(errors).length > 0) return { errors };
  return {
    input: {
      name,
      kind: f.kind,
      url: spec?.url === "none" ? "" : url,
      command: spec?.command === true ? command : [],
      options,
      token_mode: f.tokenMode,
      token_env: f.tokenMode === "env" ? f.tokenEnv.trim() : null,
      poll_interval_secs: f.pollInterval.trim() === "" ? null : Number(f.pollInterval.trim()),
      timeout_secs: f.timeout.trim() === "" ? null : Number(f.timeout.trim()),
    },
    token: token === "" ? null : token,
  };
}

/** The engine's field errors, keyed like the form's own. */
export function errorsOf(list: FieldError[]): Errors {
  const errors: Errors = {};
  for (const e of list) {
    const key = e.field;
    errors[key] = errors[key] === undefined ? e.message : `${errors[key]} ${e.message}`;
  }
  return errors;
}

/** What a test answered, in one line. */
export function describeTest(r: TestReport_Serialize): { ok: boolean; text: string } {
  if (r.error !== null) return { ok: false, text: `${r.error}${r.error_code === null ? "" : ` [${r.error_code}]`}` };
  const n = r.pending;
  const listed = n === null ? "Connected (nothing new since the last answer)." : `Connected: ${String(n)} pending action${n === 1 ? "" : "s"} listed.`;
  if (r.partial !== null) return { ok: false, text: `${listed} Only in part: ${r.partial}` };
  return { ok: r.ok, text: listed };
}

/** `datetime-local` text (local time) for an RFC 3339 instant; "" when none or unreadable. */
export function localInput(instant: string | null): string {
  if (instant === null || instant === "") return "";
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  const d = new Date(instant);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n: number): string => String(n).padStart(2, "0");
  return `${String(d.getFullYear())}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** RFC 3339 for `datetime-local` text; null when empty or not a time. */
export function instantOf(local: string): string | null {
  if (local.trim() === "") return null;
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

export type Theme = "system" | "light" | "dark";
export const THEME_KEY = "countersign.theme";

export function storedTheme(): Theme {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return t === "light" || t === "dark" ? t : "system";
  } catch {
    return "system";
  }
}

const DARK_QUERY = "(prefers-color-scheme: dark)";
/** The desktop's preference while "system" is chosen (one listener at most). */
let followedDesktop: { query: MediaQueryList; listener: () => void } | null = null;

function desktopPrefersDark(): boolean {
  return typeof window.matchMedia === "function" && window.matchMedia(DARK_QUERY).matches;
}

/**
 * Sets `data-theme` on <html> to "light" or "dark", always: "system" is resolved from
 * the desktop's preference and follows its changes, so the stylesheet needs only one
 * dark palette.
 */
export function applyTheme(theme: Theme): void {
  const root = document.documentElement;
  if (followedDesktop !== null) {
    followedDesktop.query.removeEventListener("change", followedDesktop.listener);
    followedDesktop = null;
  }
  if (theme !== "system") {
    root.setAttribute("data-theme", theme);
    return;
  }
  const resolve = () => {
    root.setAttribute("data-theme", desktopPrefersDark() ? "dark" : "light");
  };
  resolve();
  if (typeof window.matchMedia === "function") {
    const query = window.matchMedia(DARK_QUERY);
    query.addEventListener("change", resolve);
    followedDesktop = { query, listener: resolve };
  }
}

/** The preferences form as it is filled in. */
export interface PrefsForm {
  approver: string;
  enabled: boolean;
  muted: string[];
  /** `datetime-local` text; "" = no do-not-disturb. */
  dndUntil: string;
  denyReason: string;
  closeToTray: boolean;
}

export function prefsFormOf(v: SettingsView_Serialize): PrefsForm {
  return {
    approver: v.approver ?? "",
    enabled: v.notifications.enabled,
    muted: [...v.notifications.muted_backends],
    dndUntil: localInput(v.notifications.dnd_until),
    denyReason: v.notifications.default_deny_reason ?? "",
    closeToTray: v.notifications.close_to_tray,
  };
}

export function toPreferences(p: PrefsForm): { preferences: Preferences_Deserialize } | { errors: Errors } {
  const dnd = instantOf(p.dndUntil);
  if (p.dndUntil.trim() !== "" && dnd === null) return { errors: { dnd_until: "Not a date and time." } };
  return {
    preferences: {
      approver: p.approver.trim() === "" ? null : p.approver.trim(),
      notifications: {
        enabled: p.enabled,
        muted_backends: p.muted,
        dnd_until: dnd,
        default_deny_reason: p.denyReason.trim() === "" ? null : p.denyReason.trim(),
        close_to_tray: p.closeToTray,
      },
    },
  };
}

export interface TestState {
  busy: boolean;
  ok: boolean;
  text: string;
}

export class SettingsState {
  view = $state<SettingsView_Serialize | null>(null);
  error = $state<ApiError_Serialize | null>(null);
  form = $state<BackendForm | null>(null);
  formErrors = $state<Errors>({});
  /** A refusal that is not about one field (keyring locked, file not writable). */
  formFailure = $state<string | null>(null);
  saving = $state(false);
  /** What the last save or removal did, in words. */
  notice = $state<string | null>(null);
  tests = $state<Record<string, TestState>>({});
  /** The backend whose removal waits for confirmation. */
  removing = $state<string | null>(null);
  prefs = $state<PrefsForm | null>(null);
  prefsErrors = $state<Errors>({});
  prefsNotice = $state<string | null>(null);
  theme = $state<Theme>(storedTheme());

  /**
   * Called after every applied change (the shell rebuilt its engine): the view uses it
   * to re-read what the header shows (approver, demo badge).
   */
  onApplied: () => Promise<void> = () => Promise.resolve();

  readonly #api: Api;

  constructor(api: Api) {
    this.#api = api;
  }

  get embedded(): boolean {
    return this.view !== null && !this.view.config_exists;
  }

  async load(): Promise<void> {
    try {
      const res = await this.#api.commands.settingsView();
      if (res.status === "ok") {
        this.view = res.data;
        this.prefs = prefsFormOf(res.data);
        this.error = null;
      } else {
        this.error = res.error;
      }
    } catch (e) {
      this.error = thrownError(e);
    }
  }

  startAdd(kind = "countersign"): void {
    this.#show(emptyForm(kind));
    this.notice = null;
  }

  startEdit(name: string): void {
    const b = this.view?.backends.find((x) => x.name === name);
    if (b === undefined) return;
    this.#show(formFor(b));
    this.notice = null;
  }

  cancel(): void {
    this.#show(null);
  }

  /** Opens a form (add or edit: its `mode` says which) or closes it, with nothing wrong yet. */
  #show(form: BackendForm | null): void {
    this.form = form;
    this.formErrors = {};
    this.formFailure = null;
  }

  /** Checks the form, saves it (the engine checks again), then re-reads the settings. */
  async save(): Promise<boolean> {
    const f = this.form;
    if (f === null || this.saving) return false;
    const checked = toInput(f);
    if ("errors" in checked) {
      this.formErrors = checked.errors;
      return false;
    }
    this.formErrors = {};
    this.formFailure = null;
    this.saving = true;
    const createsConfig = this.embedded;
    try {
      const call = f.mode === "add" ? this.#api.commands.addBackend : this.#api.commands.editBackend;
      const res = await call(checked.input, checked.token);
      // The token has left the page either way; never keep it in the form.
      f.token = "";
      if (res.status === "error") {
        this.formFailure = res.error.message;
        return false;
      }
      if (res.data.saved === null) {
        this.formErrors = errorsOf(res.data.errors);
        return false;
      }
      const saved = res.data.saved;
      const parts = [`${f.mode === "add" ? "Added" : "Saved"} backend "${saved.name}"; it syncs now.`];
      if (saved.token_stored) parts.push("Token stored in the OS keyring; it is not shown again.");
      if (saved.created_config || createsConfig) {
        parts.push(`Created ${this.view?.config_path ?? "the config file"}: the embedded demo no longer runs (its actions stay in history).`);
      }
      this.notice = parts.join(" ");
      this.form = null;
      await Promise.all([this.load(), this.onApplied()]);
      return true;
    } catch (e) {
      f.token = "";
      this.formFailure = thrownError(e).message;
      return false;
    } finally {
      this.saving = false;
    }
  }

  async test(name: string): Promise<void> {
    this.tests[name] = { busy: true, ok: false, text: "Connecting…" };
    try {
      const res = await this.#api.commands.testBackend(name);
      this.tests[name] =
        res.status === "ok" ? { busy: false, ...describeTest(res.data) } : { busy: false, ok: false, text: res.error.message };
    } catch (e) {
      this.tests[name] = { busy: false, ok: false, text: thrownError(e).message };
    }
  }

  askRemove(name: string): void {
    this.removing = name;
  }

  cancelRemove(): void {
    this.removing = null;
  }

  async confirmRemove(): Promise<void> {
    const name = this.removing;
    if (name === null) return;
    try {
      const res = await this.#api.commands.removeBackend(name);
      if (res.status === "error") {
        this.notice = `Could not remove "${name}": ${res.error.message}`;
        return;
      }
      this.notice = `Removed backend "${name}"${res.data.token_deleted ? " and deleted its token from the OS keyring" : ""}. It no longer syncs; its actions stay in history.`;
      this.tests = Object.fromEntries(Object.entries(this.tests).filter(([k]) => k !== name));
      if (this.form?.name === name) this.form = null;
      await Promise.all([this.load(), this.onApplied()]);
    } catch (e) {
      this.notice = `Could not remove "${name}": ${thrownError(e).message}`;
    } finally {
      this.removing = null;
    }
  }

  toggleMuted(name: string): void {
    const p = this.prefs;
    if (p === null) return;
    p.muted = p.muted.includes(name) ? p.muted.filter((m) => m !== name) : [...p.muted, name];
  }

  /** Do not disturb for `hours` from now. */
  dndFor(hours: number, now = Date.now()): void {
    if (this.prefs === null) return;
    // eslint-disable-next-line svelte/prefer-svelte-reactivity
    this.prefs.dndUntil = localInput(new Date(now + hours * 3_600_000).toISOString());
  }

  async savePrefs(): Promise<boolean> {
    const p = this.prefs;
    if (p === null) return false;
    const checked = toPreferences(p);
    if ("errors" in checked) {
      this.prefsErrors = checked.errors;
      return false;
    }
    this.prefsErrors = {};
    try {
      const res = await this.#api.commands.savePreferences(checked.preferences);
      if (res.status === "error") {
        this.prefsNotice = res.error.message;
        return false;
      }
      if (res.data.errors.length > 0) {
        this.prefsErrors = errorsOf(res.data.errors);
        return false;
      }
      this.prefsNotice = "Preferences saved; they apply now.";
      await Promise.all([this.load(), this.onApplied()]);
      return true;
    } catch (e) {
      this.prefsNotice = thrownError(e).message;
      return false;
    }
  }

  setTheme(theme: Theme): void {
    this.theme = theme;
    try {
      if (theme === "system") localStorage.removeItem(THEME_KEY);
      else localStorage.setItem(THEME_KEY, theme);
    } catch {
      // No storage (private mode): the theme still applies to this window.
    }
    applyTheme(theme);
  }
}

const states = new WeakMap<Api, SettingsState>();

/** One state per shell: a half-filled form survives switching views and back. */
export function settingsFor(api: Api): SettingsState {
  let s = states.get(api);
  if (s === undefined) {
    s = new SettingsState(api);
    states.set(api, s);
  }
  return s;
}
