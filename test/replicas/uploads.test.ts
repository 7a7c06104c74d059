// A chunked upload whose requests land on different replicas: POST on one, each PATCH on the next
// (asked directly, round-robin, and again through nginx), the upload's status read from yet
// another, the closing PUT with the digest on another still. The blob must be stored with a
// verified digest and then pull, byte for byte, from every replica.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { sha256 } from '../helpers/oci-client.ts';
import { startReplicas, withDiagnostics, type ReplicaSet } from '../helpers/replicas.ts';

const MiB = 1024 * 1024;

interface Step {
  method: string;
  base: string;
  status: number;
  body: string;
}

/** Uploads `blob` in `chunk`-byte PATCHes; `baseFor(i)` is where request i goes (0: POST, then PATCHes, a status GET after each, then PUT). */
async function chunkedUpload(repository: string, blob: Buffer, chunk: number, baseFor: (i: number) => string): Promise<Step[]> {
  const steps: Step[] = [];
  let request = 0;
  const send = async (method: string, path: string, init: RequestInit = {}) => {
    const base = baseFor(request++);
    const res = await fetch(new URL(path, base), { ...init, method });
    const body = await res.text();
    steps.push({ method, base, status: res.status, body: body.slice(0, 300) });
    return { res, body };
  };
  const opened = await send('POST', `/v2/${repository}/blobs/uploads/`);
  assert.equal(opened.res.status, 202, `POST: ${opened.body}`);
  let location = opened.res.headers.get('location')!;
  for (let offset = 0; offset < blob.length; offset += chunk) {
    const part = blob.subarray(offset, Math.min(offset + chunk, blob.length));
    const patched = await send('PATCH', location, {
      body: part, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + part.length - 1}`, 'Content-Length': String(part.length) },
    });
    assert.equal(patched.res.status, 202, `PATCH ${offset}-${offset + part.length - 1} at ${steps.at(-1)!.base}: ${patched.body}\n${describe(steps)}`);
    assert.equal(patched.res.headers.get('range'), `0-${offset + part.length - 1}`, `PATCH answered a Range that is not the bytes sent so far\n${describe(steps)}`);
    location = patched.res.headers.get('location')!;
    const status = await send('GET', location);
    assert.equal(status.res.status, 204, `upload status at ${steps.at(-1)!.base}: ${status.body}\n${describe(steps)}`);
    assert.equal(status.res.headers.get('range'), `0-${offset + part.length - 1}`, `upload status on another replica\n${describe(steps)}`);
  }
  const url = new URL(location, 'http://placeholder');
  url.searchParams.set('digest', sha256(blob));
  const closed = await send('PUT', `${url.pathname}${url.search}`, { headers: { 'Content-Length': '0' } });
  assert.equal(closed.res.status, 201, `PUT ?digest= at ${steps.at(-1)!.base}: ${closed.body}\n${describe(steps)}`);
  assert.equal(closed.res.headers.get('docker-content-digest'), sha256(blob));
  return steps;
}

function describe(steps: Step[]): string {
  return steps.map((s) => `  ${s.method} → ${s.base} ${s.status}`).join('\n');
}

async function assertPullsEverywhere(set: ReplicaSet, repository: string, blob: Buffer): Promise<void> {
  const digest = sha256(blob);
  for (const base of [...set.replicas.map((r) => r.url), set.url]) {
    const res = await fetch(`${base}/v2/${repository}/blobs/${digest}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(res.status, 200, `${base}: GET blob ${digest}`);
    assert.equal(bytes.length, blob.length, `${base}: size of ${digest}`);
    assert.equal(sha256(bytes), digest, `${base}: bytes of ${digest}`);
  }
}

test('chunked uploads spread over replicas', { timeout: 180_000 }, async (t) => {
  const set = await startReplicas(t);
  if (!set) return;
  const direct = (i: number) => set.replicas[i % set.replicas.length]!.url;

  await t.test('small chunks, each request on the next replica', async () => {
    const blob = randomBytes(2 * MiB + 12_345);
    await withDiagnostics(set, () => chunkedUpload('spread/small', blob, 512 * 1024, direct));
    await assertPullsEverywhere(set, 'spread/small', blob);
  });

  await t.test('chunks across multipart part boundaries, each request on the next replica', async () => {
    // 3 MiB chunks in a 13 MiB blob: the 5 MiB minimum S3 part size is crossed on different replicas.
    const blob = randomBytes(13 * MiB + 777);
    await withDiagnostics(set, () => chunkedUpload('spread/large', blob, 3 * MiB, direct));
    await assertPullsEverywhere(set, 'spread/large', blob);
  });

  await t.test('through the balancer', async () => {
    const blob = randomBytes(7 * MiB + 99);
    await withDiagnostics(set, () => chunkedUpload('spread/balanced', blob, 1 * MiB, () => set.url));
    await assertPullsEverywhere(set, 'spread/balanced', blob);
  });
});
