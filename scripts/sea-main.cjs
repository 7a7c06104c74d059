// The entry point of the single executable (`npm run build:binary`, scripts/build-binary.mjs).
// The executable is Node.js 24 with the application embedded as one asset (package.json, bin/,
// src/ and the production node_modules). On first run the asset is unpacked once into a cache
// folder named by its content (TRELLIS_CACHE_DIR, else $XDG_CACHE_HOME/trellis or
// ~/.cache/trellis), then bin/trellis.mjs runs from there in this process, as it does from a
// checkout. CommonJS and builtins only: that is what an injected main script can load.
const sea = require('node:sea');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

function cacheRoot() {
  if (process.env.TRELLIS_CACHE_DIR) return process.env.TRELLIS_CACHE_DIR;
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'trellis');
}

/** The archive: a 4-byte length, a JSON list of {path, mode, size}, then the files' bytes. */
function unpack(archive, target) {
  const indexLength = archive.readUInt32LE(0);
  const entries = JSON.parse(archive.subarray(4, 4 + indexLength).toString('utf8'));
  let offset = 4 + indexLength;
  const staging = `${target}.partial-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  for (const entry of entries) {
    const file = path.join(staging, entry.path);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, archive.subarray(offset, offset + entry.size), { mode: entry.mode });
    offset += entry.size;
  }
  try {
    fs.renameSync(staging, target);
  } catch (err) {
    // Another first run unpacked the same content at the same moment: use theirs.
    fs.rmSync(staging, { recursive: true, force: true });
    if (!fs.existsSync(target)) throw err;
  }
}

const id = sea.getAsset('id', 'utf8').trim();
const dir = path.join(cacheRoot(), id);
if (!fs.existsSync(path.join(dir, 'package.json'))) {
  try {
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    unpack(Buffer.from(sea.getRawAsset('app')), dir);
  } catch (err) {
    process.stderr.write(`trellis: cannot unpack into ${dir} (${err.code || err.message}); set TRELLIS_CACHE_DIR to a folder you can write to\n`);
    process.exit(1);
  }
}
import(pathToFileURL(path.join(dir, 'bin', 'trellis.mjs')).href).catch((err) => {
  process.stderr.write(`trellis: ${err.message}\n`);
  process.exit(1);
});
