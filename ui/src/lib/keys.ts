/**
 * Keyboard-first review: which key means what, as a pure function of the key and a
 * little state (a pending `g`), so the rules are tested without a DOM.
 *
 * Single keys act only when focus is not in a text field; Escape always works.
 */
import type { View } from "./console.svelte.ts";

export type KeyCommand =
  | { type: "goto"; view: View }
  | { type: "move"; step: 1 | -1 }
  | { type: "open" }
  | { type: "approve" }
  | { type: "deny" }
  | { type: "reason" }
  | { type: "toggle_check" }
  | { type: "search" }
  | { type: "help" }
  | { type: "escape" };

export interface KeyInput {
  key: string;
  ctrl: boolean;
  alt: boolean;
  meta: boolean;
  /** Focus is in an input, textarea, select or contenteditable. */
  inField: boolean;
  /** Focus is on a button (Enter and Space belong to it). */
  onButton: boolean;
}

/** The shortcut list the `?` overlay shows: one source for the help and the tests. */
export const SHORTCUTS: { keys: string; does: string }[] = [
  { keys: "j / k", does: "next / previous request" },
  { keys: "Enter", does: "open the request" },
  { keys: "a", does: "approve the open request" },
  { keys: "r", does: "write a reason, then Enter approves with it" },
  { keys: "d", does: "deny: puts focus on the reason (Enter denies)" },
  { keys: "x", does: "select for denying several at once" },
  { keys: "/", does: "search (inbox filter, history search)" },
  { keys: "g i", does: "go to the inbox" },
  { keys: "g h", does: "go to history" },
  { keys: "g a", does: "go to audit" },
  { keys: "g s", does: "go to settings" },
  { keys: "?", does: "show these shortcuts" },
  { keys: "Esc", does: "close, or leave the text field" },
];

const GOTO: Record<string, View> = { i: "inbox", h: "history", a: "audit", s: "settings" };

/** How long after `g` the second key still counts. */
export const G_TIMEOUT_MS = 1500;

export class KeyReader {
  #gAt: number | null = null;

  /** The command for this key press at time `now` (ms), or null to let it through. */
  read(k: KeyInput, now: number): KeyCommand | null {
    if (k.key === "Escape") {
      this.#gAt = null;
      return { type: "escape" };
    }
    if (k.ctrl || k.alt || k.meta || k.inField) {
      this.#gAt = null;
      return null;
    }
    if (this.#gAt !== null && now - this.#gAt <= G_TIMEOUT_MS) {
      this.#gAt = null;
      const view = GOTO[k.key];
      return view === undefined ? null : { type: "goto", view };
    }
    this.#gAt = null;
    switch (k.key) {
      case "g":
        this.#gAt = now;
        return null;
      case "j":
      case "ArrowDown":
        return { type: "move", step: 1 };
      case "k":
      case "ArrowUp":
        return { type: "move", step: -1 };
      case "Enter":
        return k.onButton ? null : { type: "open" };
      case "a":
        return { type: "approve" };
      case "d":
        return { type: "deny" };
      case "r":
        return { type: "reason" };
      case "x":
        return { type: "toggle_check" };
      case "/":
        return { type: "search" };
      case "?":
        return { type: "help" };
      default:
        return null;
    }
  }
}
