// The `trellis` client commands end to end against a real Trellis: push/pull, attach and discover
// (checked with oras and regctl as independent readers, and the reverse), copy of an index with
// referrers and a nested-namespace member through a layout directory and a tar, an interrupted
// copy resumed, -o json schemas, exit codes and error messages.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import {
  OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptorOf, getBlob, getManifest, listReferrers, listTags, pushBlob, pushManifest, sha256, type Built,
} from '../helpers/oci-client.ts';
import { isolatedEnv, startTrellis, trellisCli, trellisOk, within } from './run.ts';
import { pushGraph } from './fixture.ts';

const run = promisify(execFile);
let reg: TestRegistry;
let work: string;
let env: NodeJS.ProcessEnv;
let image: Built;
let child: Built;
let sbom: Built;
let sig: Built;
let bundle = '';
let bundleSig = '';

before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-client-cli-'));
  env = isolatedEnv(work);
  ({ image, child, sbom, sig, bundle, bundleSig } = await pushGraph(reg.url));
});
after(async () => {
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

const cli = (args: string[], input?: string) => trellisCli(args, { env, cwd: work, ...(input === undefined ? {} : { input }) });
const ok = (...args: string[]) => trellisOk(args, { env, cwd: work });
const json = async <T>(...args: string[]) => JSON.parse((await ok(...args, '-o', 'json')).stdout) as T;

test('push files as an artifact and pull them back; -o json', async () => {
  await writeFile(join(work, 'a.txt'), 'hello\n');
  await writeFile(join(work, 'b.bin'), randomBytes(5000));
  const pushed = await json<{ reference: string; digest: string; mediaType: string; size: number; artifactType: string; layers: { digest: string; mediaType: string; annotations: Record<string, string> }[] }>(
    'push', `${reg.host}/files/set:v1`, 'a.txt:text/plain', 'b.bin', '--artifact-type', 'application/vnd.example.files', '-a', 'team=blue');
  assert.deepEqual(Object.keys(pushed).sort(), ['artifactType', 'digest', 'layers', 'mediaType', 'reference', 'size']);
  assert.equal(pushed.reference, `${reg.host}/files/set:v1@${pushed.digest}`);
  assert.equal(pushed.layers[0]!.mediaType, 'text/plain');
  assert.equal(pushed.layers[1]!.annotations['org.opencontainers.image.title'], 'b.bin');
  const stored = await getManifest(reg.url, 'files/set', 'v1');
  assert.equal(stored.digest, pushed.digest);
  const manifest = JSON.parse(stored.bytes.toString()) as { artifactType: string; annotations: Record<string, string> };
  assert.equal(manifest.artifactType, 'application/vnd.example.files');
  assert.equal(manifest.annotations.team, 'blue');

  const pulled = await json<{ digest: string; files: { path: string; digest: string; size: number }[]; skipped: string[] }>('pull', `${reg.host}/files/set:v1`, '-d', 'out');
  assert.equal(pulled.digest, pushed.digest);
  assert.deepEqual(pulled.files.map((f) => f.path), [join('out', 'a.txt'), join('out', 'b.bin')]);
  assert.equal(await readFile(join(work, 'out/a.txt'), 'utf8'), 'hello\n');
  assert.deepEqual(await readFile(join(work, 'out/b.bin')), await readFile(join(work, 'b.bin')));
  // Quiet mode prints the digest alone, for scripts.
  assert.equal((await ok('push', `${reg.host}/files/set:v2`, 'a.txt', '-q')).stdout.trim(), sha256((await getManifest(reg.url, 'files/set', 'v2')).bytes));
});

test('trellis attach is seen by oras discover and regctl artifact list; oras attach is seen by trellis discover', async (t) => {
  await writeFile(join(work, 'scan.json'), '{"ok":true}');
  const attached = await json<{ digest: string; subject: string; artifactType: string }>('attach', `${reg.host}/src/app:v1`, 'scan.json', '--artifact-type', 'application/vnd.example.scan', '-a', 'kind=scan');
  assert.equal(attached.subject, image.digest);
  assert.ok((await listReferrers(reg.url, 'src/app', image.digest)).manifests.some((d) => d.digest === attached.digest));

  const tree = await json<{ subject: { digest: string }; referrers: { digest: string; artifactType: string; referrers: { digest: string }[] }[]; filteredBy: null }>('discover', `${reg.host}/src/app:v1`);
  assert.equal(tree.subject.digest, image.digest);
  assert.deepEqual(tree.referrers.map((r) => r.digest).sort(), [attached.digest, sbom.digest].sort());
  assert.deepEqual(tree.referrers.find((r) => r.digest === sbom.digest)!.referrers.map((r) => r.digest), [sig.digest], 'recursive');
  assert.equal(tree.filteredBy, null);
  const text = (await ok('discover', `${reg.host}/src/app:v1`)).stdout;
  assert.match(text, new RegExp(`└── ${sig.digest} application/vnd.example.sig kind=sig`));
  const byType = await json<{ referrers: { digest: string }[] }>('discover', `${reg.host}/src/app:v1`, '--artifact-type', 'application/vnd.example.scan');
  assert.deepEqual(byType.referrers.map((r) => r.digest), [attached.digest]);
  const table = (await ok('discover', `${reg.host}/src/app:v1`, '-o', 'table')).stdout.trimEnd().split('\n');
  assert.match(table[0]!, /^DIGEST\s+ARTIFACT TYPE\s+SIZE\s+DEPTH\s+SUBJECT$/);
  assert.equal(table.length, 4);

  const oras = requirePeer(t, 'oras');
  const regctl = requirePeer(t, 'regctl');
  if (!oras || !regctl) return;
  const orasTree = JSON.parse((await run(oras, ['discover', '--plain-http', '--format', 'json', `${reg.host}/src/app:v1`], { env })).stdout) as { referrers: { digest: string }[] };
  assert.ok(orasTree.referrers.some((r) => r.digest === attached.digest));
  await run(regctl, ['registry', 'set', reg.host, '--tls', 'disabled'], { env });
  const listed = JSON.parse((await run(regctl, ['artifact', 'list', '--format', '{{json .}}', `${reg.host}/src/app:v1`], { env })).stdout) as { descriptors: { digest: string }[] };
  assert.ok(listed.descriptors.some((d) => d.digest === attached.digest));
  const regTree = (await run(regctl, ['artifact', 'tree', `${reg.host}/src/app:v1`], { env })).stdout;
  assert.ok(regTree.includes(attached.digest));

  const orasAttached = JSON.parse((await run(oras, ['attach', '--plain-http', '--format', 'json', '--artifact-type', 'application/vnd.example.oras', `${reg.host}/src/app:v1`, 'scan.json'], { env, cwd: work })).stdout) as { digest: string };
  const after = await json<{ referrers: { digest: string; artifactType: string }[] }>('discover', `${reg.host}/src/app:v1`, '--artifact-type', 'application/vnd.example.oras');
  assert.deepEqual(after.referrers.map((r) => r.digest), [orasAttached.digest]);
});

test('q_ filters: Trellis applies them on the server; query searches the registry', async () => {
  const res = await cli(['discover', `${reg.host}/src/app:v1`, '--filter', 'q_annotations__kind__eq=sbom', '-o', 'json']);
  assert.equal(res.code, 0, res.stderr);
  const out = JSON.parse(res.stdout) as { referrers: { digest: string }[]; filteredBy: string };
  assert.deepEqual([out.referrers.map((r) => r.digest), out.filteredBy], [[sbom.digest], 'server']);
  assert.doesNotMatch(res.stderr, /applied here/);
  const q = JSON.parse((await ok('query', `${reg.host}/src/app:v1`, 'q_layers__mediatype__eq=application/vnd.oci.empty.v1+json', 'q_annotations__kind__ne=sbom', '-o', 'json')).stdout) as { results: { digest: string }[]; filteredBy: string };
  assert.deepEqual([q.results.map((r) => r.digest), q.filteredBy], [[], 'server'], 'the scan referrer has a file layer; sbom is excluded');
  const wide = JSON.parse((await ok('query', reg.host, 'q_annotations__kind__eq=sig', '-o', 'json')).stdout) as { results: { repository: string; digest: string }[] };
  assert.deepEqual(wide.results.map((r) => [r.repository, r.digest]), [['src/app', sig.digest]]);
  const refs = JSON.parse((await ok('query', reg.host, '--referrers', 'q_artifacttype__eq=application/vnd.example.sbom', '-o', 'json')).stdout) as { results: { repository: string; digest: string }[] };
  assert.ok(refs.results.some((r) => r.repository === 'src/app' && r.digest === sbom.digest));
  assert.equal((await cli(['discover', `${reg.host}/src/app:v1`, '--filter', 'kind=sbom'])).code, 2);
  assert.equal((await cli(['query', reg.host, 'q_size__gt=big'])).code, 2, 'malformed filters are refused before sending');
});

test('copy an index with referrers and a nested-namespace member: registry -> layout dir -> tar -> registry, digests unchanged', async () => {
  const copied = await json<{ tags: number; manifests: number; blobs: number; skippedBlobs: number; bytes: number; seconds: number; source: string; destination: string }>(
    'copy', '-r', `${reg.host}/src/app`, 'oci:./lay');
  assert.deepEqual(Object.keys(copied).sort(), ['blobs', 'bytes', 'destination', 'manifests', 'seconds', 'skippedBlobs', 'source', 'tags']);
  assert.equal(copied.tags, 2);
  await readFile(join(work, 'lay/api/oci-layout')); // the nested member is a nested layout
  await ok('copy', '-r', 'oci:./lay', './lay.tar');
  await ok('copy', '-r', './lay.tar', `${reg.host}/back/app`);
  assert.deepEqual((await listTags(reg.url, 'back/app')).tags, ['bundle', 'v1']);
  assert.equal((await getManifest(reg.url, 'back/app', 'v1')).digest, image.digest);
  assert.equal((await getManifest(reg.url, 'back/app', 'bundle')).digest, bundle);
  assert.equal((await getManifest(reg.url, 'back/app/api', child.digest)).status, 200, 'the nested member went to back/app/api');
  assert.deepEqual((await listReferrers(reg.url, 'back/app', image.digest)).manifests.map((d) => d.digest).includes(sbom.digest), true);
  assert.deepEqual((await listReferrers(reg.url, 'back/app', sbom.digest)).manifests.map((d) => d.digest), [sig.digest]);
  assert.deepEqual((await listReferrers(reg.url, 'back/app', bundle)).manifests.map((d) => d.digest), [bundleSig]);
  // One tag to another name; without -r no referrers.
  await ok('copy', `${reg.host}/src/app:v1`, `${reg.host}/single/app:renamed`);
  assert.deepEqual((await listTags(reg.url, 'single/app')).tags, ['renamed']);
  assert.deepEqual((await listReferrers(reg.url, 'single/app', image.digest)).manifests, []);
});

test('an interrupted copy resumes without sending the finished blobs again (registry and layout destinations)', async () => {
  const layers = Array.from({ length: 6 }, () => randomBytes(200_000));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
  for (const blob of [config, ...layers]) assert.equal((await pushBlob(reg.url, 'big/app', blob)).status, 201);
  const manifest = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptorOf(OCI_CONFIG, config), layers: layers.map((l) => descriptorOf(OCI_LAYER, l)) };
  assert.equal((await pushManifest(reg.url, 'big/app', 'v1', manifest)).status, 201);
  for (const destination of [`${reg.host}/resumed/app:v1`, 'oci:./resumed-layout:v1']) {
    const interrupted = await trellisCli(['copy', `${reg.host}/big/app:v1`, destination, '--concurrency', '1'], { env: { ...env, TRELLIS_COPY_ABORT_AFTER_BLOBS: '3' }, cwd: work });
    assert.equal(interrupted.code, 1, interrupted.stderr);
    assert.match(interrupted.stderr, /stopped after 3 blobs/);
    const resumed = await json<{ blobs: number; skippedBlobs: number; manifests: number }>('copy', `${reg.host}/big/app:v1`, destination);
    assert.deepEqual([resumed.blobs, resumed.skippedBlobs, resumed.manifests], [4, 3, 1], destination);
  }
  assert.equal((await getManifest(reg.url, 'resumed/app', 'v1')).digest, sha256(JSON.stringify(manifest)));
});

test('Ctrl-C during a copy to a layout directory keeps what was copied and leaves no scratch files', async (t) => {
  // A source whose last layer never finishes: the copy is mid-way, for certain, when interrupted.
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
  const layers = [randomBytes(100_000), randomBytes(100_000), randomBytes(100_000)];
  const blobs = new Map([config, ...layers].map((b) => [sha256(b), b]));
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptorOf(OCI_CONFIG, config), layers: layers.map((l) => descriptorOf(OCI_LAYER, l)) }));
  const stuck = sha256(layers[2]!);
  let reachedStuck: () => void;
  const reached = new Promise<void>((resolve) => (reachedStuck = resolve));
  const source = createServer((req, res) => {
    const digest = req.url!.split('/').pop()!;
    if (req.url!.includes('/manifests/')) return res.writeHead(200, { 'Content-Type': OCI_MANIFEST, 'Content-Length': manifest.length, 'Docker-Content-Digest': sha256(manifest) }).end(manifest);
    const blob = blobs.get(digest);
    if (!req.url!.includes('/blobs/') || !blob) return res.writeHead(404, { 'Content-Length': 0 }).end();
    res.writeHead(200, { 'Content-Length': blob.length });
    if (digest !== stuck) return res.end(blob);
    res.write(blob.subarray(0, 10));
    reachedStuck();
  });
  await new Promise<void>((resolve) => source.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    source.closeAllConnections();
    source.close();
  });
  const tmp = await mkdtemp(join(work, 'tmp-'));
  const from = `127.0.0.1:${(source.address() as AddressInfo).port}/slow/app:v1`;
  const copying = startTrellis(['copy', from, join(work, 'interrupted-layout'), '--concurrency', '1', '-q'], { ...env, TMPDIR: tmp });
  assert.equal(await within(reached, 20_000), undefined, copying.output());
  copying.child.kill('SIGINT');
  assert.equal(await within(copying.exited, 20_000), 130, copying.output());
  assert.deepEqual((await readdir(tmp)).filter((f) => f.startsWith('trellis-')), [], 'no scratch data directory left behind');
  // What was copied before the interruption is kept: the blobs that were complete.
  await readFile(join(work, 'interrupted-layout/blobs/sha256', sha256(layers[0]!).slice(7)));
});

