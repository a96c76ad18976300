import { defineConfig } from "vite";

// Tauri serves ui/dist as the app's frontend; `cargo build` embeds it.
// root is ui/ itself: npm runs every script (also via `npm --prefix ui`) from here.
export default defineConfig({
  root: ".",
  base: "./",
  clearScreen: false,
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
    sourcemap: false,
  },
});
