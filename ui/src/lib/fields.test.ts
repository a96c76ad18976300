import { flushSync, mount, unmount } from "svelte";
import { afterEach, describe, expect, it } from "vitest";
import BackendForm from "../components/settings/BackendForm.svelte";
import Preferences from "../components/settings/Preferences.svelte";
import { FakeShell } from "../test/fixtures.ts";
import { BACKEND_FIELDS, describedBy, errorIdOf, inputAttrs, nameField, optionField, PREFS_FIELDS, testIdOf, urlField } from "./fields.ts";
import { KINDS, SettingsState } from "./settings.svelte.ts";

describe("field descriptions", () => {
  it("name a field's error by an id the control points at while the error stands", () => {
    expect(testIdOf("option:web_url")).toBe("option-web_url");
    expect(errorIdOf("option:web_url")).toBe("err-option-web_url");
    expect(describedBy({}, "url")).toBeUndefined();
    expect(describedBy({ url: "Use an http:// or https:// URL." }, "url")).toBe("err-url");
  });

  it("give each control the input type and keyboard its text needs", () => {
    expect(inputAttrs()).toEqual({ type: undefined, inputmode: undefined });
    expect(inputAttrs("url")).toEqual({ type: "url", inputmode: undefined });
    expect(inputAttrs("numeric")).toEqual({ type: undefined, inputmode: "numeric" });
    expect(inputAttrs("datetime")).toEqual({ type: "datetime-local", inputmode: undefined });
  });

  it("turn every kind's option into a row with the ids the E2E tests and errors use", () => {
    for (const spec of Object.values(KINDS)) {
      for (const o of spec.options) {
        const d = optionField(o);
        expect(d.id).toBe(`backend-option-${o.key}`);
        expect(d.field).toBe(`option:${o.key}`);
        expect(d.label).toBe(o.label);
        expect(d.placeholder).toBe(o.hint);
        expect(d.control).toBe({ bool: "check", number: "numeric", text: "text", list: "text" }[o.type]);
      }
    }
  });

  it("label the URL by whether the kind needs one; the name is fixed when editing", () => {
    const hoop = KINDS["hoop"];
    const github = KINDS["github"];
    if (hoop === undefined || github === undefined) throw new Error("kinds missing");
    expect(urlField(hoop)).toMatchObject({ id: "backend-url", field: "url", label: "URL", control: "url", placeholder: hoop.urlHint });
    expect(urlField(github).label).toBe("URL (optional)");
    expect(nameField(true).readonly).toBe(true);
    expect(nameField(false)).toMatchObject({ id: "backend-name", field: "name", readonly: false });
    expect(BACKEND_FIELDS.extra.field).toBe("options");
    expect(PREFS_FIELDS.dnd.control).toBe("datetime");
  });
});

describe("Field in the settings forms", () => {
  let mounted: ReturnType<typeof mount>[] = [];
  afterEach(() => {
    for (const m of mounted) void unmount(m);
    mounted = [];
    document.body.replaceChildren();
  });
  const q = (id: string): HTMLInputElement => {
    const el = document.querySelector<HTMLInputElement>(`[data-testid="${id}"]`);
    if (el === null) throw new Error(`no ${id}`);
    return el;
  };
  const type = (id: string, text: string): void => {
    const el = q(id);
    el.value = text;
    el.dispatchEvent(new Event("input", { bubbles: true }));
    flushSync();
  };

  it("writes an option as typed, a check as \"true\" or nothing, and links each error", () => {
    const s = new SettingsState(new FakeShell().api());
    mounted.push(mount(BackendForm, { target: document.body, props: { s } }));
    s.startAdd("exec");
    flushSync();
    for (const el of document.querySelectorAll("input:not([type=radio]):not([type=checkbox]), select, textarea")) {
      expect(document.querySelector(`label[for="${el.id}"]`), el.id).not.toBeNull();
    }
    type("backend-option-watch_idle_secs", "0");
    expect(s.form?.options["watch_idle_secs"]).toBe("0");
    q("backend-option-watch").click();
    flushSync();
    expect(s.form?.options["watch"]).toBe("true");
    q("backend-option-watch").click();
    flushSync();
    expect(s.form?.options["watch"]).toBe("");
    type("backend-command", "/bin/plug\n--flag");
    expect(s.form?.command).toBe("/bin/plug\n--flag");

    void s.save();
    flushSync();
    const input = q("backend-option-watch_idle_secs");
    expect(input.getAttribute("aria-invalid")).toBe("true");
    const describedBy = input.getAttribute("aria-describedby") ?? "";
    expect(document.getElementById(describedBy)?.textContent).toBe("A whole number, at least 1.");
    expect(q("field-error-option-watch_idle_secs").id).toBe(describedBy);
    // Fields without an error stay described by nothing.
    expect(q("backend-command").getAttribute("aria-describedby")).toBeNull();
  });

  it("puts the do-not-disturb shortcuts beside its control and they set it", () => {
    const s = new SettingsState(new FakeShell().api());
    s.prefs = { approver: "", enabled: true, muted: [], dndUntil: "", denyReason: "", closeToTray: true };
    mounted.push(mount(Preferences, { target: document.body, props: { s } }));
    const dnd = q("prefs-dnd");
    expect(dnd.type).toBe("datetime-local");
    const buttons = [...(dnd.parentElement?.querySelectorAll("button") ?? [])];
    expect(buttons.map((b) => b.textContent)).toEqual(["1 hour", "8 hours", "Clear"]);
    buttons[0]?.click();
    flushSync();
    expect(s.prefs.dndUntil).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d$/);
    expect(dnd.value).toBe(s.prefs.dndUntil);
    buttons[2]?.click();
    flushSync();
    expect(s.prefs.dndUntil).toBe("");
    type("prefs-approver", "ops@example.com");
    expect(s.prefs.approver).toBe("ops@example.com");
  });
});