test('copy takes a layer that lists urls when the source holds it, and skips it only when it does not', async () => {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' }));
  const [held, hosted, absent] = [randomBytes(1000), randomBytes(1000), randomBytes(1000)];
  for (const blob of [config, held, hosted]) assert.equal((await pushBlob(reg.url, 'urls/app', blob)).status, 201);
  const urls = ['https://example.invalid/layer'];
  const manifest = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptorOf(OCI_CONFIG, config),
    layers: [descriptorOf(OCI_LAYER, held), descriptorOf(OCI_LAYER, hosted, { urls }), descriptorOf(OCI_LAYER, absent, { urls })],
  };
  assert.equal((await pushManifest(reg.url, 'urls/app', 'v1', manifest)).status, 201);
  for (const destination of [`${reg.host}/urls/copied:v1`, 'oci:./urls-layout:v1']) {
    const copied = await json<{ blobs: number; skippedBlobs: number; manifests: number }>('copy', `${reg.host}/urls/app:v1`, destination);
    assert.deepEqual([copied.blobs, copied.skippedBlobs, copied.manifests], [3, 1, 1], destination);
  }
  assert.deepEqual((await getBlob(reg.url, 'urls/copied', sha256(hosted))).bytes, hosted, 'the layer with urls the source held');
  assert.equal((await getBlob(reg.url, 'urls/copied', sha256(absent))).status, 404);
  await readFile(join(work, 'urls-layout/blobs/sha256', sha256(hosted).slice(7)));
});

