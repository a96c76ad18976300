import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { coalesce } from "./coalesce.ts";

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("coalesce", () => {
  it("turns a burst into one flush carrying every item", async () => {
    const flushes: number[][] = [];
    const c = coalesce<number>((b) => {
      flushes.push(b);
    }, 150);
    for (let i = 0; i < 10; i++) c.push(i);
    expect(flushes).toEqual([]);
    await vi.advanceTimersByTimeAsync(0);
    expect(flushes).toEqual([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]);
  });

  it("flushes at most once per interval under a steady stream", async () => {
    const flushes: number[][] = [];
    const c = coalesce<number>((b) => {
      flushes.push(b);
    }, 150);
    for (let t = 0; t < 1000; t += 10) {
      c.push(t);
      await vi.advanceTimersByTimeAsync(10);
    }
    await vi.advanceTimersByTimeAsync(200);
    // 1 s of events every 10 ms: about 1000/150 flushes, never 100.
    expect(flushes.length).toBeGreaterThanOrEqual(6);
    expect(flushes.length).toBeLessThanOrEqual(8);
    expect(flushes.flat()).toHaveLength(100);
  });

  it("never overlaps a slow flush; items arriving meanwhile follow it", async () => {
    let running = 0;
    let maxRunning = 0;
    const flushes: number[][] = [];
    const c = coalesce<number>(async (b) => {
      running++;
      maxRunning = Math.max(maxRunning, running);
      flushes.push(b);
      await new Promise((r) => setTimeout(r, 500));
      running--;
    }, 150);
    c.push(1);
    await vi.advanceTimersByTimeAsync(10);
    c.push(2);
    c.push(3);
    await vi.advanceTimersByTimeAsync(400);
    expect(flushes).toEqual([[1]]);
    await vi.advanceTimersByTimeAsync(200);
    expect(flushes).toEqual([[1], [2, 3]]);
    expect(maxRunning).toBe(1);
  });

  it("keeps going after a failing flush, and stops when disposed", async () => {
    const flushes: number[][] = [];
    const c = coalesce<number>((b) => {
      flushes.push(b);
      if (b.includes(1)) throw new Error("boom");
    }, 150);
    c.push(1);
    await vi.advanceTimersByTimeAsync(0);
    c.push(2);
    await vi.advanceTimersByTimeAsync(200);
    expect(flushes).toEqual([[1], [2]]);
    c.push(3);
    c.dispose();
    await vi.advanceTimersByTimeAsync(500);
    expect(flushes).toEqual([[1], [2]]);
  });
});
