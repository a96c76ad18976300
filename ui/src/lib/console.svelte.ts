/**
 * The window's state and everything it does, kept out of the components so that the
 * rules (what is refreshed when, which snapshot a decision binds) live in one place.
 *
 * Rules:
 * - The inbox is re-read on every (coalesced) `changed` event.
 * - The open action is re-read with `actionDetail` (no "viewed" side effect) when a
 *   change concerns it. Its timeline and decisions update at once; a new snapshot is
 *   only *offered* (`snapshotChanged`) and swapped in by `showLatest()`, so the fields
 *   the person is reading never change under them.
 * - A decision always carries the hash of the snapshot on screen (`detail.shown`).
 * - A form's draft (chosen options, typed fields) belongs to the form on screen: it is
 *   kept when a newer snapshot has the same form and started afresh when it has not.
 */
import type {
  ActionKey,
  AppInfo,
  ApiError_Serialize,
  Change,
  Decision_Serialize,
  FieldChange,
  InboxView_Serialize,
  PendingAction_Serialize,
  TimelineEvent_Serialize,
  Verdict,
} from "../bindings.ts";
import type { Api } from "./api.ts";
import { coalesce } from "./coalesce.ts";
import { sameKey, touches } from "./model.ts";
import { answerFor, hasErrors, initialDraft, toggleOption, type FormDraft } from "./form.ts";
import { describeError, describeReport, STALE_CODE, type ResultText } from "./results.ts";
import { SvelteSet } from "svelte/reactivity";
import { arrange, NO_FILTER, prune, type GroupBy, type InboxFilter, type SortBy } from "./inbox.ts";

/** At most one re-read per this many milliseconds, however many events arrive. */
export const REFRESH_INTERVAL_MS = 150;

export interface OpenDetail {
  key: ActionKey;
  /** The snapshot on screen: what a decision binds. */
  shown: PendingAction_Serialize;
  /** The newest snapshot read; differs from `shown` when the request changed. */
  latest: PendingAction_Serialize;
  timeline: TimelineEvent_Serialize[];
  decisions: Decision_Serialize[];
}

/** A refused stale decision: what changed between the snapshot seen and the current. */
export interface Refusal {
  message: string;
  changes: FieldChange[];
}

/** Turns a thrown IPC failure (not an ApiError) into one, so it is shown like the rest. */
function thrownError(e: unknown): ApiError_Serialize {
  return {
    code: "ipc",
    message: e instanceof Error ? e.message : String(e),
    changes: [],
    current: null,
  };
}

/** The console's views; the nav bar and the keyboard (g i, g h, g a, g s) switch them. */
export const VIEWS = ["inbox", "history", "audit", "settings"] as const;
export type View = (typeof VIEWS)[number];

export class ConsoleState {
  /** Which view fills the window below the header. */
  view = $state<View>("inbox");
  info = $state<AppInfo | null>(null);
  inbox = $state<InboxView_Serialize | null>(null);
  /** The last inbox read failed (after the first succeeded). */
  inboxError = $state<ApiError_Serialize | null>(null);
  /** The first inbox read failed: the engine is not running. Shown full-window. */
  fatal = $state<ApiError_Serialize | null>(null);
  /** The first inbox read finished, either way. */
  ready = $state(false);
  now = $state(Date.now());

  selected = $state<ActionKey | null>(null);
  detail = $state<OpenDetail | null>(null);
  detailError = $state<ApiError_Serialize | null>(null);
  loadingDetail = $state(false);

  reason = $state("");
  /** Pressing Enter in the reason field sends this verdict (set by the `d` key). */
  armed = $state<Verdict | null>(null);
  deciding = $state<Verdict | null>(null);
  result = $state<ResultText | null>(null);
  refusal = $state<Refusal | null>(null);
  /** A decision on the open action was recorded: no second one from this view. */
  decided = $state(false);
  /** What is filled in on the open action's form, if it has one. */
  draft = $state<FormDraft | null>(null);
  /** Field name ("" for the options) → what keeps the answer from being sent. */
  formErrors = $state<Record<string, string>>({});
  #draftForm = "";

