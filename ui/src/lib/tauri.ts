/** The real shell: the commands and events generated from the Rust types. */
import { commands, events } from "../bindings.ts";
import type { Api } from "./api.ts";

export const tauriApi: Api = {
  commands,
  onChanged: (callback) => events.changed.listen((event) => { callback(event.payload); }),
};
