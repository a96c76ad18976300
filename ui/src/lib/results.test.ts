import { describe, expect, it } from "vitest";
import type { DecisionReport_Serialize, DeliveryState } from "../bindings.ts";
import { describeError, describeReport } from "./results.ts";

function rep(delivery: DeliveryState, over: Partial<DecisionReport_Serialize> = {}): DecisionReport_Serialize {
  return {
    decision: {
      action: { backend: "prod", external_id: "a" },
      verdict: "approve",
      reason: "",
      decided_at: "2025-11-24T14:00:00Z",
      approver: "me",
      snapshot_hash: "h",
      idempotency_key: "i",
      key_fingerprint: null,
      public_key: null,
      signature: null,
      delivery,
    },
    queued_because: null,
    offline: false,
    ...over,
  };
}

describe("describeReport", () => {
  it("delivered", () => {
    expect(describeReport(rep({ state: "delivered" }))).toMatchObject({
      outcome: "delivered",
      tone: "ok",
      headline: "Approval delivered to prod",
    });
  });
  it("queued offline, saying why", () => {
    const r = describeReport(rep({ state: "queued" }, { offline: true, queued_because: "connection refused" }));
    expect(r).toMatchObject({ outcome: "queued", tone: "pending", detail: "connection refused" });
    expect(r.headline).toContain("offline");
  });
  it("queued online", () => {
    const r = describeReport(rep({ state: "queued" }, { queued_because: "retrying: 503" }));
    expect(r.headline).not.toContain("offline");
    expect(r.detail).toBe("retrying: 503");
  });
  it("rejected with the backend's reason", () => {
    const r = describeReport(rep({ state: "rejected", reason: "requester may not self-approve" }));
    expect(r).toMatchObject({ outcome: "rejected", tone: "bad", detail: "requester may not self-approve" });
  });
  it("stale and expired", () => {
    expect(describeReport(rep({ state: "stale", current_snapshot_hash: "abc" })).detail).toContain("abc");
    expect(describeReport(rep({ state: "expired" })).outcome).toBe("expired");
  });
  it("names the verdict", () => {
    const r = rep({ state: "delivered" });
    r.decision.verdict = "deny";
    expect(describeReport(r).headline).toBe("Denial delivered to prod");
  });
});

describe("describeError", () => {
  it("keeps the code and message", () => {
    expect(describeError({ code: "expired", message: "too late", changes: [], current: null })).toMatchObject({
      outcome: "error",
      code: "expired",
      detail: "too late",
    });
  });
});
