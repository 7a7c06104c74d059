#!/usr/bin/env node
// The `trellis` command. Trellis itself needs Node.js 24 or newer (native type stripping,
// node:sqlite). This launcher is plain JavaScript that any Node since 14 can read: on an older
// Node it runs itself again on a Node.js 24+ (TRELLIS_NODE, or the pinned one npm installed next
// to the package as the `node` dependency), passing arguments, stdio, signals and the exit code
// through. On a new enough Node it runs Trellis in this process, with no second start-up.
import * as nodeModule from 'node:module';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MINIMUM_MAJOR = 24;
const RELAUNCHED = 'TRELLIS_LAUNCHED_BY';
const self = realpathSync(fileURLToPath(import.meta.url));
const root = dirname(dirname(self));

function majorOf(version) {
  return Number(String(version).replace(/^v/, '').split('.')[0]);
}

/** A Node.js 24+ to run on: TRELLIS_NODE, the package's own `node` dependency, wherever npm put it. */
function findNode() {
  if (process.env.TRELLIS_NODE) return process.env.TRELLIS_NODE;
  const binary = process.platform === 'win32' ? 'node.exe' : 'node';
  const candidates = [join(root, 'node_modules', 'node', 'bin', binary)];
  try {
    // Installed as a dependency of something else, npm may have hoisted `node` above the package.
    const require = nodeModule.createRequire(join(root, 'package.json'));
    candidates.push(join(dirname(require.resolve('node/package.json')), 'bin', binary));
  } catch {
    // not installed: reported below
  }
  return candidates.find((path) => existsSync(path));
}

function fail(message) {
  process.stderr.write(`trellis: ${message}\n`);
  process.exit(1);
}

function relaunch() {
  if (process.env[RELAUNCHED]) {
    fail(`${process.execPath} is Node.js ${process.version}; Trellis needs Node.js ${MINIMUM_MAJOR} or newer (set TRELLIS_NODE to one)`);
  }
  const node = findNode();
  if (!node) {
    fail(`this Node.js is ${process.version} and Trellis needs ${MINIMUM_MAJOR} or newer; run \`npm ci\` in ${root} to install the pinned one, or set TRELLIS_NODE to a Node.js ${MINIMUM_MAJOR}+ binary`);
  }
  const child = spawn(node, [self, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, [RELAUNCHED]: process.execPath },
  });
  // Signals sent to this process go to Trellis (a terminal's Ctrl-C reaches both; `serve` treats
  // a repeated signal as one).
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  const signals = process.platform === 'win32' ? ['SIGINT', 'SIGTERM'] : ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
  for (const signal of signals) process.on(signal, forward);
  child.once('error', (err) => fail(`cannot start ${node}: ${err.message}`));
  child.once('exit', (code, signal) => {
    if (signal) {
      // End the same way, so that a shell or supervisor sees the signal.
      for (const s of signals) process.removeListener(s, forward);
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code === null ? 1 : code);
  });
}

/** `npm run trellis -- …` runs in the package folder; relative paths mean the caller's folder. */
function callerFolder() {
  const env = process.env;
  if (env.npm_lifecycle_event === 'trellis' && env.INIT_CWD && env.npm_package_json && dirname(env.npm_package_json) === root) {
    const folder = env.INIT_CWD;
    // Commands this one starts are not `npm run trellis` themselves.
    delete env.INIT_CWD;
    delete env.npm_lifecycle_event;
    return folder;
  }
  return undefined;
}

/**
 * Installed from a package (under node_modules), Node will not strip types from the sources;
 * strip them here, for this package's own src/ only.
 */
function stripTypesUnderNodeModules() {
  if (!root.split(sep).includes('node_modules')) return;
  const sources = pathToFileURL(join(root, 'src')).href + '/';
  // The API is marked experimental in Node 24; say so once in the docs, not on every run.
  const emitWarning = process.emitWarning;
  process.emitWarning = (warning, ...rest) => (String(warning).includes('stripTypeScriptTypes') ? undefined : emitWarning.call(process, warning, ...rest));
  nodeModule.registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith(sources) || !url.endsWith('.ts')) return nextLoad(url, context);
      const source = nodeModule.stripTypeScriptTypes(readFileSync(fileURLToPath(url), 'utf8'));
      return { format: 'module', source, shortCircuit: true };
    },
  });
}

if (majorOf(process.versions.node) >= MINIMUM_MAJOR) {
  const folder = callerFolder();
  if (folder) process.chdir(folder);
  delete process.env[RELAUNCHED];
  // The compile cache keeps the stripped and compiled modules between runs: a client command
  // starts in a third of the CPU time.
  if (typeof nodeModule.enableCompileCache === 'function') nodeModule.enableCompileCache();
  stripTypesUnderNodeModules();
  await import('../src/main.ts');
} else {
  relaunch();
}
