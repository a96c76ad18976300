import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type {
  ActionKey,
  FieldChange,
  HistoryCursor,
  HistoryPage_Serialize,
  HistoryQuery_Deserialize,
  PendingAction_Serialize,
  SnapshotVersion_Serialize,
} from "../bindings.ts";
import HistoryView from "../components/views/HistoryView.svelte";
import { action, event, FakeShell, key, ok, waitFor } from "../test/fixtures.ts";
import type { Commands } from "./api.ts";
import { ConsoleState } from "./console.svelte.ts";
import {
  DEBOUNCE_MS,
  emptyFilters,
  HistoryState,
  PAGE_SIZE,
  PREFETCH_ROWS,
  toQuery,
  visibleRange,
} from "./history.svelte.ts";

type PageRes = Awaited<ReturnType<Commands["historyPage"]>>;
const page = (data: HistoryPage_Serialize): PageRes => ok(data);

/** A history of `total` actions, newest first, answered a page at a time like the engine. */
function historyOf(total: number, word = ""): (q: HistoryQuery_Deserialize) => PageRes {
  return (q) => {
    const start = q.after ? (q.after.row ?? 0) : 0;
    const limit = q.limit ?? 100;
    const matches = (q.text ?? "") === "" || (q.text ?? "") === word;
    const end = matches ? Math.min(total, start + limit) : start;
    const actions: PendingAction_Serialize[] = [];
    for (let i = start; i < end; i++) actions.push(action(`h-${String(i)}`, { status: "approved" }));
    const next: HistoryCursor | null = end < (matches ? total : 0) ? { requested_at: "t", row: end } : null;
    return page({ actions, next });
  };
}

/** A command whose answers the test releases by hand, in any order. */
function deferred<A, T>(): { fn: (arg: A) => Promise<T>; calls: { arg: A; resolve: (v: T) => void }[] } {
  const calls: { arg: A; resolve: (v: T) => void }[] = [];
  return {
    calls,
    fn: (arg: A) =>
      new Promise<T>((resolve) => {
        calls.push({ arg, resolve });
      }),
  };
}

const pageCalls = (shell: FakeShell): HistoryQuery_Deserialize[] =>
  shell.calls.filter((c) => c.name === "historyPage").map((c) => c.arg as HistoryQuery_Deserialize);

function recordingShell(answer: (q: HistoryQuery_Deserialize) => PageRes): FakeShell {
  const shell = new FakeShell();
  shell.extra.historyPage = (q) => {
    shell.calls.push({ name: "historyPage", arg: structuredClone(q) });
    return Promise.resolve(answer(q));
  };
  return shell;
}

describe("filters → query", () => {
  it("leaves blanks out and trims words", () => {
    expect(toQuery(emptyFilters())).toEqual({ limit: PAGE_SIZE });
    const f = { ...emptyFilters(), text: "  canary  deploy ", requester: " dana@example.com " };
    expect(toQuery(f)).toEqual({ limit: PAGE_SIZE, text: "canary  deploy", requester: "dana@example.com" });
  });

  it("passes backend, status and verdict as chosen, and the cursor to continue after", () => {
    const f = { ...emptyFilters(), backend: "prod", status: "denied" as const, verdict: "deny" as const };
    const after = { requested_at: "2026-11-25T07:00:00.000Z", row: 42 };
    expect(toQuery(f, after)).toEqual({ limit: PAGE_SIZE, backend: "prod", status: "denied", verdict: "deny", after });
  });

  it("turns a local date range into whole days, the last day included", () => {
    // Vitest runs in UTC (vite.config.ts), so local midnight is UTC midnight.
    const f = { ...emptyFilters(), from: "2026-11-01", to: "2026-11-30" };
    const q = toQuery(f);
    expect(q.from).toBe("2026-11-01T00:00:00.000Z");
    expect(q.to).toBe("2026-12-01T00:00:00.000Z");
    expect(toQuery({ ...emptyFilters(), from: "not a date" }).from).toBeUndefined();
  });
});

