// Builds the web UI (ui/src) into dist/ui/, served by `trellis serve` under /ui/ (src/ui/).
import { defineConfig } from 'vite';
import { fileURLToPath } from 'node:url';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/ui/',
  publicDir: false,
  // React's automatic JSX runtime, without a plugin.
  esbuild: { jsx: 'automatic' },
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    // Inlined assets would need data: URLs for scripts; the CSP allows only files from /ui/.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
