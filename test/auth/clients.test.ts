// Real clients sign in through the Docker token flow over HTTPS (a self-signed certificate made at
// test time and trusted through SSL_CERT_FILE, so TLS is verified), then push and pull; a
// pull-only user is refused a push, and nothing needs anonymous access.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requirePeer } from '../helpers/peers.ts';
import { PASSWORD, startAuthRegistry } from './setup.ts';

const execFileAsync = promisify(execFile);

const AUTH = {
  policies: {
    'apps/**': { users: { ci: ['pull', 'push', 'delete'], reader: ['pull'] } },
    'hidden/**': { users: { ci: ['pull', 'push'] } },
  },
  token: { service: 'trellis-clients', expirySeconds: 120 },
};

async function tlsRegistry(t: TestContext) {
  const openssl = requirePeer(t, 'openssl');
  if (!openssl) return undefined;
  const { mkdtemp } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const certDir = await mkdtemp(join(tmpdir(), 'trellis-tls-'));
  const cert = join(certDir, 'cert.pem');
  const key = join(certDir, 'key.pem');
  await execFileAsync(openssl, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-keyout', key, '-out', cert, '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
  ], { timeout: 30_000 });
  const r = await startAuthRegistry(t, { users: ['ci', 'reader'], auth: AUTH, settings: { tlsCert: cert, tlsKey: key } });
  const { rm } = await import('node:fs/promises');
  t.after(() => rm(certDir, { recursive: true, force: true }));
  const host = r.reg.host;
  const home = join(r.dir, 'home');
  await mkdir(home, { recursive: true });
  const env = {
    ...process.env, HOME: home, DOCKER_CONFIG: join(home, '.docker'), REGCTL_CONFIG: join(home, 'regctl.json'),
    XDG_RUNTIME_DIR: home, REGISTRY_AUTH_FILE: join(home, 'containers-auth.json'), SSL_CERT_FILE: cert,
    NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1',
  };
  const run = async (bin: string, args: string[]) => {
    const child = execFileAsync(bin, args, { cwd: r.dir, env, timeout: 60_000, maxBuffer: 16 << 20 });
    child.child.stdin?.end();
    try {
      return (await child).stdout;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(`${bin.split('/').pop()} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
    }
  };
  const fails = async (bin: string, args: string[]) => {
    try {
      await run(bin, args);
    } catch (err) {
      return (err as Error).message;
    }
    return assert.fail(`${bin} ${args.join(' ')} should have failed`);
  };
  /** A plain HTTPS request that verifies the certificate. */
  const https = (path: string, auth?: string) => new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    readFile(cert).then((ca) => {
      const req = request(`${r.base}${path}`, { ca, headers: auth ? { Authorization: auth } : {} }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      req.on('error', reject).end();
    }, reject);
  });
  return { r, host, run, fails, https, home };
}

test('real clients log in through the token flow over verified TLS', { timeout: 300_000 }, async (t) => {
  const oras = requirePeer(t, 'oras');
  const regctl = requirePeer(t, 'regctl');
  const crane = requirePeer(t, 'crane');
  const skopeo = requirePeer(t, 'skopeo');
  if (!oras || !regctl || !crane || !skopeo) return;
  const session = await tlsRegistry(t);
  if (!session) return;
  const { r, host, run, fails, https } = session;
  assert.match(r.base, /^https:\/\/127\.0\.0\.1:\d+$/);

  await t.test('GET /v2/ asks for credentials with a Bearer challenge', async () => {
    const answer = await https('/v2/');
    assert.equal(answer.status, 401);
    assert.equal(answer.headers['www-authenticate'], `Bearer realm="${r.base}/v2/_trellis/token",service="trellis-clients"`);
    assert.equal((await https('/v2/', r.basic('ci'))).status, 200);
  });

  await t.test('crane auth login, then append, copy, list and catalog', async () => {
    await run(crane, ['auth', 'login', host, '-u', 'ci', '-p', PASSWORD]);
    await writeFile(join(r.dir, 'hello.txt'), 'hello from crane\n');
    await run('tar', ['-cf', join(r.dir, 'layer.tar'), '-C', r.dir, 'hello.txt']);
    await run(crane, ['append', '-f', join(r.dir, 'layer.tar'), '-t', `${host}/apps/base:v1`, '--oci-empty-base']);
    await run(crane, ['copy', `${host}/apps/base:v1`, `${host}/hidden/base:v1`]);
    assert.deepEqual((await run(crane, ['ls', `${host}/apps/base`])).trim().split('\n'), ['v1']);
    assert.match(await run(crane, ['digest', `${host}/apps/base:v1`]), /^sha256:[a-f0-9]{64}\s*$/);
  });

  await t.test('oras login, push and pull an artifact', async () => {
    await run(oras, ['login', host, '-u', 'ci', '-p', PASSWORD]);
    await writeFile(join(r.dir, 'note.txt'), 'pushed by oras\n');
    await run(oras, ['push', `${host}/apps/oras:v1`, '--artifact-type', 'application/vnd.example.note', 'note.txt']);
    await mkdir(join(r.dir, 'out'));
    await run(oras, ['pull', `${host}/apps/oras:v1`, '-o', 'out']);
    assert.equal(await readFile(join(r.dir, 'out', 'note.txt'), 'utf8'), 'pushed by oras\n');
    await run(oras, ['logout', host]);
    await run(oras, ['login', host, '-u', 'reader', '-p', PASSWORD]);
    const refused = await fails(oras, ['push', `${host}/apps/oras:v2`, '--artifact-type', 'application/vnd.example.note', 'note.txt']);
    assert.match(refused, /denied|403|unauthorized|401/i);
    assert.match(await fails(oras, ['login', host, '-u', 'ci', '-p', 'wrong']), /401|unauthorized/i);
  });

  await t.test('regctl registry login, then copy and read', async () => {
    await run(regctl, ['registry', 'login', host, '-u', 'ci', '-p', PASSWORD]);
    await run(regctl, ['image', 'copy', `${host}/apps/base:v1`, `${host}/apps/regctl:v1`]);
    assert.match(await run(regctl, ['manifest', 'get', `${host}/apps/regctl:v1`, '--format', '{{.GetDescriptor.Digest}}']), /^sha256:/);
    assert.deepEqual((await run(regctl, ['tag', 'ls', `${host}/apps/regctl`])).trim().split('\n'), ['v1']);
  });

  await t.test('skopeo --creds copies and inspects; a reader cannot push', async () => {
    const creds = `ci:${PASSWORD}`;
    await run(skopeo, ['copy', '--src-creds', creds, '--dest-creds', creds, `docker://${host}/apps/base:v1`, `docker://${host}/apps/skopeo:v1`]);
    const inspected = JSON.parse(await run(skopeo, ['inspect', '--creds', `reader:${PASSWORD}`, `docker://${host}/apps/skopeo:v1`])) as { Digest: string };
    assert.match(inspected.Digest, /^sha256:/);
    const refused = await fails(skopeo, ['copy', '--src-creds', `reader:${PASSWORD}`, '--dest-creds', `reader:${PASSWORD}`, `docker://${host}/apps/base:v1`, `docker://${host}/apps/by-reader:v1`]);
    assert.match(refused, /denied|unauthorized|authentication required/i);
    const hidden = await fails(skopeo, ['inspect', '--creds', `reader:${PASSWORD}`, `docker://${host}/hidden/base:v1`]);
    assert.match(hidden, /unauthorized|denied|authentication required/i);
  });

  await t.test('the catalog shows a reader only what it may pull', async () => {
    // oras and crane share the Docker config file: the last login wins.
    await run(crane, ['auth', 'login', host, '-u', 'ci', '-p', PASSWORD]);
    const listed = (await run(crane, ['catalog', host])).trim().split('\n');
    assert.ok(listed.includes('hidden/base'), `ci sees hidden/base: ${listed.join(' ')}`);
    await run(crane, ['auth', 'login', host, '-u', 'reader', '-p', PASSWORD]);
    const readerView = (await run(crane, ['catalog', host])).trim().split('\n');
    assert.deepEqual(readerView, ['apps/base', 'apps/oras', 'apps/regctl', 'apps/skopeo']);
  });
});
