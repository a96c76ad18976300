import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vitest/config";

// Tauri serves ui/dist as the app's frontend; `cargo build` embeds it.
// root is ui/ itself: npm runs every script (also via `npm --prefix ui`) from here.
export default defineConfig({
  root: ".",
  base: "./",
  clearScreen: false,
  plugins: [svelte()],
  // Vitest runs components in happy-dom: resolve Svelte's browser build there.
  ...(process.env["VITEST"] ? { resolve: { conditions: ["browser"] } } : {}),
  server: {
    port: 5173,
    strictPort: true,
    host: "localhost",
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // WebKitGTK 2.40+ on Debian 12 handles ES2021 natively.
    target: "es2021",
    // The polyfill is injected as an inline script, which the CSP forbids.
    modulePreload: { polyfill: false },
    // Never inline assets as data: URLs into CSS/JS; everything is a file from 'self'.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "happy-dom",
    // Local-time formatting is asserted in UTC, whatever the machine's zone.
    env: { TZ: "UTC" },
  },
});
