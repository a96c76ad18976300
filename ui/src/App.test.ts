import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it } from "vitest";
import App from "./App.svelte";
import type { DecisionInput } from "./bindings.ts";
import { action, backend, err, FakeShell, key, ok, report, waitFor } from "./test/fixtures.ts";

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
  await waitFor(() => { expect(q(tid("app-ready"))).not.toBeNull(); });
}

async function open(id: string): Promise<void> {
  const row = q(`${tid("inbox-row")}[data-key="prod/${id}"]`);
  if (row === null) throw new Error(`no row ${id}`);
  row.click();
  await waitFor(() => { expect(q(tid("detail"))).not.toBeNull(); });
}

function type(text: string): void {
  const area = q(tid("reason")) as HTMLTextAreaElement;
  area.value = text;
  area.dispatchEvent(new Event("input", { bubbles: true }));
  flushSync();
}

function decideCalls(shell: FakeShell): DecisionInput[] {
  return shell.calls.filter((c) => c.name === "decide").map((c) => c.arg as DecisionInput);
}

describe("inbox", () => {
  it("lists pending actions with their keys, approvals and countdown, then marks ready", async () => {
    const shell = new FakeShell();
    shell.actions = [
      action("a-1", { expires_at: new Date(Date.now() + 3 * 60_000).toISOString() }),
      action("a-2", { approvals_required: 2, reviews: [{ reviewer: "sam", verdict: "approved", at: new Date().toISOString() }] }),
    ];
    await start(shell);
    const rows = qa(tid("inbox-row"));
    expect(rows.map((r) => r.dataset["key"])).toEqual(["prod/a-1", "prod/a-2"]);
    expect(rows[1]?.textContent).toContain("1/2");
    expect(rows[0]?.querySelector(".left")?.classList.contains("urgent")).toBe(true);
    expect(rows[1]?.querySelector(".left")?.classList.contains("urgent")).toBe(false);
    expect(q(tid("embedded-badge"))?.textContent).toBe("embedded demo");
    expect(q(tid("approver"))?.textContent).toBe("me@example.com");
  });

  it("re-reads the inbox on changed events, coalescing a burst into one read", async () => {
    const shell = new FakeShell();
    shell.actions = [action("first")];
    await start(shell);
    const before = shell.count("inbox");
    shell.actions = [action("first"), action("late")];
    for (let i = 0; i < 20; i++) shell.emit({ type: "backend", name: "prod" });
    await waitFor(() => { expect(q(`${tid("inbox-row")}[data-key="prod/late"]`)).not.toBeNull(); });
    await new Promise((r) => setTimeout(r, 200));
    expect(shell.count("inbox") - before).toBe(1);
  });

  it("shows a banner for a degraded backend with its error and retry", async () => {
    const shell = new FakeShell();
    shell.backends = [
      backend("prod"),
      backend("jenkins", {
        status: "degraded",
        last_error: "connection refused <script>",
        next_retry_at: new Date(Date.now() + 30_000).toISOString(),
      }),
    ];
    await start(shell);
    const banners = qa(tid("backend-banner"));
    expect(banners).toHaveLength(1);
    expect(banners[0]?.textContent).toContain("jenkins");
    expect(banners[0]?.textContent).toContain("connection refused <script>");
    expect(banners[0]?.textContent).toMatch(/retrying in (29|30)s/);
  });

  it("shows the engine's error full-window when it could not start", async () => {
    const shell = new FakeShell();
    shell.inboxResult = () => err("engine", "cannot open the store: disk full");
    await start(shell);
    expect(q(tid("fatal-error"))?.textContent).toContain("cannot open the store: disk full");
    expect(q(tid("inbox-row"))).toBeNull();
  });

  it("rows are focusable buttons (Enter opens natively); arrow keys move between them", async () => {
    const shell = new FakeShell();
    shell.actions = [action("k-1"), action("k-2")];
    await start(shell);
    const rows = qa(tid("inbox-row"));
    expect(rows.every((r) => r.tagName === "BUTTON")).toBe(true);
    rows[0]?.focus();
    rows[0]?.dispatchEvent(new KeyboardEvent("keydown", { key: "ArrowDown", bubbles: true }));
    await waitFor(() => {
      expect(document.activeElement?.getAttribute("data-key")).toBe("prod/k-2");
    });
    qa(tid("inbox-row"))[1]?.click();
    await waitFor(() => { expect(q(tid("detail"))?.dataset["key"]).toBe("prod/k-2"); });
    expect(qa(tid("inbox-row"))[1]?.getAttribute("aria-current")).toBe("true");
  });
});

