import { describe, expect, it } from "vitest";
import { action, key } from "../test/fixtures.ts";
import {
  arrange,
  countsByBackend,
  nextActionIndex,
  NO_FILTER,
  parseKey,
  prune,
  scrollToShow,
  visibleRange,
  type InboxItem,
} from "./inbox.ts";

const at = (min: number): string => new Date(Date.UTC(2026, 10, 25, 12, min)).toISOString();

const a1 = action("a1", { key: key("a1", "hoop"), expires_at: at(30), requested_at: at(5), requester: "dana", kind: "db_session" });
const a2 = action("a2", { key: key("a2", "gh"), expires_at: at(10), requested_at: at(1), requester: "ci", kind: "deployment" });
const a3 = action("a3", { key: key("a3", "hoop"), expires_at: null, requested_at: at(3), requester: "dana", kind: "db_session" });

const ids = (items: InboxItem[]): string[] => items.map((i) => i.id);

describe("arrange", () => {
  it("sorts by time left by default semantics: soonest expiry first, no expiry last", () => {
    expect(ids(arrange([a1, a2, a3], NO_FILTER, "time_left", "none"))).toEqual(["gh/a2", "hoop/a1", "hoop/a3"]);
  });
  it("sorts by age (oldest first) and by backend", () => {
    expect(ids(arrange([a1, a2, a3], NO_FILTER, "age", "none"))).toEqual(["gh/a2", "hoop/a3", "hoop/a1"]);
    expect(ids(arrange([a3, a1, a2], NO_FILTER, "backend", "none"))).toEqual(["gh/a2", "hoop/a1", "hoop/a3"]);
  });
  it("filters by backend, kind and requester text", () => {
    expect(ids(arrange([a1, a2, a3], { ...NO_FILTER, backends: ["hoop"] }, "time_left", "none"))).toEqual(["hoop/a1", "hoop/a3"]);
    expect(ids(arrange([a1, a2, a3], { ...NO_FILTER, kind: "deployment" }, "time_left", "none"))).toEqual(["gh/a2"]);
    expect(ids(arrange([a1, a2, a3], { ...NO_FILTER, text: "DANA" }, "time_left", "none"))).toEqual(["hoop/a1", "hoop/a3"]);
  });
  it("groups with a heading and a count, keeping the sort inside each group", () => {
    const items = arrange([a1, a2, a3], NO_FILTER, "time_left", "requester");
    expect(ids(items)).toEqual(["group:ci", "gh/a2", "group:dana", "hoop/a1", "hoop/a3"]);
    expect(items[2]).toMatchObject({ type: "group", label: "dana", count: 2 });
  });
});

describe("countsByBackend", () => {
  it("counts every configured backend, zero included", () => {
    expect(countsByBackend([a1, a2, a3], ["gh", "hoop", "prefect"])).toEqual([
      { name: "gh", count: 1 },
      { name: "hoop", count: 2 },
      { name: "prefect", count: 0 },
    ]);
  });
});

describe("the virtual window", () => {
  it("puts only the visible rows plus overscan in the DOM, whatever the list size", () => {
    expect(visibleRange(0, 600, 60, 10_000, 5)).toEqual({ start: 0, end: 15 });
    expect(visibleRange(60_000, 600, 60, 10_000, 5)).toEqual({ start: 995, end: 1015 });
    expect(visibleRange(599_999, 600, 60, 10_000, 5)).toEqual({ start: 9994, end: 10_000 });
    expect(visibleRange(0, 600, 60, 0)).toEqual({ start: 0, end: 0 });
  });
  it("scrolls just enough to show a row", () => {
    expect(scrollToShow(0, 120, 600, 60)).toBe(0);
    expect(scrollToShow(20, 0, 600, 60)).toBe(21 * 60 - 600);
    expect(scrollToShow(5, 0, 600, 60)).toBe(0);
  });
});

describe("moving through the list", () => {
  it("skips group headings and stops at the ends", () => {
    const items = arrange([a1, a2, a3], NO_FILTER, "time_left", "requester");
    expect(nextActionIndex(items, 1, 1)).toBe(3);
    expect(nextActionIndex(items, 3, -1)).toBe(1);
    expect(nextActionIndex(items, 1, -1)).toBe(1);
    expect(nextActionIndex(items, 4, 1)).toBe(4);
  });
  it("drops decided actions from a selection and reads keys back", () => {
    expect([...prune(new Set(["hoop/a1", "gh/gone"]), [a1, a2])]).toEqual(["hoop/a1"]);
    expect(parseKey("hoop/a/b")).toEqual({ backend: "hoop", external_id: "a/b" });
    expect(parseKey("nokey")).toBeNull();
  });
});
