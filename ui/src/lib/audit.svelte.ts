/**
 * The audit view's state: the chain's status, the export form and the signing key.
 * Kept out of the components so the rules live in one place.
 *
 * Rules:
 * - The chain is re-walked by the engine (`auditStatus`) when the view opens, after a
 *   key rotation, on request, and when a decision or delivery was recorded (a
 *   `changed` event of type `decision`: only those append to the chain). A broken
 *   chain is a status to show (the first broken row and why), not an error.
 * - The export's dates are local calendar days, both inclusive: `from` is the start
 *   of its day, `to` the start of the day after. No date and no backend exports the
 *   complete chain; anything else is an excerpt, checked with `verify --excerpt` (the
 *   result shows the exact command).
 * - Copy buttons ask the shell to copy the key's text (`copyKeyText`): the page has no
 *   clipboard access of its own. "Copied" shows for `COPIED_MS`.
 * - Rotating the key takes two steps (ask, then confirm in the page's dialog); the new
 *   fingerprint replaces the old one and the chain is re-checked, since the rotation
 *   is itself an entry in it.
 */
import type {
  ApiError_Serialize,
  AuditExport,
  AuditRange_Deserialize,
  ChainStatus_Serialize,
  Change,
  KeyInfo,
  KeyText,
} from "../bindings.ts";
import type { Api } from "./api.ts";
import { coalesce } from "./coalesce.ts";

/** How long "Copied" stays next to a copy button. */
export const COPIED_MS = 2500;
/** At most one re-check of the chain per this many milliseconds of decision events. */
export const RECHECK_INTERVAL_MS = 500;
/** Hex characters of the head hash shown inline (the whole hash is in the title). */
export const SHORT_HASH = 16;

/** The export form as it is filled in: empty string means "any". */
export interface ExportForm {
  /** `YYYY-MM-DD`, a local date, inclusive. */
  from: string;
  /** `YYYY-MM-DD`, a local date, inclusive. */
  to: string;
  backend: string;
}

export function emptyExportForm(): ExportForm {
  return { from: "", to: "", backend: "" };
}

/** What the last export did, as the view says it. */
export interface ExportOutcome {
  ok: boolean;
  text: string;
  /** The command that checks the written file. */
  command: string | null;
  excerpt: boolean;
}

/** Turns a thrown IPC failure (not an ApiError) into one, so it is shown like the rest. */
function thrownError(e: unknown): ApiError_Serialize {
  return { code: "ipc", message: e instanceof Error ? e.message : String(e), changes: [], current: null };
}

/** Start of a local calendar day (`YYYY-MM-DD`) plus `plusDays`, as an RFC 3339 instant; null when not a date. */
export function localDayStart(day: string, plusDays = 0): string | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day.trim());
  if (m === null) return null;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // A plain value, never mutated: local midnight of that day.
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  const date = new Date(y, mo - 1, d);
  // Reject dates the constructor silently rolls over (2026-02-31 → March 3rd).
  if (date.getFullYear() !== y || date.getMonth() !== mo - 1 || date.getDate() !== d) return null;
  date.setDate(date.getDate() + plusDays);
  return date.toISOString();
}