describe("virtual window", () => {
  it("renders only the rows in view (plus a few), however many there are", () => {
    const r = visibleRange(52 * 500_000, 520, 52, 1_000_000, 6);
    expect(r.start).toBe(500_000 - 6);
    expect(r.end).toBe(500_000 + 11 + 6);
  });

  it("stays within the rows there are", () => {
    expect(visibleRange(0, 520, 52, 3)).toEqual({ start: 0, end: 3 });
    expect(visibleRange(-40, 520, 52, 0)).toEqual({ start: 0, end: 0 });
    expect(visibleRange(52 * 100, 520, 52, 50)).toEqual({ start: 50, end: 50 });
  });
});

describe("search", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("typing searches once, after a pause, with the last words", async () => {
    vi.useFakeTimers();
    const shell = recordingShell(historyOf(5, "can"));
    const h = new HistoryState(shell.api());
    for (const text of ["c", "ca", "can"]) {
      h.filters.text = text;
      h.typed();
      vi.advanceTimersByTime(DEBOUNCE_MS - 1);
    }
    expect(pageCalls(shell)).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(pageCalls(shell).map((q) => q.text)).toEqual(["can"]);
    await vi.runAllTimersAsync();
    expect(h.rows).toHaveLength(5);
  });

  it("Enter searches at once and the pending typed search does not run after it", async () => {
    vi.useFakeTimers();
    const shell = recordingShell(historyOf(5));
    const h = new HistoryState(shell.api());
    h.filters.text = "canary";
    h.typed();
    await h.searchNow();
    expect(pageCalls(shell).map((q) => q.text)).toEqual(["canary"]);
    vi.advanceTimersByTime(DEBOUNCE_MS * 4);
    expect(pageCalls(shell)).toHaveLength(1);
  });

  it("an older search answering late never replaces a newer one", async () => {
    const d = deferred<HistoryQuery_Deserialize, PageRes>();
    const shell = new FakeShell();
    shell.extra.historyPage = d.fn;
    const h = new HistoryState(shell.api());
    h.filters.text = "old";
    const first = h.searchNow();
    h.filters.text = "new";
    const second = h.searchNow();
    expect(d.calls.map((c) => c.arg.text)).toEqual(["old", "new"]);
    d.calls[1]?.resolve(page({ actions: [action("new-1")], next: null }));
    await second;
    d.calls[0]?.resolve(page({ actions: [action("old-1"), action("old-2")], next: null }));
    await first;
    expect(h.rows.map((a) => a.key.external_id)).toEqual(["new-1"]);
    expect(h.loading).toBe(false);
  });

  it("a further page of an earlier search is dropped when a new search began", async () => {
    const d = deferred<HistoryQuery_Deserialize, PageRes>();
    const shell = new FakeShell();
    shell.extra.historyPage = d.fn;
    const h = new HistoryState(shell.api());
    const s1 = h.searchNow();
    d.calls[0]?.resolve(historyOf(1000)(d.calls[0].arg));
    await s1;
    const more = h.loadMore();
    h.filters.text = "x";
    const s2 = h.searchNow();
    d.calls[2]?.resolve(page({ actions: [action("x-1")], next: null }));
    await s2;
    d.calls[1]?.resolve(historyOf(1000)(d.calls[1].arg));
    await more;
    expect(h.rows.map((a) => a.key.external_id)).toEqual(["x-1"]);
  });
});

describe("paging", () => {
  it("reads the next page with the cursor only near the end, one at a time, never past the last", async () => {
    const shell = recordingShell(historyOf(250));
    const h = new HistoryState(shell.api());
    await h.searchNow();
    expect(h.rows).toHaveLength(PAGE_SIZE);
    h.nearRow(10);
    expect(pageCalls(shell)).toHaveLength(1);
    h.nearRow(PAGE_SIZE - PREFETCH_ROWS);
    h.nearRow(PAGE_SIZE - 1); // while the page is being read: no second read
    await waitFor(() => {
      expect(h.rows).toHaveLength(2 * PAGE_SIZE);
    });
    expect(pageCalls(shell)).toHaveLength(2);
    expect(pageCalls(shell)[1]?.after).toEqual({ requested_at: "t", row: PAGE_SIZE });
    await h.loadMore();
    expect(h.rows).toHaveLength(250);
    expect(h.next).toBeNull();
    h.nearRow(249);
    await h.loadMore();
    expect(pageCalls(shell)).toHaveLength(3);
  });

  it("a row that moved between two pages is listed once", async () => {
    const shell = new FakeShell();
    const pages = [
      page({ actions: [action("a"), action("b")], next: { requested_at: "t", row: 2 } }),
      page({ actions: [action("b"), action("c")], next: null }),
    ];
    shell.extra.historyPage = () => Promise.resolve(pages.shift() ?? page({ actions: [], next: null }));
    const h = new HistoryState(shell.api());
    await h.searchNow();
    await h.loadMore();
    expect(h.rows.map((a) => a.key.external_id)).toEqual(["a", "b", "c"]);
  });

  it("keyboard moves read ahead too, and stop at the ends", async () => {
    const shell = recordingShell(historyOf(150));
    const h = new HistoryState(shell.api());
    await h.searchNow();
    expect(h.move(-1)).toBe(0);
    h.move(PAGE_SIZE - PREFETCH_ROWS);
    await waitFor(() => {
      expect(h.rows).toHaveLength(150);
    });
    expect(h.move(1000)).toBe(149);
  });
});

