// login/logout and the token flow: a small front that demands a Bearer token (issued by its own
// token endpoint for alice:secret) in front of a real Trellis. Credentials land in the Docker
// config under DOCKER_CONFIG, or go through a `docker-credential-test` helper found on PATH.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { trellisCli } from './run.ts';

let reg: TestRegistry;
let front: Server;
let host = '';
let work: string;
const TOKEN = 'token-for-alice';

before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-auth-cli-'));
  front = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (req.url?.startsWith('/token')) {
      const ok = req.headers.authorization === `Basic ${Buffer.from('alice:secret').toString('base64')}`;
      res.writeHead(ok ? 200 : 401, { 'Content-Type': 'application/json' });
      return res.end(ok ? JSON.stringify({ token: TOKEN }) : '{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}');
    }
    if (req.headers.authorization !== `Bearer ${TOKEN}`) {
      res.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${host}/token",service="test",scope="repository:x:pull"`, 'Content-Type': 'application/json' });
      return res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
    }
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && k !== 'host' && k !== 'authorization' && k !== 'connection') headers[k] = v;
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    const answer = await fetch(`${reg.url}${req.url}`, { method: req.method ?? 'GET', headers, ...(body && req.method !== 'GET' && req.method !== 'HEAD' ? { body } : {}) });
    const out: Record<string, string> = {};
    answer.headers.forEach((v, k) => {
      if (k !== 'content-encoding' && k !== 'transfer-encoding' && k !== 'connection') out[k] = v;
    });
    res.writeHead(answer.status, out);
    res.end(Buffer.from(await answer.arrayBuffer()));
  });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', () => r()));
  const address = front.address();
  host = `127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
after(async () => {
  front.close();
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

function envFor(dir: string, extraPath = ''): NodeJS.ProcessEnv {
  return { ...process.env, HOME: dir, DOCKER_CONFIG: join(dir, 'docker'), PATH: `${extraPath ? `${extraPath}:` : ''}${process.env.PATH ?? ''}` };
}

test('401 names the login command; login stores credentials in config.json; the token flow works; logout removes them', async () => {
  const dir = join(work, 'plain');
  await mkdir(dir);
  const env = envFor(dir);
  const denied = await trellisCli(['tags', `${host}/x`], { env });
  assert.equal(denied.code, 4);
  assert.match(denied.stderr, new RegExp(`401 unauthorized.*trellis login ${host}`));

  const wrong = await trellisCli(['login', host, '-u', 'alice', '--password-stdin'], { env, input: 'nope\n' });
  assert.equal(wrong.code, 4, wrong.stderr);
  await assert.rejects(readFile(join(dir, 'docker/config.json')), 'nothing stored for bad credentials');

  const login = await trellisCli(['login', host, '-u', 'alice', '--password-stdin'], { env, input: 'secret\n' });
  assert.equal(login.code, 0, login.stderr);
  const config = JSON.parse(await readFile(join(dir, 'docker/config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
  assert.equal(Buffer.from(config.auths[host]!.auth, 'base64').toString(), 'alice:secret');

  await writeFile(join(dir, 'f.txt'), 'x');
  const push = await trellisCli(['push', `${host}/x:v1`, 'f.txt', '-q'], { env, cwd: dir });
  assert.equal(push.code, 0, push.stderr);
  const pull = await trellisCli(['pull', `${host}/x:v1`, '-d', 'pulled', '-q'], { env, cwd: dir });
  assert.equal(pull.code, 0, pull.stderr);
  assert.equal(await readFile(join(dir, 'pulled/f.txt'), 'utf8'), 'x', 'blob downloads carry the token too');
  const tags = await trellisCli(['tags', `${host}/x`, '-o', 'json'], { env });
  assert.deepEqual(JSON.parse(tags.stdout), { repository: `${host}/x`, tags: ['v1'] });

  const logout = await trellisCli(['logout', host], { env });
  assert.equal(logout.code, 0, logout.stderr);
  const after = JSON.parse(await readFile(join(dir, 'docker/config.json'), 'utf8')) as { auths: Record<string, unknown> };
  assert.equal(after.auths[host], undefined);
  assert.equal((await trellisCli(['tags', `${host}/x`], { env })).code, 4);
});

test('with a credential helper (credsStore), login, use and logout go through docker-credential-<name>', async () => {
  const dir = join(work, 'helper');
  const bin = join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  const store = join(dir, 'helper-store.json');
  // A tiny helper speaking the docker-credential protocol, keeping secrets in one JSON file.
  await writeFile(join(bin, 'docker-credential-test'), `#!/bin/sh
exec "${process.execPath}" -e '
const fs = require("fs"); const file = ${JSON.stringify(store)};
const db = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {};
const input = fs.readFileSync(0, "utf8").trim(); const action = process.argv[1];
if (action === "store") { const c = JSON.parse(input); db[c.ServerURL] = c; fs.writeFileSync(file, JSON.stringify(db)); }
else if (action === "get") { if (!db[input]) { process.stdout.write("credentials not found in native keychain"); process.exit(1); } process.stdout.write(JSON.stringify(db[input])); }
else if (action === "erase") { delete db[input]; fs.writeFileSync(file, JSON.stringify(db)); }
' "$1"
`);
  await chmod(join(bin, 'docker-credential-test'), 0o755);
  await mkdir(join(dir, 'docker'), { recursive: true });
  await writeFile(join(dir, 'docker/config.json'), JSON.stringify({ credsStore: 'test' }));
  const env = envFor(dir, bin);

  const login = await trellisCli(['login', host, '-u', 'alice', '-p', 'secret'], { env });
  assert.equal(login.code, 0, login.stderr);
  assert.match(login.stderr, /docker-credential-test/);
  const saved = JSON.parse(await readFile(store, 'utf8')) as Record<string, { Username: string; Secret: string }>;
  assert.deepEqual(saved[host], { ServerURL: host, Username: 'alice', Secret: 'secret' });
  const config = JSON.parse(await readFile(join(dir, 'docker/config.json'), 'utf8')) as { auths: Record<string, Record<string, string>>; credsStore: string };
  assert.equal(config.credsStore, 'test');
  assert.deepEqual(config.auths[host], {}, 'no secret in config.json');

  const repos = await trellisCli(['repos', host, '-o', 'json'], { env });
  assert.equal(repos.code, 0, repos.stderr);

  assert.equal((await trellisCli(['logout', host], { env })).code, 0);
  assert.deepEqual(JSON.parse(await readFile(store, 'utf8')), {});
  assert.equal((await trellisCli(['repos', host], { env })).code, 4);
});
