import { describe, expect, it } from "vitest";
import type { InputForm_Serialize } from "../bindings.ts";
import { answerFor, hasErrors, initialDraft, toggleOption } from "./form.ts";

const hitl: InputForm_Serialize = {
  options: ["Deploy EU", "Deploy US", "Skip"],
  multiple: false,
  default_options: ["Skip"],
  fields: [
    {
      name: "replicas",
      label: "Replicas",
      description: "",
      field_type: "integer",
      choices: [],
      required: true,
      default: 2,
    },
    { name: "note", label: "Note", description: "", field_type: "text", choices: [], required: false },
    { name: "dry_run", label: "Dry run", description: "", field_type: "boolean", choices: [], required: false },
  ],
};

describe("form drafts", () => {
  it("start from the form's defaults", () => {
    const d = initialDraft(hitl);
    expect(d.options).toEqual(["Skip"]);
    expect(d.values).toEqual({ replicas: "2", note: "", dry_run: "false" });
  });

  it("pick one option at a time unless the form takes several", () => {
    let d = toggleOption(hitl, initialDraft(hitl), "Deploy US");
    expect(d.options).toEqual(["Deploy US"]);
    const multi = { ...hitl, multiple: true };
    d = toggleOption(multi, d, "Deploy EU");
    expect(d.options).toEqual(["Deploy US", "Deploy EU"]);
    d = toggleOption(multi, d, "Deploy US");
    expect(d.options).toEqual(["Deploy EU"]);
  });

  it("turn typed text into typed values, and say what is wrong", () => {
    const d = { options: ["Deploy US"], values: { replicas: "3", note: "go", dry_run: "true" } };
    const ok = answerFor(hitl, d, "choose");
    expect(hasErrors(ok)).toBe(false);
    expect(ok.answer).toEqual({ options: ["Deploy US"], params: { replicas: 3, note: "go", dry_run: true } });

    const bad = answerFor(hitl, { options: [], values: { replicas: "three" } }, "choose");
    expect(bad.errors).toEqual({ replicas: "Must be a whole number.", "": "Choose an option." });
  });

  it("leave empty fields to the engine's defaults and send no options with approve", () => {
    const c = answerFor(hitl, { options: ["Skip"], values: { replicas: "", note: "" } }, "approve");
    expect(hasErrors(c)).toBe(false);
    expect(c.answer).toEqual({ options: [], params: {} });
  });
});