describe("detail", () => {
  const k: ActionKey = { backend: "prod", external_id: "h-1" };
  const version = (hash: string, title: string): SnapshotVersion_Serialize => {
    // The snapshot is the action without its key and hash (extra fields do not matter here).
    return { snapshot_hash: hash, first_seen_at: new Date().toISOString(), snapshot: action("h-1", { title }) };
  };

  function detailShell(versions: SnapshotVersion_Serialize[], changes: FieldChange[]): FakeShell {
    const shell = recordingShell(historyOf(3));
    shell.actions = [action("h-1"), action("h-2")];
    shell.timeline = [event("requested"), event("decided", { source: "local", text: "approved: looks fine" })];
    shell.extra.snapshotVersions = (key) => {
      shell.calls.push({ name: "snapshotVersions", arg: key });
      return Promise.resolve(ok(versions));
    };
    shell.extra.snapshotDiff = (key, before, after) => {
      shell.calls.push({ name: "snapshotDiff", arg: { key, before, after } });
      return Promise.resolve(ok(changes));
    };
    return shell;
  }

  it("reads without recording a view, and diffs the first and the last version with the engine", async () => {
    const changes = [{ field: "title", before: '"Old"', after: '"New"' }];
    const shell = detailShell([version("v1", "Old"), version("v2", "Mid"), version("v3", "New")], changes);
    const h = new HistoryState(shell.api());
    await h.open(k);
    expect(shell.count("openAction")).toBe(0);
    expect(shell.count("actionDetail")).toBe(1);
    expect(h.detail?.timeline.map((e) => e.kind)).toEqual(["requested", "decided"]);
    expect(h.detail?.versions).toHaveLength(3);
    expect(shell.calls.find((c) => c.name === "snapshotDiff")?.arg).toEqual({ key: k, before: "v1", after: "v3" });
    expect(h.diff).toEqual({ before: "v1", after: "v3", changes });
    await h.compare("v2", "v3");
    expect(h.diff?.before).toBe("v2");
  });

  it("one version: nothing to diff", async () => {
    const shell = detailShell([version("v1", "Only")], []);
    const h = new HistoryState(shell.api());
    await h.open(k);
    expect(shell.count("snapshotDiff")).toBe(0);
    expect(h.diff).toBeNull();
  });

  it("a slower earlier open never replaces the one opened after it", async () => {
    const shell = detailShell([], []);
    const d = deferred<ActionKey, ReturnType<typeof ok>>();
    shell.extra.actionDetail = d.fn as never;
    const h = new HistoryState(shell.api());
    const first = h.open(k);
    const second = h.open({ backend: "prod", external_id: "h-2" });
    d.calls[1]?.resolve(ok({ action: action("h-2"), timeline: [], decisions: [] }));
    await second;
    d.calls[0]?.resolve(ok({ action: action("h-1"), timeline: [], decisions: [] }));
    await first;
    expect(h.detail?.key.external_id).toBe("h-2");
  });
});