test('tags, repos, inspect, tag, delete with -o json', async () => {
  assert.deepEqual(await json('tags', `${reg.host}/src/app`), { repository: `${reg.host}/src/app`, tags: ['bundle', 'v1'] });
  const repos = await json<{ registry: string; repositories: string[] }>('repos', reg.host, '--prefix', 'src/app');
  assert.deepEqual(repos, { registry: reg.host, repositories: ['src/app/api'] });
  assert.deepEqual((await json<{ repositories: string[] }>('repos', reg.host, '--prefix', 'src')).repositories, ['src/app', 'src/app/api']);
  const inspected = await json<{ reference: string; descriptor: { digest: string; mediaType: string; size: number }; manifest: { layers: unknown[] }; config: { os: string } }>('inspect', `${reg.host}/src/app:v1`, '--config');
  assert.deepEqual(Object.keys(inspected).sort(), ['config', 'descriptor', 'manifest', 'reference']);
  assert.equal(inspected.descriptor.digest, image.digest);
  assert.equal(inspected.config.os, 'linux');
  assert.deepEqual(await json('inspect', `${reg.host}/src/app@${sig.digest}`, '--descriptor'), {
    mediaType: OCI_MANIFEST, digest: sig.digest, size: sig.bytes.length, artifactType: 'application/vnd.example.sig', annotations: { kind: 'sig' },
  });
  assert.deepEqual(await json('tag', `${reg.host}/src/app:v1`, 'stable', 'latest'), { repository: `${reg.host}/src/app`, digest: image.digest, tags: ['stable', 'latest'] });
  assert.equal((await getManifest(reg.url, 'src/app', 'stable')).digest, image.digest);
  await ok('push', `${reg.host}/tmp/del:x`, '--artifact-type', 'application/vnd.example.empty');
  const deleted = await json<{ deleted: string; digest: string }>('delete', `${reg.host}/tmp/del:x`, '--force');
  assert.equal((await getManifest(reg.url, 'tmp/del', deleted.digest)).status, 404);
});

