import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { AuditExport, AuditRange_Deserialize, ChainStatus_Serialize, KeyInfo, KeyText } from "../bindings.ts";
import AuditView from "../components/views/AuditView.svelte";
import { err, FakeShell, ok, waitFor } from "../test/fixtures.ts";
import {
  AuditState,
  COPIED_MS,
  describeExport,
  localDay,
  localDayStart,
  rangeOf,
  statusLine,
} from "./audit.svelte.ts";
import { ConsoleState } from "./console.svelte.ts";

const HEAD = "ab".repeat(32);

function chain(over: Partial<ChainStatus_Serialize> = {}): ChainStatus_Serialize {
  return {
    entries: 5,
    verified: { entries: 5, signatures: 2, head_hash: HEAD },
    broken: null,
    first_at: "2026-11-20T09:00:00Z",
    last_at: "2026-11-25T09:00:00Z",
    backends: ["prod", "staging"],
    ...over,
  };
}

function keyInfo(n: number): KeyInfo {
  return {
    public_key: `ssh-ed25519 AAAA${String(n)}`,
    fingerprint: `SHA256:key${String(n)}`,
    allowed_signers: `me@example.com namespaces="countersign-decision" ssh-ed25519 AAAA${String(n)}`,
  };
}

/** A fake shell answering the audit commands; `status` and `key` are what it reports now. */
function auditShell(): { shell: FakeShell; state: { status: ChainStatus_Serialize; key: number; ranges: AuditRange_Deserialize[]; copies: KeyText[] } } {
  const shell = new FakeShell();
  const state = { status: chain(), key: 1, ranges: [] as AuditRange_Deserialize[], copies: [] as KeyText[] };
  shell.extra = {
    auditStatus: () => {
      shell.calls.push({ name: "auditStatus" });
      return Promise.resolve(ok(structuredClone(state.status)));
    },
    keyInfo: () => {
      shell.calls.push({ name: "keyInfo" });
      return Promise.resolve(ok(keyInfo(state.key)));
    },
    rotateKey: () => {
      shell.calls.push({ name: "rotateKey" });
      state.key += 1;
      const seq = state.status.entries + 1;
      state.status = chain({ entries: seq, verified: { entries: seq, signatures: 3, head_hash: "cd".repeat(32) } });
      return Promise.resolve(ok(keyInfo(state.key)));
    },
    exportAuditCsv: (range) => {
      shell.calls.push({ name: "exportAuditCsv", arg: range });
      state.ranges.push(range);
      const excerpt = Object.keys(range).length > 0;
      const report: AuditExport = {
        path: "/tmp/out.csv",
        rows: excerpt ? 2 : 5,
        excerpt,
        chain: state.status.verified,
        verify_command: `countersign verify ${excerpt ? "--excerpt " : ""}/tmp/out.csv --allowed-signers allowed_signers`,
      };
      return Promise.resolve(ok(report));
    },
    copyKeyText: (what) => {
      shell.calls.push({ name: "copyKeyText", arg: what });
      state.copies.push(what);
      return Promise.resolve(ok(what === "fingerprint" ? keyInfo(state.key).fingerprint : keyInfo(state.key).allowed_signers));
    },
  };
  return { shell, state };
}

describe("the export range", () => {
  it("is empty (the complete chain) when nothing is picked", () => {
    expect(rangeOf({ from: "", to: "", backend: "" })).toEqual({ range: {} });
  });

  it("covers both local days whole: to is the start of the day after", () => {
    const picked = rangeOf({ from: "2026-11-01", to: "2026-11-30", backend: "prod" });
    expect(picked).toEqual({
      range: {
        from: new Date(2026, 10, 1).toISOString(),
        to: new Date(2026, 11, 1).toISOString(),
        backend: "prod",
      },
    });
  });

  it("refuses a reversed range and dates that do not exist", () => {
    expect(rangeOf({ from: "2026-11-02", to: "2026-11-01", backend: "" })).toEqual({
      error: "The first day is after the last day.",
    });
    expect("error" in rangeOf({ from: "2026-02-31", to: "", backend: "" })).toBe(true);
    expect("error" in rangeOf({ from: "", to: "yesterday", backend: "" })).toBe(true);
    // One day is a valid range.
    expect("range" in rangeOf({ from: "2026-11-01", to: "2026-11-01", backend: "" })).toBe(true);
  });

  it("round-trips local days", () => {
    expect(localDay(localDayStart("2026-03-29") ?? "")).toBe("2026-03-29");
    expect(localDayStart("2026-12-31", 1)).toBe(new Date(2027, 0, 1).toISOString());
  });
});

