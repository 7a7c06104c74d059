#!/usr/bin/env node
// Records the commit a package, binary or container image is built from in build-info.json, so
// that `trellis --version` names it where there is no git checkout. Runs before `npm pack`, in the
// container build (COMMIT given as an argument there: the build context has no .git) and in
// `npm run build:binary`. Plain JavaScript: runs on any Node.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(dirname(fileURLToPath(import.meta.url)));
let commit = process.argv[2] || process.env.TRELLIS_COMMIT || '';
if (!commit) {
  try {
    commit = execFileSync('git', ['-C', root, 'rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const changed = execFileSync('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (changed) commit += '-dirty';
  } catch {
    commit = 'unknown';
  }
}
const info = { commit, builtAt: new Date().toISOString() };
writeFileSync(join(root, 'build-info.json'), `${JSON.stringify(info, null, 2)}\n`);
process.stdout.write(`build-info.json: commit ${commit}\n`);