describe("HistoryView", () => {
  let view: ReturnType<typeof mount> | null = null;
  afterEach(() => {
    if (view !== null) void unmount(view);
    view = null;
    document.body.replaceChildren();
  });
  const qa = (sel: string): HTMLElement[] => Array.from(document.querySelectorAll<HTMLElement>(sel));

  it("puts only a window of rows in the DOM, opens one with Enter and shows its timeline and diff", async () => {
    const shell = recordingShell(historyOf(1_000_000));
    shell.actions = [action("h-0"), action("h-1")];
    shell.timeline = [event("requested"), event("decided", { source: "local" })];
    shell.extra.snapshotVersions = () =>
      Promise.resolve(
        ok([
          { snapshot_hash: "v1", first_seen_at: new Date().toISOString(), snapshot: action("h-1") },
          { snapshot_hash: "v2", first_seen_at: new Date().toISOString(), snapshot: action("h-1", { title: "B" }) },
        ]),
      );
    shell.extra.snapshotDiff = () => Promise.resolve(ok([{ field: "title", before: '"Request h-1"', after: '"B"' }]));
    const c = new ConsoleState(shell.api());
    view = mount(HistoryView, { target: document.body, props: { c } });
    await waitFor(() => {
      expect(qa('[data-testid="history-row"]').length).toBeGreaterThan(0);
    });
    const rows = qa('[data-testid="history-row"]');
    expect(rows.length).toBeLessThan(40);
    expect(rows[0]?.dataset["key"]).toBe("prod/h-0");
    expect(pageCalls(shell).length).toBeLessThanOrEqual(2);

    const list = document.querySelector<HTMLElement>('[data-testid="history-list"]');
    expect(list?.tabIndex).toBe(0);
    list?.dispatchEvent(new KeyboardEvent("keydown", { key: "j", bubbles: true }));
    list?.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    flushSync();
    await waitFor(() => {
      expect(document.querySelector('[data-testid="history-detail"]')?.getAttribute("data-key")).toBe("prod/h-1");
    });
    expect(qa('[data-testid="timeline-event"]').map((e) => e.dataset["kind"])).toEqual(["requested", "decided"]);
    await waitFor(() => {
      expect(qa('[data-testid="history-diff-field"]').map((e) => e.dataset["field"])).toEqual(["title"]);
    });
    expect(shell.count("openAction")).toBe(0);
  });

  it("the search box has its test id and a label; Enter searches at once", async () => {
    const shell = recordingShell(historyOf(3, "canary"));
    const c = new ConsoleState(shell.api());
    view = mount(HistoryView, { target: document.body, props: { c } });
    const input = document.querySelector<HTMLInputElement>('[data-testid="history-search"]');
    expect(input?.labels?.[0]?.textContent).toBe("Search history");
    await waitFor(() => {
      expect(pageCalls(shell)).toHaveLength(1);
    });
    if (input === null) throw new Error("no search");
    input.value = "canary";
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    await waitFor(() => {
      expect(pageCalls(shell).map((q) => q.text)).toEqual([undefined, "canary"]);
    });
  });
  it("the open request follows the engine's changes (a new timeline step shows)", async () => {
    const shell = recordingShell(historyOf(3));
    shell.actions = [action("h-0"), action("h-1")];
    shell.timeline = [event("requested")];
    const c = new ConsoleState(shell.api());
    const stop = c.start();
    view = mount(HistoryView, { target: document.body, props: { c } });
    await waitFor(() => {
      expect(qa('[data-testid="history-row"]').length).toBeGreaterThan(0);
    });
    const list = document.querySelector<HTMLElement>('[data-testid="history-list"]');
    list?.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    await waitFor(() => {
      expect(qa('[data-testid="timeline-event"]').map((e) => e.dataset["kind"])).toEqual(["requested"]);
    });
    const opened = shell.count("actionDetail");
    shell.timeline = [event("requested"), event("expired", { source: "backend" })];
    shell.emit({ type: "timeline", key: key("h-0") });
    await waitFor(() => {
      expect(qa('[data-testid="timeline-event"]').map((e) => e.dataset["kind"])).toEqual(["requested", "expired"]);
    });
    expect(shell.count("actionDetail")).toBe(opened + 1);
    // A change to another request does not re-read this one.
    shell.emit({ type: "timeline", key: key("other") });
    await new Promise((r) => setTimeout(r, 400));
    expect(shell.count("actionDetail")).toBe(opened + 1);
    stop();
  });
});