describe("what the view says", () => {
  it("says how far the chain verified, with the head hash", () => {
    expect(statusLine(chain())).toBe(
      `Verified up to entry 5 (head hash ${"ab".repeat(8)}…): 2 signatures checked.`,
    );
    expect(statusLine(chain({ entries: 0, verified: { entries: 0, signatures: 0, head_hash: "0".repeat(64) } }))).toMatch(
      /^No entries yet/,
    );
  });

  it("names the first broken row and what verified before it", () => {
    const broken = chain({
      verified: { entries: 2, signatures: 1, head_hash: HEAD },
      broken: { row: 3, seq: 3, code: "edited", reason: "row 3: its content was edited (entry hash does not match)" },
    });
    expect(statusLine(broken)).toBe(
      `Broken at row 3 of 5: row 3: its content was edited (entry hash does not match). Verified up to entry 2 (head hash ${"ab".repeat(8)}…).`,
    );
    const first = chain({ verified: { entries: 0, signatures: 0, head_hash: "0".repeat(64) }, broken: { row: 1, seq: 1, code: "signature", reason: "row 1: bad signature: x" } });
    expect(statusLine(first)).toMatch(/No entry before it verifies\.$/);
  });

  it("tells an excerpt from the complete chain and gives the command that checks it", () => {
    const base: AuditExport = { path: "/x.csv", rows: 2, excerpt: true, chain: chain().verified, verify_command: "countersign verify --excerpt /x.csv" };
    expect(describeExport(base)).toEqual({
      ok: true,
      text: "Exported 2 entries of the chain's 5 (an excerpt) to /x.csv. Check it with:",
      command: "countersign verify --excerpt /x.csv",
      excerpt: true,
    });
    expect(describeExport({ ...base, rows: 5, excerpt: false }).text).toBe("Exported the complete chain, 5 entries to /x.csv. Check it with:");
  });
});

describe("AuditState", () => {
  it("loads the status and the key, and re-checks only on decision events", async () => {
    const { shell } = auditShell();
    const a = new AuditState(shell.api());
    const stop = a.start();
    await waitFor(() => {
      expect(a.status?.verified.entries).toBe(5);
      expect(a.key?.fingerprint).toBe("SHA256:key1");
    });
    const before = shell.count("auditStatus");
    shell.emit({ type: "backend", name: "prod" });
    shell.emit({ type: "action", key: { backend: "prod", external_id: "1" }, change: "updated", new_events: 0 });
    await new Promise((r) => setTimeout(r, 30));
    expect(shell.count("auditStatus")).toBe(before);
    shell.emit({ type: "decision", key: { backend: "prod", external_id: "1" }, idempotency_key: "i", state: "delivered" });
    await waitFor(() => { expect(shell.count("auditStatus")).toBe(before + 1); });
    stop();
  });

  it("keeps a broken chain as a status, not an error", async () => {
    const { shell, state } = auditShell();
    state.status = chain({ broken: { row: 2, seq: 2, code: "link", reason: "row 2: it does not follow" }, verified: { entries: 1, signatures: 1, head_hash: HEAD } });
    const a = new AuditState(shell.api());
    await a.refreshStatus();
    expect(a.statusError).toBeNull();
    expect(a.status?.broken?.row).toBe(2);
  });

  it("exports what the form picks and says when the person cancelled nothing", async () => {
    const { shell, state } = auditShell();
    const a = new AuditState(shell.api());
    await a.exportCsv();
    expect(state.ranges).toEqual([{}]);
    expect(a.exported?.excerpt).toBe(false);
    expect(a.exported?.command).toBe("countersign verify /tmp/out.csv --allowed-signers allowed_signers");

    a.form = { from: "2026-11-20", to: "2026-11-25", backend: "prod" };
    await a.exportCsv();
    expect(state.ranges[1]).toEqual({
      from: new Date(2026, 10, 20).toISOString(),
      to: new Date(2026, 10, 26).toISOString(),
      backend: "prod",
    });
    expect(a.exported?.excerpt).toBe(true);
    expect(a.exported?.command).toContain("--excerpt");

    // Cancelled in the dialog: no message at all.
    shell.extra.exportAuditCsv = () => Promise.resolve(ok(null));
    await a.exportCsv();
    expect(a.exported).toBeNull();
  });

  it("does not call the shell with a bad range, and shows the engine's refusal", async () => {
    const { shell } = auditShell();
    const a = new AuditState(shell.api());
    a.form = { from: "2026-11-25", to: "2026-11-20", backend: "" };
    await a.exportCsv();
    expect(shell.count("exportAuditCsv")).toBe(0);
    expect(a.exported).toMatchObject({ ok: false, text: "The first day is after the last day." });

    a.form = { from: "", to: "", backend: "prod" };
    shell.extra.exportAuditCsv = () => Promise.resolve(err("export_empty", "no audit entries match backend `prod`: nothing to export"));
    await a.exportCsv();
    expect(a.exported).toMatchObject({ ok: false, text: "no audit entries match backend `prod`: nothing to export" });
  });

  it("re-checks the chain when an export finds it broken", async () => {
    const { shell } = auditShell();
    const a = new AuditState(shell.api());
    shell.extra.exportAuditCsv = () => Promise.resolve(err("chain_broken", "the audit chain is broken at row 2: …"));
    await a.exportCsv();
    await waitFor(() => { expect(shell.count("auditStatus")).toBe(1); });
  });

  it("shows Copied for a moment after the shell copied", async () => {
    vi.useFakeTimers();
    try {
      const { shell, state } = auditShell();
      const a = new AuditState(shell.api());
      await a.copy("allowed_signers");
      expect(state.copies).toEqual(["allowed_signers"]);
      expect(a.copied).toBe("allowed_signers");
      await a.copy("fingerprint");
      expect(a.copied).toBe("fingerprint");
      vi.advanceTimersByTime(COPIED_MS + 1);
      expect(a.copied).toBeNull();

      shell.extra.copyKeyText = () => Promise.resolve(err("clipboard", "no clipboard"));
      await a.copy("fingerprint");
      expect(a.copied).toBeNull();
      expect(a.copyError).toBe("no clipboard");
    } finally {
      vi.useRealTimers();
    }
  });

  it("rotates only after confirmation, then shows the new key and re-checks the chain", async () => {
    const { shell } = auditShell();
    const a = new AuditState(shell.api());
    await a.loadKey();
    await a.confirmRotation();
    expect(shell.count("rotateKey")).toBe(0);

    a.askRotation();
    a.cancelRotation();
    await a.confirmRotation();
    expect(shell.count("rotateKey")).toBe(0);

    a.askRotation();
    await a.confirmRotation();
    expect(shell.count("rotateKey")).toBe(1);
    expect(a.key?.fingerprint).toBe("SHA256:key2");
    expect(a.rotated).toEqual({ from: "SHA256:key1", to: "SHA256:key2" });
    expect(a.confirmingRotation).toBe(false);
    expect(a.status?.verified.entries).toBe(6);
  });

  it("keeps the dialog open with the reason when rotation fails", async () => {
    const { shell } = auditShell();
    shell.extra.rotateKey = () => Promise.resolve(err("keyring", "the keyring is locked"));
    const a = new AuditState(shell.api());
    await a.loadKey();
    a.askRotation();
    await a.confirmRotation();
    expect(a.confirmingRotation).toBe(true);
    expect(a.rotateError?.message).toBe("the keyring is locked");
    expect(a.key?.fingerprint).toBe("SHA256:key1");
  });
});