  snapshotChanged = $derived(
    this.detail !== null && this.detail.latest.snapshot_hash !== this.detail.shown.snapshot_hash,
  );

  readonly #api: Api;
  #inboxSeq = 0;
  #inboxApplied = 0;
  #detailSeq = 0;
  #detailApplied = 0;

  constructor(api: Api) {
    this.#api = api;
  }

  /** The shell's commands, for the views that keep their own state (history, audit, settings). */
  get api(): Api {
    return this.#api;
  }

  /** Loads the window and starts listening; returns the teardown. */
  start(): () => void {
    let stopped = false;
    let unlisten: (() => void) | null = null;
    const tick = setInterval(() => {
      this.now = Date.now();
    }, 1000);
    const changes = coalesce<Change>((batch) => this.#onChanges(batch), REFRESH_INTERVAL_MS);

    this.#api
      .onChanged((change) => {
        changes.push(change);
      })
      .then(
        (off) => {
          if (stopped) off();
          else unlisten = off;
        },
        () => {
          // No event channel (not running inside the shell): the window still works,
          // it just does not update by itself.
        },
      );
    void this.#loadInfo();
    performance.mark("cs-inbox-asked");
    void this.refreshInbox().finally(() => {
      performance.mark("cs-inbox-answered");
      this.ready = true;
    });

    return () => {
      stopped = true;
      clearInterval(tick);
      changes.dispose();
      unlisten?.();
    };
  }

  async #loadInfo(): Promise<void> {
    try {
      const res = await this.#api.commands.appInfo();
      if (res.status === "ok") this.info = res.data;
    } catch {
      // The header just shows no identity.
    }
  }

  /** The last batch of engine changes (views that keep their own state follow it). */
  lastChanges = $state.raw<Change[]>([]);