describe("detail", () => {
  it("opens with openAction and shows fields, details and the timeline", async () => {
    const shell = new FakeShell();
    shell.actions = [action("d-1", { details: [{ key: "image", value: "registry/x:1" }], web_url: "https://ci/x" })];
    await start(shell);
    await open("d-1");
    expect(shell.count("openAction")).toBe(1);
    expect(q(tid("detail-title"))?.textContent).toBe("Request d-1");
    const fields = qa(tid("detail-field")).map((f) => f.textContent).join("\n");
    expect(fields).toContain("registry/x:1");
    expect(fields).toContain("dana@example.com");
    expect(qa(tid("timeline-event")).map((e) => e.dataset["kind"])).toEqual(["requested", "viewed"]);
    expect(q(tid("timeline-event"))?.textContent).toMatch(/\d\d:\d\d:\d\d/);
    expect(q(tid("timeline-event"))?.textContent).toContain("1 min ago");
    const openBtn = qa("button").find((b) => b.textContent.includes("Open in prod"));
    openBtn?.click();
    await waitFor(() => { expect(shell.count("openInBrowser")).toBe(1); });
  });

  it("renders hostile text as text only", async () => {
    const TITLE = `<img src=x onerror="document.title='pwned'"><script>alert(1)</script>`;
    const VALUE = "<b>bold</b><script>alert(1)</script>";
    const shell = new FakeShell();
    shell.actions = [action("evil", { title: TITLE, summary: TITLE, details: [{ key: "<i>k</i>", value: VALUE }] })];
    await start(shell);
    expect(q(tid("inbox-row"))?.textContent).toContain(TITLE);
    await open("evil");
    expect(q(tid("detail-title"))?.textContent).toBe(TITLE);
    expect(qa(`${tid("detail-field")} *`).some((e) => e.textContent.trim() === VALUE)).toBe(true);
    expect(document.querySelectorAll("img, script, b, i")).toHaveLength(0);
  });

  it("refreshes with actionDetail on a change and offers, never swaps, a new snapshot", async () => {
    const shell = new FakeShell();
    shell.actions = [action("s-1")];
    await start(shell);
    await open("s-1");
    shell.actions = [action("s-1", { title: "Changed title", snapshot_hash: "hash-s-1-2" })];
    shell.timeline = [...shell.timeline, { at: new Date().toISOString(), source: "backend", kind: "updated", actor: null, text: "edited" }];
    shell.emit({ type: "action", key: key("s-1"), change: "updated", new_events: 1 });
    await waitFor(() => { expect(q(tid("snapshot-changed"))).not.toBeNull(); });
    expect(shell.count("openAction")).toBe(1);
    expect(shell.count("actionDetail")).toBe(1);
    // The timeline is live, the fields are not.
    expect(qa(tid("timeline-event")).map((e) => e.dataset["kind"])).toContain("updated");
    expect(q(tid("detail-title"))?.textContent).toBe("Request s-1");

    // A decision now binds what is displayed.
    q(tid("approve"))?.click();
    await waitFor(() => { expect(decideCalls(shell)).toHaveLength(1); });
    expect(decideCalls(shell)[0]?.seen_snapshot_hash).toBe("hash-s-1-1");
  });

  it("swaps in the latest snapshot on Show latest", async () => {
    const shell = new FakeShell();
    shell.actions = [action("s-2")];
    await start(shell);
    await open("s-2");
    shell.actions = [action("s-2", { title: "New title", snapshot_hash: "hash-s-2-2" })];
    shell.emit({ type: "timeline", key: key("s-2") });
    await waitFor(() => { expect(q(tid("snapshot-changed"))).not.toBeNull(); });
    q(tid("show-latest"))?.click();
    flushSync();
    expect(q(tid("detail-title"))?.textContent).toBe("New title");
    expect(q(tid("snapshot-changed"))).toBeNull();
    q(tid("approve"))?.click();
    await waitFor(() => { expect(decideCalls(shell)).toHaveLength(1); });
    expect(decideCalls(shell)[0]?.seen_snapshot_hash).toBe("hash-s-2-2");
  });

  it("ignores changes to other actions", async () => {
    const shell = new FakeShell();
    shell.actions = [action("x-1"), action("x-2")];
    await start(shell);
    await open("x-1");
    shell.emit({ type: "timeline", key: key("x-2") });
    await new Promise((r) => setTimeout(r, 100));
    expect(shell.count("actionDetail")).toBe(0);
  });
});

