/**
 * The inbox as a list people can work through: filters, sort, grouping and the window
 * of rows actually in the DOM. Pure functions over the engine's pending actions, so
 * 10,000 rows cost a sort and a slice, never 10,000 elements.
 */
import type { ActionKey, PendingAction_Serialize } from "../bindings.ts";
import { keyString, kindLabel } from "./model.ts";

export type SortBy = "time_left" | "age" | "backend";
export type GroupBy = "none" | "backend" | "kind" | "requester";

export interface InboxFilter {
  /** Only these backends (empty: all). */
  backends: string[];
  /** Only this kind ("" for all). */
  kind: string;
  /** Requester or title contains this text, case-insensitive ("" for all). */
  text: string;
}

export const NO_FILTER: InboxFilter = { backends: [], kind: "", text: "" };

/** One line of the list: a group heading or an action. */
export type InboxItem =
  | { type: "group"; id: string; label: string; count: number }
  | { type: "action"; id: string; action: PendingAction_Serialize };

function expiry(a: PendingAction_Serialize): number {
  // No expiry sorts last: it is the least urgent.
  return a.expires_at === null ? Number.POSITIVE_INFINITY : Date.parse(a.expires_at);
}

function compare(sort: SortBy): (a: PendingAction_Serialize, b: PendingAction_Serialize) => number {
  const byKey = (a: PendingAction_Serialize, b: PendingAction_Serialize): number =>
    keyString(a.key).localeCompare(keyString(b.key));
  switch (sort) {
    case "time_left":
      return (a, b) => expiry(a) - expiry(b) || byKey(a, b);
    case "age":
      // Oldest request first: it has waited longest.
      return (a, b) => Date.parse(a.requested_at) - Date.parse(b.requested_at) || byKey(a, b);
    case "backend":
      return (a, b) => a.key.backend.localeCompare(b.key.backend) || expiry(a) - expiry(b) || byKey(a, b);
  }
}

export function matches(a: PendingAction_Serialize, f: InboxFilter): boolean {
  if (f.backends.length > 0 && !f.backends.includes(a.key.backend)) return false;
  if (f.kind !== "" && a.kind !== f.kind) return false;
  const text = f.text.trim().toLowerCase();
  if (text === "") return true;
  return (
    a.requester.toLowerCase().includes(text) ||
    a.title.toLowerCase().includes(text) ||
    a.resource.toLowerCase().includes(text)
  );
}

function groupOf(a: PendingAction_Serialize, group: GroupBy): string {
  switch (group) {
    case "backend":
      return a.key.backend;
    case "kind":
      return kindLabel(a.kind);
    case "requester":
      return a.requester;
    case "none":
      return "";
  }
}

/** Filtered, sorted and grouped: the list as it is drawn. Groups keep the sort inside. */
export function arrange(
  actions: readonly PendingAction_Serialize[],
  filter: InboxFilter,
  sort: SortBy,
  group: GroupBy,
): InboxItem[] {
  const shown = actions.filter((a) => matches(a, filter)).sort(compare(sort));
  if (group === "none") return shown.map((a) => ({ type: "action", id: keyString(a.key), action: a }));
  const groups = new Map<string, PendingAction_Serialize[]>();
  for (const a of shown) {
    const g = groupOf(a, group);
    const list = groups.get(g);
    if (list === undefined) groups.set(g, [a]);
    else list.push(a);
  }
  const items: InboxItem[] = [];
  for (const name of [...groups.keys()].sort((x, y) => x.localeCompare(y))) {
    const list = groups.get(name) ?? [];
    items.push({ type: "group", id: `group:${name}`, label: name === "" ? "(none)" : name, count: list.length });
    for (const a of list) items.push({ type: "action", id: keyString(a.key), action: a });
  }
  return items;
}

/** Pending count per backend, for the filter chips (every backend, even at zero). */
export function countsByBackend(
  actions: readonly PendingAction_Serialize[],
  backends: readonly string[],
): { name: string; count: number }[] {
  const counts = new Map<string, number>(backends.map((b) => [b, 0]));
  for (const a of actions) counts.set(a.key.backend, (counts.get(a.key.backend) ?? 0) + 1);
  return [...counts.entries()].map(([name, count]) => ({ name, count })).sort((a, b) => a.name.localeCompare(b.name));
}

/** Which rows to put in the DOM: those visible plus `overscan` on each side. */
export function visibleRange(
  scrollTop: number,
  viewport: number,
  rowHeight: number,
  count: number,
  overscan = 8,
): { start: number; end: number } {
  if (count === 0 || rowHeight <= 0) return { start: 0, end: 0 };
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const last = Math.ceil((Math.max(0, scrollTop) + Math.max(0, viewport)) / rowHeight);
  return { start: Math.max(0, first - overscan), end: Math.min(count, last + overscan) };
}

/** The scrollTop that brings row `index` into view (unchanged when it already is). */
export function scrollToShow(index: number, scrollTop: number, viewport: number, rowHeight: number): number {
  const top = index * rowHeight;
  if (top < scrollTop) return top;
  if (top + rowHeight > scrollTop + viewport) return top + rowHeight - viewport;
  return scrollTop;
}

/** The next action row from `from` in direction `step`, skipping group headings. */
export function nextActionIndex(items: readonly InboxItem[], from: number, step: 1 | -1): number {
  let i = from;
  for (;;) {
    i += step;
    if (i < 0 || i >= items.length) return from;
    if (items[i]?.type === "action") return i;
  }
}

/** Keys still pending among `selected` (a decided one leaves the selection). */
export function prune(selected: ReadonlySet<string>, actions: readonly PendingAction_Serialize[]): Set<string> {
  const pending = new Set(actions.map((a) => keyString(a.key)));
  return new Set([...selected].filter((k) => pending.has(k)));
}

export function parseKey(text: string): ActionKey | null {
  const at = text.indexOf("/");
  if (at <= 0) return null;
  return { backend: text.slice(0, at), external_id: text.slice(at + 1) };
}
