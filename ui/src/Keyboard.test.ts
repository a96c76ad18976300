/** The console driven from the keyboard, and the inbox's list tools (filters, bulk deny). */
import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it } from "vitest";
import App from "./App.svelte";
import type { DecisionInput } from "./bindings.ts";
import { action, backend, err, FakeShell, key, ok, waitFor } from "./test/fixtures.ts";

let app: ReturnType<typeof mount> | null = null;

afterEach(() => {
  if (app !== null) void unmount(app);
  app = null;
  document.body.replaceChildren();
});

const q = (sel: string): HTMLElement | null => document.querySelector<HTMLElement>(sel);
const qa = (sel: string): HTMLElement[] => Array.from(document.querySelectorAll<HTMLElement>(sel));
const tid = (id: string): string => `[data-testid="${id}"]`;

async function start(shell: FakeShell): Promise<void> {
  app = mount(App, { target: document.body, props: { api: shell.api() } });
  await waitFor(() => {
    expect(q(tid("app-ready"))).not.toBeNull();
  });
}

function press(k: string, target: EventTarget = document.activeElement ?? document.body): void {
  target.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
  flushSync();
}

function decides(shell: FakeShell): DecisionInput[] {
  return shell.calls.filter((c) => c.name === "decide").map((c) => c.arg as DecisionInput);
}

describe("keyboard", () => {
  it("j, Enter, a: approves the request under the cursor, bound to its snapshot", async () => {
    const shell = new FakeShell();
    shell.actions = [action("k-1"), action("k-2", { expires_at: new Date(Date.now() + 3_600_000).toISOString() })];
    await start(shell);
    qa(tid("inbox-row"))[0]?.focus();
    press("j");
    await waitFor(() => {
      expect(document.activeElement?.getAttribute("data-key")).toBe("prod/k-2");
    });
    press("Enter", document.body);
    await waitFor(() => {
      expect(q(tid("detail"))?.dataset["key"]).toBe("prod/k-2");
    });
    press("a", document.body);
    await waitFor(() => {
      expect(decides(shell)).toHaveLength(1);
    });
    expect(decides(shell)[0]).toMatchObject({ verdict: "approve", action: key("k-2"), seen_snapshot_hash: "hash-k-2-1" });
  });

  it("d puts focus on the reason; Enter there denies with it; typing never triggers shortcuts", async () => {
    const shell = new FakeShell();
    shell.actions = [action("k-1")];
    await start(shell);
    qa(tid("inbox-row"))[0]?.click();
    await waitFor(() => {
      expect(q(tid("detail"))).not.toBeNull();
    });
    press("d", document.body);
    const reason = q(tid("reason")) as HTMLTextAreaElement;
    expect(document.activeElement).toBe(reason);
    reason.value = "not during the freeze";
    reason.dispatchEvent(new Event("input", { bubbles: true }));
    press("a", reason); // a letter typed into the reason, not "approve"
    expect(decides(shell)).toHaveLength(0);
    press("Enter", reason);
    await waitFor(() => {
      expect(decides(shell)).toHaveLength(1);
    });
    expect(decides(shell)[0]).toMatchObject({ verdict: "deny", reason: "not during the freeze" });
  });

  it("g h / g a / g s / g i switch views; ? lists the shortcuts and Esc closes them", async () => {
    const shell = new FakeShell();
    await start(shell);
    press("g", document.body);
    press("h", document.body);
    expect(q(tid("history-view"))).not.toBeNull();
    press("g", document.body);
    press("a", document.body);
    expect(q(tid("audit-view"))).not.toBeNull();
    press("g", document.body);
    press("s", document.body);
    expect(q(tid("settings-view"))).not.toBeNull();
    press("g", document.body);
    press("i", document.body);
    expect(q(tid("inbox-list")) ?? q(".inbox")).not.toBeNull();
    press("?", document.body);
    expect(q(tid("shortcuts"))?.textContent).toContain("g h");
    press("Escape", document.body);
    expect(q(tid("shortcuts"))).toBeNull();
  });

  it("/ focuses the inbox filter", async () => {
    const shell = new FakeShell();
    shell.actions = [action("k-1")];
    await start(shell);
    press("/", document.body);
    expect(document.activeElement).toBe(q(tid("inbox-filter")));
  });
});

describe("inbox tools", () => {
  it("filters by backend chip with a count per backend", async () => {
    const shell = new FakeShell();
    shell.backends = [backend("prod"), backend("gh")];
    shell.actions = [action("p-1"), action("g-1", { key: key("g-1", "gh") }), action("g-2", { key: key("g-2", "gh") })];
    await start(shell);
    const chips = qa(tid("backend-chip")).map((c) => c.textContent.replace(/\s+/g, " ").trim());
    expect(chips).toEqual(["gh 2", "prod 1"]);
    qa(tid("backend-chip"))[0]?.click();
    flushSync();
    expect(qa(tid("inbox-row")).map((r) => r.dataset["key"])).toEqual(["gh/g-1", "gh/g-2"]);
    expect(q(tid("inbox-count"))?.textContent).toBe("2 of 3");
  });

  it("keeps only a window of rows in the DOM for 10,000 pending requests", async () => {
    const shell = new FakeShell();
    shell.actions = Array.from({ length: 10_000 }, (_, i) => action(`n-${String(i)}`));
    await start(shell);
    expect(q(tid("inbox-count"))?.textContent).toBe("10000");
    const drawn = qa(tid("inbox-row")).length;
    expect(drawn).toBeGreaterThan(0);
    expect(drawn).toBeLessThan(100);
  });

  it("denies several with one reason: one decision each, each bound to its own snapshot", async () => {
    const shell = new FakeShell();
    shell.actions = [action("b-1"), action("b-2"), action("b-3")];
    shell.decideResult = (input) =>
      input.action.external_id === "b-2" ? err("snapshot_changed", "the request changed") : ok({
        decision: { id: 1 } as never,
        delivery: { state: "delivered" },
      } as never);
    await start(shell);
    for (const k of ["prod/b-1", "prod/b-2"]) {
      (q(`${tid("row-check")}[data-key="${k}"]`) as HTMLInputElement).click();
    }
    flushSync();
    expect(q(tid("checked-count"))?.textContent).toBe("2 selected");
    const reason = q(tid("bulk-reason")) as HTMLInputElement;
    reason.value = "change freeze";
    reason.dispatchEvent(new Event("input", { bubbles: true }));
    flushSync();
    (q(tid("bulk-deny")) as HTMLButtonElement).click();
    await waitFor(() => {
      expect(q(tid("bulk-result"))?.textContent).toContain("Denied 1 of 2");
    });
    expect(decides(shell).map((d) => [d.action.external_id, d.verdict, d.reason, d.seen_snapshot_hash])).toEqual([
      ["b-1", "deny", "change freeze", "hash-b-1-1"],
      ["b-2", "deny", "change freeze", "hash-b-2-1"],
    ]);
    expect(q(tid("bulk-result"))?.dataset["failed"]).toBe("1");
    expect(q(tid("bulk-result"))?.textContent).toContain("prod/b-2");
  });
});