  async #onChanges(batch: Change[]): Promise<void> {
    this.lastChanges = batch;
    const detail = touches(batch, this.selected) ? this.refreshDetail() : null;
    await Promise.all([this.refreshInbox(), detail]);
  }

  /** Re-reads the inbox; an older read finishing late never overwrites a newer one. */
  async refreshInbox(): Promise<void> {
    const seq = ++this.#inboxSeq;
    let error: ApiError_Serialize | null = null;
    let view: InboxView_Serialize | null = null;
    try {
      const res = await this.#api.commands.inbox();
      if (res.status === "ok") view = res.data;
      else error = res.error;
    } catch (e) {
      error = thrownError(e);
    }
    if (seq < this.#inboxApplied) return;
    this.#inboxApplied = seq;
    this.now = Date.now();
    if (view !== null) {
      this.inbox = view;
      this.pruneChecked();
      this.inboxError = null;
      this.fatal = null;
    } else if (this.inbox === null) {
      this.fatal = error;
    } else {
      this.inboxError = error;
    }
  }

  /** Opens an action: records "viewed" and shows the snapshot as it is now. */
  async select(key: ActionKey): Promise<void> {
    if (this.deciding !== null) return;
    if (sameKey(key, this.selected) && this.detail !== null) return;
    this.selected = key;
    this.detail = null;
    this.detailError = null;
    this.#resetDecision();
    this.loadingDetail = true;
    const seq = ++this.#detailSeq;
    let res;
    try {
      res = await this.#api.commands.openAction($state.snapshot(key));
    } catch (e) {
      res = { status: "error" as const, error: thrownError(e) };
    }
    if (seq < this.#detailApplied || !sameKey(key, this.selected)) return;
    this.#detailApplied = seq;
    this.loadingDetail = false;
    if (res.status === "ok") {
      const { action, timeline, decisions } = res.data;
      this.detail = { key, shown: action, latest: action, timeline, decisions };
      this.#showForm(action);
    } else {
      this.detailError = res.error;
    }
  }

  /** Re-reads the open action without recording a view; never swaps `shown`. */
  async refreshDetail(): Promise<void> {
    const key = this.selected;
    if (key === null) return;
    const seq = ++this.#detailSeq;
    let res;
    try {
      res = await this.#api.commands.actionDetail($state.snapshot(key));
    } catch {
      return;
    }
    const detail = this.detail;
    if (seq < this.#detailApplied || detail === null || !sameKey(key, detail.key)) return;
    this.#detailApplied = seq;
    if (res.status !== "ok") return;
    detail.latest = res.data.action;
    detail.timeline = res.data.timeline;
    detail.decisions = res.data.decisions;
  }

  /** Swaps the newest snapshot in: from now on a decision binds that one. */
  showLatest(): void {
    if (this.detail === null) return;
    this.detail.shown = this.detail.latest;
    this.#showForm(this.detail.shown);
  }

  #showForm(action: PendingAction_Serialize): void {
    const form = action.form ?? null;
    const text = JSON.stringify(form);
    if (text === this.#draftForm && this.draft !== null) return;
    this.#draftForm = text;
    this.draft = form === null ? null : initialDraft(form);
    this.formErrors = {};
  }

  toggleOption(option: string): void {
    const form = this.detail?.shown.form;
    if (!form || this.draft === null) return;
    this.draft = toggleOption(form, this.draft, option);
    this.formErrors = Object.fromEntries(Object.entries(this.formErrors).filter(([k]) => k !== ""));
  }

  setField(name: string, value: string): void {
    if (this.draft === null) return;
    this.draft.values[name] = value;
    this.formErrors = Object.fromEntries(Object.entries(this.formErrors).filter(([k]) => k !== name));
  }

  /** Steps that offer options are answered by choosing, not by approve or deny. */
  get offersOptions(): boolean {
    return (this.detail?.shown.form?.options.length ?? 0) > 0;
  }

  /** Opens the action's own page; returns what went wrong, or null. */
  async openInBrowser(key: ActionKey): Promise<string | null> {
    try {
      const res = await this.#api.commands.openInBrowser($state.snapshot(key));
      return res.status === "ok" ? null : `${res.error.message} (${res.error.code})`;
    } catch (e) {
      return thrownError(e).message;
    }
  }

  get canDeny(): boolean {
    return this.reason.trim() !== "";
  }

  /** Approve or deny the snapshot on screen. */
  async decide(verdict: Verdict): Promise<void> {
    const detail = this.detail;
    if (detail === null || this.deciding !== null || this.decided) return;
    if (verdict === "deny" && !this.canDeny) return;
    const form = detail.shown.form ?? null;
    let answer = null;
    if (form !== null && this.draft !== null) {
      const checked = answerFor(form, this.draft, verdict);
      this.formErrors = checked.errors;
      if (hasErrors(checked)) return;
      answer = checked.answer;
    }
    const key = detail.key;
    this.deciding = verdict;
    this.result = null;
    this.refusal = null;
    let res;
    try {
      // Plain data over IPC, not the reactive proxies the view holds.
      res = await this.#api.commands.decide({
        action: $state.snapshot(key),
        verdict,
        reason: this.reason.trim(),
        seen_snapshot_hash: detail.shown.snapshot_hash,
        ...(answer === null ? {} : { answer }),
      });
    } catch (e) {
      res = { status: "error" as const, error: thrownError(e) };
    }
    this.deciding = null;
    if (!sameKey(key, this.selected) || this.detail !== detail) return;
    if (res.status === "ok") {
      this.result = describeReport(res.data);
      this.decided = true;
      this.reason = "";
    } else if (res.error.code === STALE_CODE) {
      this.refusal = { message: res.error.message, changes: res.error.changes };
      const current = res.error.current;
      if (current !== null) {
        // Ask again on what is true now: the next decision binds this snapshot.
        detail.shown = current;
        detail.latest = current;
        this.#showForm(current);
      }
    } else {
      this.result = describeError(res.error);
    }
    void this.refreshInbox();
    void this.refreshDetail();
  }

  // --- The inbox as a list to work through --------------------------------------

  inboxFilter = $state<InboxFilter>({ ...NO_FILTER });
  sortBy = $state<SortBy>("time_left");
  groupBy = $state<GroupBy>("none");
  /** Rows as drawn (filtered, sorted, grouped); the list shows a window of them. */
  items = $derived(arrange(this.inbox?.actions ?? [], this.inboxFilter, this.sortBy, this.groupBy));
  /** The row the keyboard is on (index into `items`). */
  cursor = $state(0);
  /** Keys (`backend/id`) ticked for denying several at once. */
  checked = new SvelteSet<string>();
  /** The last bulk deny: how far it got and what was refused. */
  bulk = $state<{ total: number; done: number; denied: number; failed: { key: string; message: string }[] } | null>(null);

  toggleChecked(key: string): void {
    if (this.checked.has(key)) this.checked.delete(key);
    else this.checked.add(key);
  }

  /** Forget ticked rows that are no longer pending (decided here or elsewhere). */
  pruneChecked(): void {
    const keep = prune(this.checked, this.inbox?.actions ?? []);
    for (const k of [...this.checked]) if (!keep.has(k)) this.checked.delete(k);
  }

  /**
   * Denies every ticked action with one reason. Each is its own decision: bound to the
   * snapshot the list showed for it, re-checked, signed and delivered on its own, so a
   * request that changed since is refused alone and the rest still go through.
   */
  async denyChecked(reason: string): Promise<void> {
    const why = reason.trim();
    if (why === "" || this.bulk?.done !== this.bulk?.total) return;
    const rows = (this.inbox?.actions ?? []).filter((a) => this.checked.has(`${a.key.backend}/${a.key.external_id}`));
    this.bulk = { total: rows.length, done: 0, denied: 0, failed: [] };
    for (const a of rows) {
      const name = `${a.key.backend}/${a.key.external_id}`;
      let res;
      try {
        res = await this.#api.commands.decide({
          action: $state.snapshot(a.key),
          verdict: "deny",
          reason: why,
          seen_snapshot_hash: a.snapshot_hash,
        });
      } catch (e) {
        res = { status: "error" as const, error: thrownError(e) };
      }
      if (res.status === "ok") {
        this.bulk.denied += 1;
        this.checked.delete(name);
      } else {
        this.bulk.failed.push({ key: name, message: `${res.error.message} (${res.error.code})` });
      }
      this.bulk.done += 1;
    }
    await this.refreshInbox();
    this.pruneChecked();
  }

  /** Moves the keyboard cursor to the next (or previous) action row. */
  moveCursor(step: 1 | -1): void {
    const items = this.items;
    if (items.length === 0) return;
    let i = Math.min(Math.max(this.cursor, 0), items.length - 1);
    if (items[i]?.type !== "action") step = 1;
    for (let j = i + step; j >= 0 && j < items.length; j += step) {
      if (items[j]?.type === "action") {
        i = j;
        break;
      }
    }
    this.cursor = i;
  }

  /** Opens the action under the keyboard cursor. */
  openCursor(): void {
    const item = this.items[this.cursor];
    if (item?.type === "action") void this.select(item.action.key);
  }

  /** The key under the cursor as `backend/id`, if it is an action. */
  get cursorKey(): string | null {
    const item = this.items[this.cursor];
    return item?.type === "action" ? item.id : null;
  }

  #resetDecision(): void {
    this.reason = "";
    this.armed = null;
    this.deciding = null;
    this.result = null;
    this.refusal = null;
    this.decided = false;
    this.draft = null;
    this.formErrors = {};
    this.#draftForm = "";
  }
}
