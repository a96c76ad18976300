import { mount } from "svelte";
import App from "./App.svelte";
import { applyTheme, storedTheme } from "./lib/settings.svelte.ts";
import { tauriApi } from "./lib/tauri.ts";
import "./style.css";

// Start-up marks (here: every module evaluated): the footprint benchmark prints where
// the page's time goes.
performance.mark("cs-evaluated");

/*
 * DOM rule for this codebase: other people's words (titles, details, comments, errors)
 * are rendered only through Svelte text interpolation, never {@html} or innerHTML.
 */
const target = document.getElementById("app");
if (target === null) {
  throw new Error("Countersign: #app root element is missing from index.html");
}
// The theme chosen in Settings (none: the desktop's), before the first paint.
applyTheme(storedTheme());
mount(App, { target, props: { api: tauriApi } });
performance.mark("cs-mounted");
