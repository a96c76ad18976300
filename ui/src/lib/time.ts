/**
 * Time as the window shows it. Pure functions of (timestamp, now) so the live
 * countdowns are testable; the one ticking clock lives in App.svelte.
 */

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** Under this much time left, a countdown turns red. */
export const URGENT_MS = 5 * MINUTE;

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

/** Milliseconds since the epoch, or null for a missing or unparseable timestamp. */
export function parseTime(at: string | null | undefined): number | null {
  if (at === null || at === undefined || at === "") return null;
  const t = Date.parse(at);
  return Number.isNaN(t) ? null : t;
}

/**
 * A positive duration, compact and precise enough to act on:
 * `45s`, `4m 05s`, `1h 03m`, `2d 04h`.
 */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.floor(ms / SECOND));
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return `${String(d)}d ${pad2(h)}h`;
  if (h > 0) return `${String(h)}h ${pad2(m)}m`;
  if (m > 0) return `${String(m)}m ${pad2(s)}s`;
  return `${String(s)}s`;
}

export type Urgency = "none" | "normal" | "urgent" | "expired";

export interface Countdown {
  text: string;
  urgency: Urgency;
  /** Milliseconds left; null when the action never expires. */
  leftMs: number | null;
}

/** Time left until `expiresAt`: red (`urgent`) under five minutes, then `expired`. */
export function countdown(expiresAt: string | null | undefined, now: number): Countdown {
  const t = parseTime(expiresAt);
  if (t === null) return { text: "no expiry", urgency: "none", leftMs: null };
  const left = t - now;
  if (left <= 0) return { text: "expired", urgency: "expired", leftMs: left };
  return {
    text: formatDuration(left),
    urgency: left < URGENT_MS ? "urgent" : "normal",
    leftMs: left,
  };
}

/** `just now`, `12s ago`, `3 min ago`, `2 h ago`, `3 d ago`; future: `in 4 min`. */
export function relativeTime(at: string, now: number): string {
  const t = parseTime(at);
  if (t === null) return "—";
  const diff = now - t;
  const ms = Math.abs(diff);
  let amount: string;
  if (ms < 5 * SECOND) return "just now";
  if (ms < MINUTE) amount = `${String(Math.floor(ms / SECOND))}s`;
  else if (ms < HOUR) amount = `${String(Math.floor(ms / MINUTE))} min`;
  else if (ms < DAY) amount = `${String(Math.floor(ms / HOUR))} h`;
  else amount = `${String(Math.floor(ms / DAY))} d`;
  return diff >= 0 ? `${amount} ago` : `in ${amount}`;
}

/**
 * Local wall-clock time, 24 h: `14:03:21` today, `2025-11-24 14:03:21` otherwise.
 * Fixed format (not the locale's) so columns line up and screenshots compare.
 */
export function formatLocal(at: string, now: number): string {
  const t = parseTime(at);
  if (t === null) return at === "" ? "—" : at;
  const d = new Date(t);
  const clock = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const today = new Date(now);
  const sameDay =
    d.getFullYear() === today.getFullYear() &&
    d.getMonth() === today.getMonth() &&
    d.getDate() === today.getDate();
  if (sameDay) return clock;
  return `${String(d.getFullYear())}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${clock}`;
}
