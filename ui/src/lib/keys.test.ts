import { describe, expect, it } from "vitest";
import { G_TIMEOUT_MS, KeyReader, type KeyInput } from "./keys.ts";

const k = (key: string, over: Partial<KeyInput> = {}): KeyInput => ({
  key,
  ctrl: false,
  alt: false,
  meta: false,
  inField: false,
  onButton: false,
  ...over,
});

describe("KeyReader", () => {
  it("maps the single keys", () => {
    const r = new KeyReader();
    expect(r.read(k("j"), 0)).toEqual({ type: "move", step: 1 });
    expect(r.read(k("k"), 0)).toEqual({ type: "move", step: -1 });
    expect(r.read(k("a"), 0)).toEqual({ type: "approve" });
    expect(r.read(k("d"), 0)).toEqual({ type: "deny" });
    expect(r.read(k("r"), 0)).toEqual({ type: "reason" });
    expect(r.read(k("x"), 0)).toEqual({ type: "toggle_check" });
    expect(r.read(k("/"), 0)).toEqual({ type: "search" });
    expect(r.read(k("?"), 0)).toEqual({ type: "help" });
    expect(r.read(k("Enter"), 0)).toEqual({ type: "open" });
  });
  it("reads g-sequences within the timeout only", () => {
    const r = new KeyReader();
    expect(r.read(k("g"), 0)).toBeNull();
    expect(r.read(k("h"), 100)).toEqual({ type: "goto", view: "history" });
    expect(r.read(k("g"), 200)).toBeNull();
    expect(r.read(k("a"), 300)).toEqual({ type: "goto", view: "audit" });
    expect(r.read(k("g"), 400)).toBeNull();
    expect(r.read(k("i"), 400 + G_TIMEOUT_MS + 1)).toBeNull();
    expect(r.read(k("g"), 5000)).toBeNull();
    expect(r.read(k("s"), 5001)).toEqual({ type: "goto", view: "settings" });
  });
  it("leaves typing alone, except Escape", () => {
    const r = new KeyReader();
    expect(r.read(k("a", { inField: true }), 0)).toBeNull();
    expect(r.read(k("d", { inField: true }), 0)).toBeNull();
    expect(r.read(k("Escape", { inField: true }), 0)).toEqual({ type: "escape" });
    expect(r.read(k("a", { ctrl: true }), 0)).toBeNull();
  });
  it("leaves Enter to a focused button", () => {
    expect(new KeyReader().read(k("Enter", { onButton: true }), 0)).toBeNull();
  });
  it("a g typed into a field does not arm a sequence", () => {
    const r = new KeyReader();
    expect(r.read(k("g", { inField: true }), 0)).toBeNull();
    expect(r.read(k("a"), 10)).toEqual({ type: "approve" });
  });
});
