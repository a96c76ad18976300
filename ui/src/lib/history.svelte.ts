/**
 * The history view's state: the search, its filters, the rows loaded so far and the
 * action opened from them. Kept out of the components so the rules live in one place.
 *
 * Rules:
 * - Typing in the search (or the requester filter) searches after a short pause
 *   (`DEBOUNCE_MS`); Enter (`searchNow`) and every other filter search at once.
 * - Rows are read one page at a time with the engine's keyset cursor (`next`); the
 *   list asks for the next page only when it is scrolled near the end, so a history
 *   of a million actions is never read whole.
 * - Every search starts a new generation: a page (first or further) or a detail that
 *   answers after a newer search or selection began is dropped, never shown.
 * - Opening a row reads its detail without side effects (`actionDetail`: history is
 *   read-only, no "viewed" event) and the stored versions of its snapshot; "what
 *   changed" between two versions is the engine's diff (`snapshotDiff`), never
 *   recomputed here.
 */
import type {
  ActionKey,
  ActionStatus,
  ApiError_Serialize,
  Decision_Serialize,
  FieldChange,
  HistoryCursor,
  HistoryQuery_Deserialize,
  PendingAction_Serialize,
  SnapshotVersion_Serialize,
  TimelineEvent_Serialize,
  Verdict,
} from "../bindings.ts";
import type { Api } from "./api.ts";
import { keyString, sameKey } from "./model.ts";

/** Pause after the last keystroke before a typed search runs. */
export const DEBOUNCE_MS = 250;
/** Rows per page read from the engine. */
export const PAGE_SIZE = 100;
/** Ask for the next page when the last visible row is this close to the end. */
export const PREFETCH_ROWS = 40;

export const STATUSES: readonly ActionStatus[] = [
  "pending",
  "approved",
  "denied",
  "expired",
  "cancelled",
  "executed",
  "failed",
];
export const VERDICTS: readonly Verdict[] = ["approve", "deny", "choose"];

/** The filters as the form holds them: empty string means "any". */
export interface HistoryFilters {
  text: string;
  backend: string;
  status: ActionStatus | "";
  verdict: Verdict | "";
  requester: string;
  /** `YYYY-MM-DD` (a local date), inclusive. */
  from: string;
  /** `YYYY-MM-DD` (a local date), inclusive. */
  to: string;
}

export function emptyFilters(): HistoryFilters {
  return { text: "", backend: "", status: "", verdict: "", requester: "", from: "", to: "" };
}

/** Start of a local calendar day (`YYYY-MM-DD`) as an RFC 3339 UTC instant; null when not a date. */
export function localDayStart(day: string, plusDays = 0): string | null {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day.trim());
  if (m === null) return null;
  // A plain value, never mutated: local midnight of that day.
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + plusDays);
  return Number.isNaN(d.getTime()) ? null : d.toISOString();
}

/**
 * The engine query for the filters: blanks are left out, and the date range covers
 * whole local days (`to` is inclusive, so the engine's exclusive bound is the next day).
 */
export function toQuery(f: HistoryFilters, after: HistoryCursor | null = null): HistoryQuery_Deserialize {
  const q: HistoryQuery_Deserialize = { limit: PAGE_SIZE };
  const text = f.text.trim();
  if (text !== "") q.text = text;
  if (f.backend !== "") q.backend = f.backend;
  if (f.status !== "") q.status = f.status;
  if (f.verdict !== "") q.verdict = f.verdict;
  const requester = f.requester.trim();
  if (requester !== "") q.requester = requester;
  const from = localDayStart(f.from);
  if (from !== null) q.from = from;
  const to = localDayStart(f.to, 1);
  if (to !== null) q.to = to;
  if (after !== null) q.after = after;
  return q;
}

/** Rows `[start, end)` to put in the DOM for a scroll position (plus `overscan` each side). */
export function visibleRange(
  scrollTop: number,
  viewport: number,
  rowHeight: number,
  count: number,
  overscan = 6,
): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const shown = Math.ceil(Math.max(0, viewport) / rowHeight) + 1;
  const start = Math.max(0, Math.min(count, first - overscan));
  const end = Math.max(start, Math.min(count, first + shown + overscan));
  return { start, end };
}

export interface HistoryDetail {
  key: ActionKey;
  action: PendingAction_Serialize;
  timeline: TimelineEvent_Serialize[];
  decisions: Decision_Serialize[];
  /** Every stored version, oldest first. */
  versions: SnapshotVersion_Serialize[];
}

export interface HistoryDiff {
  before: string;
  after: string;
  changes: FieldChange[];
}

function thrownError(e: unknown): ApiError_Serialize {
  return { code: "ipc", message: e instanceof Error ? e.message : String(e), changes: [], current: null };
}

type Res<T> = { status: "ok"; data: T } | { status: "error"; error: ApiError_Serialize };

async function call<T>(p: () => Promise<Res<T>>): Promise<Res<T>> {
  try {
    return await p();
  } catch (e) {
    return { status: "error", error: thrownError(e) };
  }
}

export class HistoryState {
  filters = $state<HistoryFilters>(emptyFilters());
  rows = $state.raw<PendingAction_Serialize[]>([]);
  /** Where the next page starts; null when the last page was read. */
  next = $state.raw<HistoryCursor | null>(null);
  /** A page is being read (the first of a search, or a further one). */
  loading = $state(false);
  /** At least one search has answered. */
  searched = $state(false);
  error = $state<ApiError_Serialize | null>(null);
  /** How many searches have answered: the list goes back to the top on each. */
  searches = $state(0);
  /** The words of the search whose rows are shown (what they answer). */
  shownText = $state("");
  /** How long the shown search's first page took (ms). */
  tookMs = $state<number | null>(null);

