/** Small helpers over the generated binding types (see ../bindings.ts). */
import type {
  ActionKey,
  ActionKind_Serialize,
  Change,
  Review_Serialize,
} from "../bindings.ts";

/** `backend/external_id`, as the engine prints a key (and as `data-key` carries it). */
export function keyString(key: ActionKey): string {
  return `${key.backend}/${key.external_id}`;
}

export function sameKey(a: ActionKey | null, b: ActionKey | null): boolean {
  return a !== null && b !== null && a.backend === b.backend && a.external_id === b.external_id;
}

/** Approvals so far out of those required: `1/2`. */
export function approvalsText(reviews: readonly Review_Serialize[], required: number): string {
  const approved = reviews.filter((r) => r.verdict === "approved").length;
  return `${String(approved)}/${String(Math.max(required, 1))}`;
}

const KIND_LABELS: Record<ActionKind_Serialize, string> = {
  db_session: "DB session",
  command: "Command",
  deployment: "Deployment",
  flow_run: "Flow run",
  hitl_step: "HITL step",
  agent_tool_call: "Agent tool call",
  other: "Other",
};

/** A readable label for an action kind; unknown kinds show as sent. */
export function kindLabel(kind: string): string {
  return (KIND_LABELS as Record<string, string | undefined>)[kind] ?? kind.replaceAll("_", " ");
}

/** The action a change is about, if any (a backend health change is about none). */
export function changeKey(change: Change): ActionKey | null {
  return change.type === "backend" ? null : change.key;
}

/** Whether any change in a batch concerns `key`. */
export function touches(changes: readonly Change[], key: ActionKey | null): boolean {
  return changes.some((c) => sameKey(changeKey(c), key));
}

/**
 * A stale-refusal value (canonical JSON text) made readable: objects and arrays are
 * indented, scalars stay as sent (strings keep their quotes, so `""` and `null` differ).
 * Never interpreted as markup: the caller renders the result as text.
 */
export function readableJson(text: string): string {
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === "object") return JSON.stringify(value, null, 2);
  } catch {
    // Not JSON after all: show it exactly as received.
  }
  return text;
}
