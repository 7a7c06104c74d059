// The web UI's bundle budget (docs/ui.md): the JavaScript of dist/ui/, gzipped, must stay at or
// below BUDGET_BYTES. Run by `npm run build`; a bundle over budget fails the build.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gzipSync } from 'node:zlib';

export const BUDGET_BYTES = 250 * 1024;
const dir = resolve(import.meta.dirname, '../dist/ui/assets');

export function bundleSizes(): { file: string; bytes: number; gzipped: number }[] {
  return readdirSync(dir).filter((f) => f.endsWith('.js') || f.endsWith('.css')).map((file) => {
    const bytes = readFileSync(join(dir, file));
    return { file, bytes: bytes.length, gzipped: gzipSync(bytes, { level: 9 }).length };
  });
}

if (import.meta.main) {
  const sizes = bundleSizes();
  const js = sizes.filter((s) => s.file.endsWith('.js')).reduce((sum, s) => sum + s.gzipped, 0);
  for (const s of sizes) console.log(`ui bundle: ${s.file} ${(s.bytes / 1024).toFixed(1)} KiB, ${(s.gzipped / 1024).toFixed(1)} KiB gzipped`);
  console.log(`ui bundle: JavaScript ${(js / 1024).toFixed(1)} KiB gzipped (budget ${BUDGET_BYTES / 1024} KiB)`);
  if (js > BUDGET_BYTES) {
    console.error('ui bundle: over budget');
    process.exit(1);
  }
}