  /** Keyboard position in the list (an index into `rows`). */
  active = $state(0);
  selected = $state<ActionKey | null>(null);
  detail = $state<HistoryDetail | null>(null);
  detailError = $state<ApiError_Serialize | null>(null);
  loadingDetail = $state(false);
  diff = $state<HistoryDiff | null>(null);
  diffError = $state<ApiError_Serialize | null>(null);

  readonly #api: Api;
  #gen = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #detailSeq = 0;
  #diffSeq = 0;

  constructor(api: Api) {
    this.#api = api;
  }

  /** Plain data over IPC, never the reactive proxies. */
  query(after: HistoryCursor | null = null): HistoryQuery_Deserialize {
    return toQuery($state.snapshot(this.filters), after);
  }

  /** The search text or requester was typed into: search after a pause. */
  typed(): void {
    this.#cancelTimer();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.search();
    }, DEBOUNCE_MS);
  }

  /** Enter, or a filter that is chosen rather than typed: search now. */
  searchNow(): Promise<void> {
    this.#cancelTimer();
    return this.search();
  }

  clearFilters(): Promise<void> {
    this.filters = emptyFilters();
    return this.searchNow();
  }

  /** Reads the first page for the current filters; older answers are dropped. */
  async search(): Promise<void> {
    const gen = ++this.#gen;
    this.loading = true;
    const started = performance.now();
    const query = this.query();
    const res = await call(() => this.#api.commands.historyPage(query));
    if (gen !== this.#gen) return;
    this.loading = false;
    this.searched = true;
    this.shownText = query.text ?? "";
    if (res.status === "ok") {
      this.rows = res.data.actions;
      this.next = res.data.next ?? null;
      this.error = null;
      this.tookMs = Math.round(performance.now() - started);
      this.active = 0;
      this.searches++;
    } else {
      this.rows = [];
      this.next = null;
      this.error = res.error;
    }
  }

  /** Reads the page after the last row, unless one is being read or there is none. */
  async loadMore(): Promise<void> {
    const after = this.next;
    if (this.loading || after === null) return;
    const gen = this.#gen;
    this.loading = true;
    const res = await call(() => this.#api.commands.historyPage(this.query(after)));
    if (gen !== this.#gen) return;
    this.loading = false;
    if (res.status === "ok") {
      // An action whose request time changed between two pages could come twice.
      // eslint-disable-next-line svelte/prefer-svelte-reactivity -- a local lookup, not state
      const have = new Set(this.rows.map((a) => keyString(a.key)));
      this.rows = [...this.rows, ...res.data.actions.filter((a) => !have.has(keyString(a.key)))];
      this.next = res.data.next ?? null;
      this.error = null;
    } else {
      // Keep what is shown; the next scroll (or search) tries again.
      this.error = res.error;
    }
  }

  /** Called by the list with its last visible row: reads ahead near the end. */
  nearRow(index: number): void {
    if (this.next !== null && index >= this.rows.length - PREFETCH_ROWS) void this.loadMore();
  }

  /** Moves the keyboard position; returns the new index. */
  move(step: number): number {
    if (this.rows.length === 0) return 0;
    this.active = Math.max(0, Math.min(this.rows.length - 1, this.active + step));
    this.nearRow(this.active);
    return this.active;
  }

  /** Opens the row at `index` (click, or Enter on the active row). */
  openAt(index: number): Promise<void> {
    const row = this.rows[index];
    if (row === undefined) return Promise.resolve();
    this.active = index;
    return this.open(row.key);
  }

  /** Reads an action's timeline, decisions and stored versions; a newer open wins. */
  async open(key: ActionKey): Promise<void> {
    const plain = { backend: key.backend, external_id: key.external_id };
    this.selected = plain;
    this.detailError = null;
    this.diff = null;
    this.diffError = null;
    this.loadingDetail = true;
    const seq = ++this.#detailSeq;
    const [detail, versions] = await Promise.all([
      call(() => this.#api.commands.actionDetail(plain)),
      call(() => this.#api.commands.snapshotVersions(plain)),
    ]);
    if (seq !== this.#detailSeq) return;
    this.loadingDetail = false;
    if (detail.status === "error") {
      this.detail = null;
      this.detailError = detail.error;
      return;
    }
    const list = versions.status === "ok" ? versions.data : [];
    this.detail = { key: plain, ...detail.data, versions: list };
    if (versions.status === "error") this.detailError = versions.error;
    const first = list[0];
    const last = list[list.length - 1];
    if (first !== undefined && last !== undefined && list.length > 1) {
      await this.compare(first.snapshot_hash, last.snapshot_hash);
    }
  }

  /** What changed between two stored versions of the open action (the engine's diff). */
  async compare(before: string, after: string): Promise<void> {
    const d = this.detail;
    if (d === null) return;
    const seq = ++this.#diffSeq;
    const key = { backend: d.key.backend, external_id: d.key.external_id };
    const res = await call(() => this.#api.commands.snapshotDiff(key, before, after));
    if (seq !== this.#diffSeq || this.detail !== d) return;
    if (res.status === "ok") {
      this.diff = { before, after, changes: res.data };
      this.diffError = null;
    } else {
      this.diff = null;
      this.diffError = res.error;
    }
  }

  isSelected(key: ActionKey): boolean {
    return sameKey(key, this.selected);
  }

  dispose(): void {
    this.#cancelTimer();
  }

  #cancelTimer(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
  }
}

/** One history state per shell: the search survives switching views and back. */
const states = new WeakMap<Api, HistoryState>();

export function historyFor(api: Api): HistoryState {
  let s = states.get(api);
  if (s === undefined) {
    s = new HistoryState(api);
    states.set(api, s);
  }
  return s;
}
