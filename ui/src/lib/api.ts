/**
 * What the window needs from the shell. The real one wraps the generated bindings;
 * tests hand App a fake with the same shape.
 */
import type { Change, commands } from "../bindings.ts";

export type Commands = typeof commands;

export interface Api {
  commands: Commands;
  /** Subscribes to the engine's `changed` broadcast; resolves to an unsubscribe. */
  onChanged(callback: (change: Change) => void): Promise<() => void>;
}
