import { describe, expect, it } from "vitest";
import type { Change } from "../bindings.ts";
import { approvalsText, changeKey, keyString, kindLabel, readableJson, sameKey, touches } from "./model.ts";

const k = (id: string, backend = "prod") => ({ backend, external_id: id });

describe("keys", () => {
  it("prints backend/external_id", () => {
    expect(keyString(k("a-1"))).toBe("prod/a-1");
  });
  it("compares by both parts", () => {
    expect(sameKey(k("a"), k("a"))).toBe(true);
    expect(sameKey(k("a"), k("a", "other"))).toBe(false);
    expect(sameKey(null, k("a"))).toBe(false);
  });
});

describe("approvalsText", () => {
  it("counts approvals only, out of the required number", () => {
    const reviews = [
      { reviewer: "a", verdict: "approved" as const, at: "" },
      { reviewer: "b", verdict: "denied" as const, at: "" },
    ];
    expect(approvalsText(reviews, 2)).toBe("1/2");
    expect(approvalsText([], 0)).toBe("0/1");
  });
});

describe("changes", () => {
  const changes: Change[] = [
    { type: "backend", name: "prod" },
    { type: "timeline", key: k("x") },
  ];
  it("knows which action a change is about", () => {
    expect(changeKey({ type: "backend", name: "prod" })).toBeNull();
    expect(changeKey({ type: "decision", key: k("y"), idempotency_key: "i", state: "queued" })).toEqual(k("y"));
  });
  it("tells whether a batch touches the open action", () => {
    expect(touches(changes, k("x"))).toBe(true);
    expect(touches(changes, k("y"))).toBe(false);
    expect(touches(changes, null)).toBe(false);
  });
});

describe("readableJson", () => {
  it("indents objects and arrays, keeps scalars and non-JSON as sent", () => {
    expect(readableJson('[{"a":1}]')).toBe('[\n  {\n    "a": 1\n  }\n]');
    expect(readableJson('"<b>x</b>"')).toBe('"<b>x</b>"');
    expect(readableJson("null")).toBe("null");
    expect(readableJson("not json {")).toBe("not json {");
  });
});

describe("kindLabel", () => {
  it("labels known kinds and keeps unknown ones readable", () => {
    expect(kindLabel("agent_tool_call")).toBe("Agent tool call");
    expect(kindLabel("space_launch")).toBe("space launch");
  });
});
