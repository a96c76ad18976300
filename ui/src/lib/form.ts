/**
 * A backend's form (options to choose from, typed fields) as the window edits it, and
 * the answer it becomes. The engine checks the answer again against the current form
 * before anything is signed; this only keeps people from sending what cannot pass.
 */
import type { Answer_Deserialize, FormField_Serialize, InputForm_Serialize, Verdict } from "../bindings.ts";

/** What the person has entered so far: chosen options, and each field as typed. */
export interface FormDraft {
  options: string[];
  /** Text for text-like inputs; booleans are "true" / "false". */
  values: Record<string, string>;
}

/** The field's default as the input shows it. */
function shown(field: FormField_Serialize): string {
  const d = field.default;
  if (d === undefined || d === null) return field.field_type === "boolean" ? "false" : "";
  if (typeof d === "string") return d;
  return JSON.stringify(d);
}

export function initialDraft(form: InputForm_Serialize): FormDraft {
  const values: Record<string, string> = {};
  for (const f of form.fields) values[f.name] = shown(f);
  return { options: [...form.default_options], values };
}

/** Picks or drops an option: one at a time unless the form takes several. */
export function toggleOption(form: InputForm_Serialize, draft: FormDraft, option: string): FormDraft {
  const on = draft.options.includes(option);
  if (form.multiple) {
    return { ...draft, options: on ? draft.options.filter((o) => o !== option) : [...draft.options, option] };
  }
  return { ...draft, options: on ? [] : [option] };
}

export interface Checked {
  answer: Answer_Deserialize;
  /** Field name (or "" for the options) → what is wrong, in words. */
  errors: Record<string, string>;
}

const INTEGER = /^-?\d+$/;
const NUMBER = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function parse(field: FormField_Serialize, raw: string): { value?: unknown; error?: string } {
  const text = raw.trim();
  if (text === "" && field.field_type !== "text") return {};
  switch (field.field_type) {
    case "text":
      return { value: raw };
    case "integer":
      return INTEGER.test(text) ? { value: Number(text) } : { error: "a whole number" };
    case "number":
      return NUMBER.test(text) ? { value: Number(text) } : { error: "a number" };
    case "boolean":
      return { value: text === "true" };
    case "choice":
      return field.choices.includes(raw) ? { value: raw } : { error: `one of ${field.choices.join(", ")}` };
    case "json":
      try {
        return { value: JSON.parse(text) as unknown };
      } catch {
        return { error: "valid JSON" };
      }
  }
}

/**
 * The answer a decision carries, with what is wrong per field. Empty fields are left
 * out so the engine fills in the form's defaults; a choice must be complete.
 */
export function answerFor(form: InputForm_Serialize, draft: FormDraft, verdict: Verdict): Checked {
  const errors: Record<string, string> = {};
  const params: Record<string, unknown> = {};
  for (const field of form.fields) {
    const raw = draft.values[field.name] ?? "";
    const { value, error } = parse(field, raw);
    if (error !== undefined) errors[field.name] = `Must be ${error}.`;
    else if (value !== undefined && !(field.field_type === "text" && raw === "" && !field.required)) {
      params[field.name] = value;
    } else if (field.required && verdict === "choose" && field.default === undefined) {
      errors[field.name] = "Required.";
    }
  }
  let options: string[] = [];
  if (verdict === "choose") {
    options = draft.options;
    if (options.length === 0) errors[""] = form.multiple ? "Choose at least one option." : "Choose an option.";
  }
  return { answer: { options, params }, errors };
}

export function hasErrors(c: Checked): boolean {
  return Object.keys(c.errors).length > 0;
}