/** The local calendar day (`YYYY-MM-DD`) an instant falls on. */
export function localDay(instant: string | Date): string {
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  const d = typeof instant === "string" ? new Date(instant) : instant;
  const pad = (n: number): string => String(n).padStart(2, "0");
  return `${String(d.getFullYear())}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/**
 * The engine's range for the form, or what is wrong with it. Both days are inclusive:
 * `to` becomes the start of the following day (the engine's `to` is exclusive).
 */
export function rangeOf(form: ExportForm): { range: AuditRange_Deserialize } | { error: string } {
  const range: AuditRange_Deserialize = {};
  if (form.from.trim() !== "") {
    const from = localDayStart(form.from);
    if (from === null) return { error: `"${form.from}" is not a date (YYYY-MM-DD).` };
    range.from = from;
  }
  if (form.to.trim() !== "") {
    const to = localDayStart(form.to, 1);
    if (to === null) return { error: `"${form.to}" is not a date (YYYY-MM-DD).` };
    range.to = to;
  }
  if (range.from != null && range.to != null && range.from >= range.to) {
    return { error: "The first day is after the last day." };
  }
  if (form.backend !== "") range.backend = form.backend;
  return { range };
}

/** Whether the form picks the whole chain (no date, no backend). */
export function isWhole(form: ExportForm): boolean {
  return form.from.trim() === "" && form.to.trim() === "" && form.backend === "";
}

export function shortHash(hash: string): string {
  return hash.length > SHORT_HASH ? `${hash.slice(0, SHORT_HASH)}…` : hash;
}

/** One line for the chain's state. */
export function statusLine(s: ChainStatus_Serialize): string {
  if (s.broken !== null) {
    const before =
      s.verified.entries === 0
        ? "No entry before it verifies."
        : `Verified up to entry ${String(s.verified.entries)} (head hash ${shortHash(s.verified.head_hash)}).`;
    return `Broken at row ${String(s.broken.row)} of ${String(s.entries)}: ${s.broken.reason}. ${before}`;
  }
  if (s.entries === 0) return "No entries yet: the chain starts with the first decision.";
  return `Verified up to entry ${String(s.verified.entries)} (head hash ${shortHash(s.verified.head_hash)}): ${String(s.verified.signatures)} signatures checked.`;
}

/** What the person sees after an export. */
export function describeExport(r: AuditExport): ExportOutcome {
  const rows = r.rows === 1 ? "1 entry" : `${String(r.rows)} entries`;
  const what = r.excerpt
    ? `${rows} of the chain's ${String(r.chain.entries)} (an excerpt)`
    : `the complete chain, ${rows}`;
  return {
    ok: true,
    text: `Exported ${what} to ${r.path}. Check it with:`,
    command: r.verify_command,
    excerpt: r.excerpt,
  };
}

export class AuditState {
  status = $state<ChainStatus_Serialize | null>(null);
  statusError = $state<ApiError_Serialize | null>(null);
  checking = $state(false);

  key = $state<KeyInfo | null>(null);
  keyError = $state<ApiError_Serialize | null>(null);

  form = $state<ExportForm>(emptyExportForm());
  exporting = $state(false);
  exported = $state<ExportOutcome | null>(null);

  /** Which copy button last copied (shows "Copied" for a moment). */
  copied = $state<KeyText | null>(null);
  copyError = $state<string | null>(null);

  /** The rotation dialog is open. */
  confirmingRotation = $state(false);
  rotating = $state(false);
  /** The last rotation done here: old and new fingerprint. */
  rotated = $state<{ from: string; to: string } | null>(null);
  rotateError = $state<ApiError_Serialize | null>(null);

