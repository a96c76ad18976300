/**
 * Bursts of `changed` events become few re-reads: the first item of a quiet period is
 * flushed at once, later ones are batched and flushed at most once per `intervalMs`.
 * Flushes never overlap: while one is running (it may be async), new items wait for it,
 * so a slow read cannot be overtaken by a newer one and land last with older data.
 */
export interface Coalescer<T> {
  push(item: T): void;
  /** Stops pending flushes (the window is going away). */
  dispose(): void;
}

export function coalesce<T>(
  flush: (batch: T[]) => void | Promise<void>,
  intervalMs: number,
): Coalescer<T> {
  let pending: T[] = [];
  let timer: ReturnType<typeof setTimeout> | null = null;
  let running = false;
  let lastStart = -Infinity;
  let disposed = false;

  const schedule = (): void => {
    if (timer !== null || running || disposed || pending.length === 0) return;
    const wait = Math.max(0, lastStart + intervalMs - Date.now());
    timer = setTimeout(() => {
      timer = null;
      void run();
    }, wait);
  };

  const run = async (): Promise<void> => {
    if (disposed || pending.length === 0) return;
    const batch = pending;
    pending = [];
    running = true;
    lastStart = Date.now();
    try {
      await flush(batch);
    } catch {
      // The flush reports its own failures; a throw must not stop later flushes.
    } finally {
      running = false;
      schedule();
    }
  };

  return {
    push(item: T) {
      if (disposed) return;
      pending.push(item);
      schedule();
    },
    dispose() {
      disposed = true;
      pending = [];
      if (timer !== null) clearTimeout(timer);
      timer = null;
    },
  };
}