describe("AuditView", () => {
  let view: ReturnType<typeof mount> | null = null;
  afterEach(() => {
    if (view !== null) void unmount(view);
    view = null;
    document.body.replaceChildren();
  });
  const q = (sel: string): HTMLElement | null => document.querySelector<HTMLElement>(sel);
  const tid = (id: string): string => `[data-testid="${id}"]`;

  it("shows the status, the key with copy buttons, and rotates through the in-page dialog", async () => {
    const { shell } = auditShell();
    const c = new ConsoleState(shell.api());
    view = mount(AuditView, { target: document.body, props: { c } });
    await waitFor(() => {
      expect(q(tid("chain-status"))?.dataset["ok"]).toBe("true");
      expect(q(tid("key-fingerprint"))?.textContent).toBe("SHA256:key1");
    });
    expect(q(tid("chain-status"))?.dataset["verified"]).toBe("5");
    expect(q(tid("chain-status"))?.textContent).toContain("Verified up to entry 5");
    expect(q(tid("key-allowed-signers"))?.textContent).toContain('namespaces="countersign-decision"');
    expect([...document.querySelectorAll(tid("export-backend") + " option")].map((o) => o.textContent)).toEqual([
      "All backends and key rotations",
      "prod",
      "staging",
    ]);

    q(tid("copy-allowed-signers"))?.click();
    await waitFor(() => { expect(q(tid("copy-status"))?.dataset["what"]).toBe("allowed_signers"); });

    q(tid("rotate-key"))?.click();
    await waitFor(() => { expect(q(tid("rotate-confirm"))).not.toBeNull(); });
    expect(document.activeElement).toBe(q(tid("rotate-cancel")));
    expect(shell.count("rotateKey")).toBe(0);
    q(tid("rotate-confirm"))?.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape", bubbles: true }));
    flushSync();
    expect(q(tid("rotate-confirm"))).toBeNull();

    q(tid("rotate-key"))?.click();
    await waitFor(() => { expect(q(tid("rotate-confirm-yes"))).not.toBeNull(); });
    q(tid("rotate-confirm-yes"))?.click();
    await waitFor(() => {
      expect(q(tid("key-fingerprint"))?.textContent).toBe("SHA256:key2");
      expect(q(tid("chain-status"))?.dataset["verified"]).toBe("6");
    });
    expect(q(tid("rotate-result"))?.textContent).toContain("SHA256:key2");
    expect(shell.count("rotateKey")).toBe(1);
  });

  it("shows a broken chain with its row", async () => {
    const { shell, state } = auditShell();
    state.status = chain({ broken: { row: 4, seq: 4, code: "edited", reason: "row 4: its content was edited" }, verified: { entries: 3, signatures: 1, head_hash: HEAD } });
    view = mount(AuditView, { target: document.body, props: { c: new ConsoleState(shell.api()) } });
    await waitFor(() => { expect(q(tid("chain-status"))?.dataset["ok"]).toBe("false"); });
    expect(q(tid("chain-status"))?.dataset["brokenRow"]).toBe("4");
    expect(q(tid("chain-status"))?.textContent).toContain("Broken at row 4 of 5");
  });
});