  readonly #api: Api;
  #statusSeq = 0;
  #copiedTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(api: Api) {
    this.#api = api;
  }

  /** Whether the export form picks the complete chain. */
  get whole(): boolean {
    return isWhole(this.form);
  }

  /** Loads status and key and re-checks on decision events; returns the teardown. */
  start(): () => void {
    let stopped = false;
    let unlisten: (() => void) | null = null;
    const recheck = coalesce<Change>(() => this.refreshStatus(), RECHECK_INTERVAL_MS);
    void this.refreshStatus();
    void this.loadKey();
    void this.#api
      .onChanged((change) => {
        if (change.type === "decision") recheck.push(change);
      })
      .then((u) => {
        if (stopped) u();
        else unlisten = u;
      })
      .catch(() => {
        // No events (e.g. a test shell): the view still re-checks on open and on request.
      });
    return () => {
      stopped = true;
      recheck.dispose();
      unlisten?.();
      if (this.#copiedTimer !== null) clearTimeout(this.#copiedTimer);
      this.#copiedTimer = null;
      // "Copied" belongs to the moment of the click, not to the next visit.
      this.copied = null;
    };
  }

  /** Re-walks the chain. Only the newest answer is shown. */
  async refreshStatus(): Promise<void> {
    const seq = ++this.#statusSeq;
    this.checking = true;
    try {
      const res = await this.#api.commands.auditStatus();
      if (seq !== this.#statusSeq) return;
      if (res.status === "ok") {
        this.status = res.data;
        this.statusError = null;
        this.#offerRange(res.data);
      } else {
        this.statusError = res.error;
      }
    } catch (e) {
      if (seq === this.#statusSeq) this.statusError = thrownError(e);
    } finally {
      if (seq === this.#statusSeq) this.checking = false;
    }
  }

  /** Picks the backend list's value back to "all" when that backend left the chain. */
  #offerRange(s: ChainStatus_Serialize): void {
    if (this.form.backend !== "" && !s.backends.includes(this.form.backend)) {
      this.form.backend = "";
    }
  }

  async loadKey(): Promise<void> {
    try {
      const res = await this.#api.commands.keyInfo();
      if (res.status === "ok") {
        this.key = res.data;
        this.keyError = null;
      } else {
        this.keyError = res.error;
      }
    } catch (e) {
      this.keyError = thrownError(e);
    }
  }

  /** Exports what the form picks through the save dialog. */
  async exportCsv(): Promise<void> {
    if (this.exporting) return;
    const picked = rangeOf(this.form);
    if ("error" in picked) {
      this.exported = { ok: false, text: picked.error, command: null, excerpt: false };
      return;
    }
    this.exporting = true;
    this.exported = null;
    try {
      const res = await this.#api.commands.exportAuditCsv(picked.range);
      if (res.status === "error") {
        this.exported = { ok: false, text: res.error.message, command: null, excerpt: false };
        if (res.error.code === "chain_broken") void this.refreshStatus();
      } else if (res.data !== null) {
        this.exported = describeExport(res.data);
      }
      // null: the person cancelled the dialog; nothing to say.
    } catch (e) {
      this.exported = { ok: false, text: thrownError(e).message, command: null, excerpt: false };
    } finally {
      this.exporting = false;
    }
  }

  async copy(what: KeyText): Promise<void> {
    this.copyError = null;
    try {
      const res = await this.#api.commands.copyKeyText(what);
      if (res.status === "error") {
        this.copied = null;
        this.copyError = res.error.message;
        return;
      }
      this.copied = what;
      if (this.#copiedTimer !== null) clearTimeout(this.#copiedTimer);
      this.#copiedTimer = setTimeout(() => {
        this.#copiedTimer = null;
        this.copied = null;
      }, COPIED_MS);
    } catch (e) {
      this.copied = null;
      this.copyError = thrownError(e).message;
    }
  }

  askRotation(): void {
    this.rotateError = null;
    this.confirmingRotation = true;
  }

  cancelRotation(): void {
    if (!this.rotating) this.confirmingRotation = false;
  }

  /** The confirmed rotation: new key, then the chain re-checked with its rotation entry. */
  async confirmRotation(): Promise<void> {
    if (!this.confirmingRotation || this.rotating) return;
    const before = this.key?.fingerprint ?? "";
    this.rotating = true;
    this.rotateError = null;
    try {
      const res = await this.#api.commands.rotateKey();
      if (res.status === "error") {
        this.rotateError = res.error;
        return;
      }
      this.key = res.data;
      this.rotated = { from: before, to: res.data.fingerprint };
      this.confirmingRotation = false;
    } catch (e) {
      this.rotateError = thrownError(e);
    } finally {
      this.rotating = false;
    }
    await this.refreshStatus();
  }
}

const states = new WeakMap<Api, AuditState>();

/** One state per shell: the export form survives switching views and back. */
export function auditFor(api: Api): AuditState {
  let s = states.get(api);
  if (s === undefined) {
    s = new AuditState(api);
    states.set(api, s);
  }
  return s;
}