test('exit codes and error messages', async () => {
  const usage = await cli(['copy', 'not-a-reference', 'oci:./x']);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /<registry>\/<repository>/);
  assert.equal((await cli(['frobnicate'])).code, 2);
  const missing = await cli(['inspect', `${reg.host}/src/app:nope`]);
  assert.equal(missing.code, 3);
  assert.match(missing.stderr, /not found/);
  assert.equal((await cli(['tags', `${reg.host}/no/such/repo`])).code, 3);
  // https against a plain-HTTP registry: say what to do.
  const tls = await cli(['tags', '--no-plain-http', `${reg.host}/src/app`]);
  assert.equal(tls.code, 5);
  assert.match(tls.stderr, /TLS handshake failed.*--plain-http/);
  const refused = await cli(['tags', '127.0.0.1:1/x']);
  assert.equal(refused.code, 5);
  const help = await cli(['discover', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Examples:\n\s+\$ trellis discover/);
});

test('every client command has --help with examples; completion scripts name the commands', async () => {
  for (const command of ['login', 'logout', 'push', 'pull', 'attach', 'discover', 'copy', 'tags', 'repos', 'inspect', 'tag', 'delete', 'query', 'completion']) {
    const { stdout } = await ok(command, '--help');
    assert.match(stdout, /Examples:/, command);
  }
  const top = (await ok('--help')).stdout;
  for (const command of ['serve', 'fsck', 'reindex', 'gc', 'layout', 'copy', 'discover']) assert.match(top, new RegExp(`\\n  ${command}`));
  for (const shell of ['bash', 'zsh', 'fish']) assert.match((await ok('completion', shell)).stdout, /discover/);
  const { stdout } = await run('bash', ['-c', `source <(node ${JSON.stringify(join(import.meta.dirname, '../../bin/trellis.mjs'))} completion bash); COMP_WORDS=(trellis disc); COMP_CWORD=1; _trellis; echo "\${COMPREPLY[@]}"`], { env });
  assert.equal(stdout.trim(), 'discover');
});