describe("decide", () => {
  it("needs a reason to deny, and says so", async () => {
    const shell = new FakeShell();
    shell.actions = [action("r-1")];
    await start(shell);
    await open("r-1");
    const deny = q(tid("deny")) as HTMLButtonElement;
    expect(deny.disabled).toBe(true);
    expect(q("#decide-hint")?.textContent).toContain("Deny needs a reason");
    type("   ");
    expect(deny.disabled).toBe(true);
    type("Not during the freeze");
    expect(deny.disabled).toBe(false);
    deny.click();
    await waitFor(() => { expect(decideCalls(shell)).toHaveLength(1); });
    expect(decideCalls(shell)[0]).toEqual({
      action: key("r-1"),
      verdict: "deny",
      reason: "Not during the freeze",
      seen_snapshot_hash: "hash-r-1-1",
    });
  });

  it("shows the delivery state, disables buttons in flight and re-reads the inbox", async () => {
    const shell = new FakeShell();
    shell.actions = [action("ok-1")];
    let release: (() => void) | null = null;
    const gate = new Promise<void>((r) => { release = r; });
    const api = shell.api();
    const decide = api.commands.decide;
    api.commands.decide = async (input) => {
      await gate;
      return decide(input);
    };
    shell.decideResult = (input) => ok(report(input, { state: "queued" }, { offline: true, queued_because: "prod unreachable" }));
    app = mount(App, { target: document.body, props: { api } });
    await waitFor(() => { expect(q(tid("app-ready"))).not.toBeNull(); });
    await open("ok-1");
    type("FIN-2231");
    q(tid("approve"))?.click();
    flushSync();
    expect((q(tid("approve")) as HTMLButtonElement).disabled).toBe(true);
    expect((q(tid("deny")) as HTMLButtonElement).disabled).toBe(true);
    shell.actions = [];
    (release as (() => void) | null)?.();
    await waitFor(() => { expect(q(tid("decision-result"))).not.toBeNull(); });
    const result = q(tid("decision-result"));
    expect(result?.dataset["outcome"]).toBe("queued");
    expect(result?.textContent).toContain("offline");
    expect(result?.textContent).toContain("prod unreachable");
    await waitFor(() => { expect(q(tid("inbox-row"))).toBeNull(); });
  });

  it("on a stale refusal lists the changed fields, shows the current snapshot and binds it next", async () => {
    const shell = new FakeShell();
    shell.actions = [action("two", { approvals_required: 2 })];
    await start(shell);
    await open("two");
    const current = action("two", {
      approvals_required: 2,
      snapshot_hash: "hash-two-2",
      reviews: [{ reviewer: "sam@example.com", verdict: "approved", at: new Date().toISOString(), comment: "<b>lgtm</b>" }],
    });
    shell.decideResult = (input) =>
      input.seen_snapshot_hash === "hash-two-1"
        ? err("changed", "the request changed since you saw it", {
            changes: [{ field: "reviews", before: "[]", after: '[{"reviewer":"sam@example.com"}]' }],
            current,
          })
        : ok(report(input, { state: "delivered" }));
    type("Looks fine");
    q(tid("approve"))?.click();
    await waitFor(() => { expect(q(tid("stale-refusal"))).not.toBeNull(); });
    const changed = qa(`${tid("stale-refusal")} ${tid("changed-field")}`);
    expect(changed.map((c) => c.dataset["field"])).toEqual(["reviews"]);
    expect(changed[0]?.textContent).toContain("[]");
    expect(changed[0]?.textContent).toContain('"reviewer": "sam@example.com"');
    expect(q(tid("decision-result"))).toBeNull();
    // The current snapshot is on screen: its review (comment as text) and approvals.
    expect(q(tid("review"))?.textContent).toContain("<b>lgtm</b>");
    expect(q('[data-field="approvals_required"]')?.textContent).toContain("1/2");
    // Asked again: the next approval binds the new hash and goes through.
    q(tid("approve"))?.click();
    await waitFor(() => { expect(q(tid("decision-result"))?.dataset["outcome"]).toBe("delivered"); });
    expect(decideCalls(shell).map((d) => d.seen_snapshot_hash)).toEqual(["hash-two-1", "hash-two-2"]);
    expect(q(tid("stale-refusal"))).toBeNull();
  });

  it("shows other refusals with their code in the result area", async () => {
    const shell = new FakeShell();
    shell.actions = [action("e-1")];
    shell.decideResult = () => err("already_decided", "someone already decided this");
    await start(shell);
    await open("e-1");
    q(tid("approve"))?.click();
    await waitFor(() => { expect(q(tid("decision-result"))).not.toBeNull(); });
    const result = q(tid("decision-result"));
    expect(result?.dataset["outcome"]).toBe("error");
    expect(result?.dataset["code"]).toBe("already_decided");
    expect(result?.textContent).toContain("someone already decided this");
    expect(result?.textContent).toContain("already_decided");
  });
});

