import { describe, expect, it } from "vitest";
import { countdown, formatDuration, formatLocal, parseTime, relativeTime, URGENT_MS } from "./time.ts";

const NOW = Date.parse("2025-11-24T14:00:00Z");
const at = (offsetMs: number): string => new Date(NOW + offsetMs).toISOString();

describe("formatDuration", () => {
  it("is compact and precise to the unit below the largest", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(45_000)).toBe("45s");
    expect(formatDuration(4 * 60_000 + 5_000)).toBe("4m 05s");
    expect(formatDuration(3_600_000 + 3 * 60_000 + 59_000)).toBe("1h 03m");
    expect(formatDuration(2 * 86_400_000 + 4 * 3_600_000)).toBe("2d 04h");
  });
  it("rounds down and never goes negative", () => {
    expect(formatDuration(59_999)).toBe("59s");
    expect(formatDuration(-5_000)).toBe("0s");
  });
});

describe("countdown", () => {
  it("turns urgent (red) under five minutes, not at five", () => {
    expect(countdown(at(URGENT_MS), NOW)).toEqual({ text: "5m 00s", urgency: "normal", leftMs: URGENT_MS });
    expect(countdown(at(URGENT_MS - 1000), NOW).urgency).toBe("urgent");
    expect(countdown(at(URGENT_MS - 1000), NOW).text).toBe("4m 59s");
  });
  it("says expired at and after the deadline", () => {
    expect(countdown(at(0), NOW)).toMatchObject({ text: "expired", urgency: "expired" });
    expect(countdown(at(-60_000), NOW).urgency).toBe("expired");
  });
  it("ticks with the clock", () => {
    const exp = at(10 * 60_000);
    expect(countdown(exp, NOW).text).toBe("10m 00s");
    expect(countdown(exp, NOW + 1000).text).toBe("9m 59s");
  });
  it("handles actions that never expire", () => {
    expect(countdown(null, NOW)).toEqual({ text: "no expiry", urgency: "none", leftMs: null });
    expect(countdown(undefined, NOW).urgency).toBe("none");
    expect(countdown("not a date", NOW).urgency).toBe("none");
  });
});

describe("relativeTime", () => {
  it("reads like a person would say it", () => {
    expect(relativeTime(at(-2_000), NOW)).toBe("just now");
    expect(relativeTime(at(-12_000), NOW)).toBe("12s ago");
    expect(relativeTime(at(-3 * 60_000 - 30_000), NOW)).toBe("3 min ago");
    expect(relativeTime(at(-2 * 3_600_000), NOW)).toBe("2 h ago");
    expect(relativeTime(at(-3 * 86_400_000), NOW)).toBe("3 d ago");
  });
  it("handles the future and bad input", () => {
    expect(relativeTime(at(4 * 60_000), NOW)).toBe("in 4 min");
    expect(relativeTime("garbage", NOW)).toBe("—");
  });
});

describe("formatLocal (TZ=UTC in tests)", () => {
  it("shows only the clock for today, the date otherwise", () => {
    expect(formatLocal("2025-11-24T09:05:03Z", NOW)).toBe("09:05:03");
    expect(formatLocal("2025-11-23T23:59:59Z", NOW)).toBe("2025-11-23 23:59:59");
  });
  it("keeps unparseable text as sent", () => {
    expect(formatLocal("yesterday-ish", NOW)).toBe("yesterday-ish");
    expect(parseTime("")).toBeNull();
  });
});