test('progress bars on a terminal only, and not with -q', async (t) => {
  await writeFile(join(work, 'big.bin'), randomBytes(3 << 20));
  const quietPipe = await cli(['push', `${reg.host}/progress/app:v1`, 'big.bin']);
  assert.equal(quietPipe.code, 0);
  assert.equal(quietPipe.stderr, '', 'nothing on stderr when it is not a terminal');
  const script = (() => {
    try {
      return execFileSync('sh', ['-c', 'command -v script'], { encoding: 'utf8' }).trim();
    } catch {
      return '';
    }
  })();
  if (!script) return t.skip('util-linux script(1) is not installed: no way to give the CLI a terminal');
  const bin = join(import.meta.dirname, '../../bin/trellis.mjs');
  const onTty = async (args: string) => (await run(script, ['-qfec', `${process.execPath} ${bin} ${args}`, '/dev/null'], { env, cwd: work })).stdout;
  // New bytes each time: a blob the registry already has is not sent, so it shows no progress.
  await writeFile(join(work, 'big.bin'), randomBytes(3 << 20));
  const shown = await onTty(`push ${reg.host}/progress/app:v2 big.bin`);
  assert.match(shown, /total .*MiB \/ 3\.0 MiB .*\/s/);
  await writeFile(join(work, 'big.bin'), randomBytes(3 << 20));
  const quiet = await onTty(`push -q ${reg.host}/progress/app:v3 big.bin`);
  assert.doesNotMatch(quiet, /total/);
  assert.match(quiet, /^sha256:[0-9a-f]{64}\s*$/);
});