describe("forms", () => {
  const form = {
    options: ["Deploy EU", "Deploy US", "Skip"],
    multiple: false,
    default_options: ["Skip"],
    fields: [
      { name: "replicas", label: "Replicas", description: "How many <b>pods</b>", field_type: "integer" as const, choices: [], required: true },
      { name: "dry_run", label: "Dry run", description: "", field_type: "boolean" as const, choices: [], required: false, default: false },
    ],
  };

  it("a step with options is answered by choosing: options and typed fields go with the decision", async () => {
    const shell = new FakeShell();
    shell.actions = [action("h-1", { kind: "hitl_step", form })];
    await start(shell);
    await open("h-1");
    expect(q(tid("approve"))).toBeNull();
    expect(q(tid("deny"))).toBeNull();
    const options = qa(tid("form-option"));
    expect(options.map((o) => o.dataset["option"])).toEqual(["Deploy EU", "Deploy US", "Skip"]);
    const input = (i: number): HTMLInputElement | null => options[i]?.querySelector("input") ?? null;
    expect(input(2)?.checked).toBe(true);
    // Backend text stays text.
    expect(q(`${tid("form-field")}[data-field="replicas"] .desc`)?.textContent).toBe("How many <b>pods</b>");
    expect(q(`${tid("form-field")} b`)).toBeNull();

    input(1)?.click();
    const replicas = q("#form-field-replicas") as HTMLInputElement;
    replicas.value = "three";
    replicas.dispatchEvent(new Event("input", { bubbles: true }));
    flushSync();
    q(tid("choose"))?.click();
    flushSync();
    expect(q(`${tid("form-field")}[data-field="replicas"] .error`)?.textContent).toBe("Must be a whole number.");
    expect(decideCalls(shell)).toHaveLength(0);

    replicas.value = "3";
    replicas.dispatchEvent(new Event("input", { bubbles: true }));
    (q("#form-field-dry_run") as HTMLInputElement).click();
    flushSync();
    q(tid("choose"))?.click();
    await waitFor(() => { expect(decideCalls(shell)).toHaveLength(1); });
    expect(decideCalls(shell)[0]).toEqual({
      action: key("h-1"),
      verdict: "choose",
      reason: "",
      seen_snapshot_hash: "hash-h-1-1",
      answer: { options: ["Deploy US"], params: { replicas: 3, dry_run: true } },
    });
  });

  it("a form with fields only keeps approve and deny, and sends the fields with them", async () => {
    const shell = new FakeShell();
    shell.actions = [action("p-1", { kind: "flow_run", form: { ...form, options: [], default_options: [] } })];
    await start(shell);
    await open("p-1");
    expect(q(tid("choose"))).toBeNull();
    const replicas = q("#form-field-replicas") as HTMLInputElement;
    replicas.value = "5";
    replicas.dispatchEvent(new Event("input", { bubbles: true }));
    flushSync();
    q(tid("approve"))?.click();
    await waitFor(() => { expect(decideCalls(shell)).toHaveLength(1); });
    expect(decideCalls(shell)[0]?.answer).toEqual({ options: [], params: { replicas: 5, dry_run: false } });
  });
});
