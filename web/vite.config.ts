import { defineConfig } from "vite";

// `npm run build` is what `cargo build -p tether-local` runs (local/build.rs),
// with --outDir pointing into Cargo's OUT_DIR; the binary embeds the result.
// `npm run dev` serves the UI with hot reload against a `tether up` on 8787.
const host = process.env.TETHER_DEV_HOST ?? "127.0.0.1:8787";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    target: "es2022",
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    reportCompressedSize: false,
  },
  server: {
    proxy: {
      "/api": `http://${host}`,
      "/ws": { target: `ws://${host}`, ws: true },
    },
  },
});
