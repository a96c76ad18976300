/**
 * The settings forms' fields, described as data: one `FieldDesc` is one row of a form
 * (label, control, hint, the field's error), rendered by `components/settings/Field.svelte`.
 * A kind's option is described in `KINDS` (settings.svelte.ts) and becomes a row here,
 * so giving a backend kind another field is one entry there.
 *
 * Ids and test ids are part of the contract: E2E tests and axe-core find the controls
 * and their errors by them (`backend-option-<key>`, `field-error-<field>`, `err-<field>`).
 */
import type { KindSpec, OptionSpec } from "./settings.svelte.ts";

/** Which control a field is: what it accepts decides its input type and keyboard. */
export type Control = "text" | "url" | "numeric" | "multiline" | "datetime" | "check";

export interface FieldDesc {
  /** The control's `id` and `data-testid`. */
  id: string;
  /** The key its error has (`name`, `option:web_url`, `dnd_until`). */
  field: string;
  label: string;
  /** Default: one line of text. */
  control?: Control;
  placeholder?: string;
  /** A line under the control. */
  hint?: string;
  /** Lines of a multiline control. */
  rows?: number;
  readonly?: boolean;
}

/** Errors by field, as the form's own checks and the engine give them. */
export type Errors = Record<string, string>;

/** The `data-testid` suffix of a field's error (`option:web_url` → `option-web_url`). */
export function testIdOf(field: string): string {
  return field.replace(/[^A-Za-z0-9_-]/g, "-");
}

/** The id of a field's error message, which the control names in `aria-describedby`. */
export function errorIdOf(field: string): string {
  return `err-${testIdOf(field)}`;
}

/** `aria-describedby` of a control: its error while it has one. */
export function describedBy(errors: Errors, field: string): string | undefined {
  return errors[field] === undefined ? undefined : errorIdOf(field);
}

/** The `type` and `inputmode` of a one-line control (multiline and check are not inputs of text). */
export function inputAttrs(control: Control = "text"): { type: string | undefined; inputmode: "numeric" | undefined } {
  return {
    type: control === "url" ? "url" : control === "datetime" ? "datetime-local" : undefined,
    inputmode: control === "numeric" ? "numeric" : undefined,
  };
}

/** A kind's option as a form row; its hint is the placeholder (what an empty field means). */
export function optionField(o: OptionSpec): FieldDesc {
  return {
    id: `backend-option-${o.key}`,
    field: `option:${o.key}`,
    label: o.label,
    control: o.type === "bool" ? "check" : o.type === "number" ? "numeric" : "text",
    placeholder: o.hint,
  };
}

/** The URL row of a kind that has one. */
export function urlField(spec: KindSpec): FieldDesc {
  return {
    id: "backend-url",
    field: "url",
    label: `URL${spec.url === "optional" ? " (optional)" : ""}`,
    control: "url",
    placeholder: spec.urlHint,
  };
}

/** The name row: fixed once the backend exists (it is part of every action id). */
export function nameField(readonly: boolean): FieldDesc {
  return { id: "backend-name", field: "name", label: "Name", placeholder: "prod", readonly };
}

/** The backend form's other rows that do not depend on the kind (the command only shows for exec). */
export const BACKEND_FIELDS = {
  command: {
    id: "backend-command",
    field: "command",
    label: "Command",
    control: "multiline",
    rows: 3,
    placeholder: "/usr/local/bin/countersign-teleport",
    hint: "The program on the first line, then one argument per line.",
  },
  poll: { id: "backend-poll", field: "poll_interval_secs", label: "Poll every (s)", control: "numeric", placeholder: "10" },
  timeout: { id: "backend-timeout", field: "timeout_secs", label: "Request timeout (s)", control: "numeric", placeholder: "20" },
  extra: { id: "backend-extra", field: "options", label: "Other options", control: "multiline", rows: 2, placeholder: "key = value, one per line" },
} as const satisfies Record<string, FieldDesc>;

/** The approver row; `fallback` is who signs when it is left empty. */
export function approverField(fallback: string): FieldDesc {
  return {
    id: "prefs-approver",
    field: "approver",
    label: "Approver",
    placeholder: fallback,
    hint: `Who signs decisions made here (e.g. your email). Empty: ${fallback}.`,
  };
}

/** The preferences form's rows that depend on nothing. */
export const PREFS_FIELDS = {
  dnd: { id: "prefs-dnd", field: "dnd_until", label: "Do not disturb until", control: "datetime" },
  deny: { id: "prefs-deny", field: "default_deny_reason", label: "Deny reason from a notification", placeholder: "empty: Deny opens the window to ask" },
} as const satisfies Record<string, FieldDesc>;
