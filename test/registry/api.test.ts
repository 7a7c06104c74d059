// HTTP behaviour of the registry API against a real server: uploads, manifests, listings,
// referrers, deletes, mounts, and the exact headers clients depend on.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestRegistry, storageOnS3, type TestRegistry } from '../helpers/registry.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 };

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry({ maxUploadSessions: 50 });
});
after(() => reg.dispose());

/** A file of the registry's storage (the data directory, or the S3 prefix), as text. */
async function stored(key: string, registry = reg): Promise<string> {
  const bytes = await registry.registry.driver.readFile(key, 64 << 20);
  assert.ok(bytes, `${key} is in storage`);
  return bytes.toString('utf8');
}

const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function call(method: string, path: string, init: { body?: string | Buffer; headers?: Record<string, string> } = {}) {
  const res = await fetch(`${reg.url}${path}`, { method, headers: init.headers ?? {}, ...(init.body !== undefined ? { body: init.body } : {}) });
  const body = Buffer.from(await res.arrayBuffer());
  assert.ok(res.status < 500, `${method} ${path} answered ${res.status}: ${body}`);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
  return { method, status: res.status, headers: res.headers, body, json: () => JSON.parse(body.toString()) as Record<string, unknown> };
}

async function expectError(response: Awaited<ReturnType<typeof call>>, status: number, code: string) {
  assert.equal(response.status, status, response.body.toString());
  assert.equal(response.headers.get('content-type'), 'application/json');
  if (response.method === 'HEAD') return; // no body on HEAD
  const errors = response.json().errors as { code: string; message: string }[];
  assert.equal(errors[0]!.code, code);
  assert.ok(errors[0]!.message.length > 0);
}

async function pushBlob(repo: string, data: string | Buffer): Promise<string> {
  const digest = sha256(data);
  const res = await call('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });
  assert.equal(res.status, 201);
  return digest;
}

async function pushImage(repo: string, tag: string, extra: Record<string, unknown> = {}) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', tag }));
  const layer = Buffer.from(`layer of ${repo}:${tag}`);
  const manifest = {
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await pushBlob(repo, config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: await pushBlob(repo, layer), size: layer.length }],
    ...extra,
  };
  const body = JSON.stringify(manifest);
  const res = await call('PUT', `/v2/${repo}/manifests/${tag}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.equal(res.status, 201, res.body.toString());
  return { digest: sha256(body), body, size: Buffer.byteLength(body) };
}

async function pushReferrer(repo: string, subject: { digest: string; size: number }, artifactType: string, annotations: Record<string, string>) {
  await pushBlob(repo, '{}');
  const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config: EMPTY, layers: [EMPTY], subject: { mediaType: OCI_MANIFEST, ...subject }, annotations });
  const digest = sha256(body);
  const res = await call('PUT', `/v2/${repo}/manifests/${digest}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
  assert.equal(res.status, 201);
  assert.equal(res.headers.get('oci-subject'), subject.digest);
  return { digest, size: Buffer.byteLength(body) };
}

describe('blob uploads', () => {
  test('chunked upload with and without Content-Range, status, gap refused with 416', async () => {
    const data = Buffer.alloc(3000, 7);
    const open = await call('POST', '/v2/up/chunked/blobs/uploads/');
    assert.equal(open.status, 202);
    const location = open.headers.get('location')!;
    assert.match(location, /^\/v2\/up\/chunked\/blobs\/uploads\/[0-9a-f-]{36}$/);
    let res = await call('PATCH', location, { body: data.subarray(0, 1000), headers: { 'Content-Range': '0-999', 'Content-Type': 'application/octet-stream' } });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get('range'), '0-999');
    res = await call('PATCH', location, { body: data.subarray(1500, 2000), headers: { 'Content-Range': '1500-1999' } });
    await expectError(res, 416, 'RANGE_INVALID');
    assert.equal(res.headers.get('range'), '0-999');
    res = await call('PATCH', location, { body: data.subarray(1000, 2000) }); // streamed, no Content-Range
    assert.equal(res.status, 202);
    res = await call('GET', location);
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('range'), '0-1999');
    res = await call('PUT', `${location}?digest=${sha256(data)}`, { body: data.subarray(2000), headers: { 'Content-Range': '2000-2999' } });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('docker-content-digest'), sha256(data));
    const pulled = await call('GET', `/v2/up/chunked/blobs/${sha256(data)}`);
    assert.deepEqual(pulled.body, data);
  });

  test('sha512 uploads and range requests', async () => {
    const data = Buffer.from('x'.repeat(2048));
    const digest = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    const open = await call('POST', '/v2/up/sha512/blobs/uploads/?digest-algorithm=sha512');
    const res = await call('PUT', `${open.headers.get('location')}?digest=${digest}`, { body: data });
    assert.equal(res.status, 201);
    const range = await call('GET', `/v2/up/sha512/blobs/${digest}`, { headers: { Range: 'bytes=-500' } });
    assert.equal(range.status, 206);
    assert.equal(range.headers.get('content-range'), 'bytes 1548-2047/2048');
    await expectError(await call('GET', `/v2/up/sha512/blobs/${digest}`, { headers: { Range: 'bytes=5000-6000' } }), 416, 'RANGE_INVALID');
    const head = await call('HEAD', `/v2/up/sha512/blobs/${digest}`);
    assert.equal(head.headers.get('content-length'), '2048');
    assert.equal(head.headers.get('docker-content-digest'), digest);
  });

  test('a wrong digest is refused and nothing is stored', async () => {
    const wrong = sha256('something else');
    await expectError(await call('POST', `/v2/up/bad/blobs/uploads/?digest=${wrong}`, { body: 'payload' }), 400, 'DIGEST_INVALID');
    await expectError(await call('HEAD', `/v2/up/bad/blobs/${wrong}`), 404, 'BLOB_UNKNOWN');
    await expectError(await call('POST', '/v2/up/bad/blobs/uploads/?digest=sha256:XYZ', { body: 'x' }), 400, 'DIGEST_INVALID');
    await expectError(await call('POST', '/v2/up/bad/blobs/uploads/?digest-algorithm=md5'), 400, 'DIGEST_INVALID');
    await expectError(await call('GET', '/v2/up/bad/blobs/sha256:abc'), 400, 'DIGEST_INVALID');
  });

  test('unknown, malformed and foreign upload ids are 404 BLOB_UPLOAD_UNKNOWN', async () => {
    await expectError(await call('PATCH', '/v2/up/x/blobs/uploads/00000000-0000-4000-8000-000000000000', { body: 'a' }), 404, 'BLOB_UPLOAD_UNKNOWN');
    await expectError(await call('GET', '/v2/up/x/blobs/uploads/not-a-session-id'), 404, 'BLOB_UPLOAD_UNKNOWN');
    // Encoded dot segments are refused before anything is looked up.
    await expectError(await call('GET', '/v2/up/x/blobs/uploads/..%2F..%2Fetc'), 400, 'NAME_INVALID');
    const open = await call('POST', '/v2/up/owner/blobs/uploads/');
    const id = open.headers.get('location')!.split('/').pop();
    await expectError(await call('GET', `/v2/up/other/blobs/uploads/${id}`), 404, 'BLOB_UPLOAD_UNKNOWN');
    assert.equal((await call('DELETE', open.headers.get('location')!)).status, 204);
    await expectError(await call('GET', open.headers.get('location')!), 404, 'BLOB_UPLOAD_UNKNOWN');
  });

  test('Content-Length that disagrees with Content-Range is 400 and leaves the session intact', async () => {
    const open = await call('POST', '/v2/up/len/blobs/uploads/');
    const location = open.headers.get('location')!;
    await expectError(await call('PATCH', location, { body: 'abcdef', headers: { 'Content-Range': '0-2' } }), 400, 'SIZE_INVALID');
    const status = await call('GET', location);
    assert.equal(status.headers.get('range'), '0-0');
    const ok = await call('PATCH', location, { body: 'abc', headers: { 'Content-Range': '0-2' } });
    assert.equal(ok.status, 202);
    assert.equal((await call('PUT', `${location}?digest=${sha256('abc')}`)).status, 201);
  });

  test('cross-repository mounts share storage; unknown mounts fall back to an upload', async () => {
    const digest = await pushBlob('mount/source', 'shared content');
    let res = await call('POST', `/v2/mount/target/blobs/uploads/?mount=${digest}&from=mount/source`);
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('location'), `/v2/mount/target/blobs/${digest}`);
    res = await call('POST', `/v2/mount/auto/blobs/uploads/?mount=${digest}`);
    assert.equal(res.status, 201, 'mount without from finds the blob by itself');
    const hex = digest.slice(7);
    const uploadedAgain = await pushBlob('mount/uploaded', 'shared content');
    for (const repo of ['mount/source', 'mount/target', 'mount/auto', 'mount/uploaded']) assert.equal(await stored(`${repo}/blobs/sha256/${hex}`), 'shared content');
    if (!storageOnS3()) {
      const a = await stat(join(reg.dataDir, 'mount/source/blobs/sha256', hex));
      const b = await stat(join(reg.dataDir, 'mount/target/blobs/sha256', hex));
      assert.equal(a.ino, b.ino, 'mounted blobs are hard links, stored once');
      const c = await stat(join(reg.dataDir, 'mount/uploaded/blobs/sha256', uploadedAgain.slice(7)));
      assert.equal(c.ino, a.ino, 'the same content uploaded to another repository is linked too');
    }
    res = await call('POST', `/v2/mount/target/blobs/uploads/?mount=${sha256('never pushed')}&from=mount/source`);
    assert.equal(res.status, 202);
    assert.match(res.headers.get('location')!, /^\/v2\/mount\/target\/blobs\/uploads\//);
  });
});

describe('blob pulls', () => {
  test('a large blob arrives whole, in ranges, and a client that hangs up mid-pull harms nothing', async () => {
    const data = Buffer.alloc(5 * 1024 * 1024 + 321);
    for (let i = 0; i < data.length; i += 4096) data.writeUInt32BE(i, i);
    const digest = await pushBlob('pull/big', data);
    const whole = await fetch(`${reg.url}/v2/pull/big/blobs/${digest}`);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get('content-length'), String(data.length));
    assert.ok(Buffer.from(await whole.arrayBuffer()).equals(data));
    const part = await fetch(`${reg.url}/v2/pull/big/blobs/${digest}`, { headers: { Range: 'bytes=1048570-3145730' } });
    assert.equal(part.status, 206);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(data.subarray(1048570, 3145731)));
    for (let i = 0; i < 3; i++) {
      const abort = new AbortController();
      const res = await fetch(`${reg.url}/v2/pull/big/blobs/${digest}`, { signal: abort.signal });
      const reader = res.body!.getReader();
      await reader.read();
      abort.abort();
      await reader.read().catch(() => undefined);
    }
    const empty = await pushBlob('pull/big', Buffer.alloc(0));
    const none = await fetch(`${reg.url}/v2/pull/big/blobs/${empty}`);
    assert.equal(none.status, 200);
    assert.equal((await none.arrayBuffer()).byteLength, 0);
    const again = await fetch(`${reg.url}/v2/pull/big/blobs/${digest}`);
    assert.equal(sha256(Buffer.from(await again.arrayBuffer())), digest);
  });
});

describe('manifests', () => {
  test('exact bytes, media type from Content-Type when the body has none, GET without Accept', async () => {
    const config = Buffer.from('{}');
    const cfg = await pushBlob('man/plain', config);
    // No mediaType field, and odd whitespace: the digest is of these exact bytes.
    const body = `{ "schemaVersion": 2,\n "config": {"mediaType":"application/vnd.oci.image.config.v1+json","digest":"${cfg}","size":2}, "layers": [] }`;
    const res = await call('PUT', '/v2/man/plain/manifests/v1', { body, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('docker-content-digest'), sha256(body));
    const got = await call('GET', '/v2/man/plain/manifests/v1');
    assert.equal(got.headers.get('content-type'), OCI_MANIFEST);
    assert.equal(got.body.toString(), body);
    const refused = await call('GET', '/v2/man/plain/manifests/v1', { headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    await expectError(refused, 404, 'MANIFEST_UNKNOWN');
  });

  test('bad manifests get 400 with the right code; nothing is stored', async () => {
    const put = (body: string, type = OCI_MANIFEST, ref = 'bad') => call('PUT', `/v2/man/bad/manifests/${ref}`, { body, headers: { 'Content-Type': type } });
    await expectError(await put('{not json'), 400, 'MANIFEST_INVALID');
    await expectError(await put('[]'), 400, 'MANIFEST_INVALID');
    await expectError(await put('{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}', 'application/vnd.docker.distribution.manifest.v1+prettyjws'), 400, 'MANIFEST_INVALID');
    await expectError(await put(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'x/y', digest: 'sha256:zz', size: 1 }, layers: [] })), 400, 'MANIFEST_INVALID');
    await expectError(await put(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), OCI_MANIFEST), 400, 'MANIFEST_INVALID');
    await expectError(await put(JSON.stringify({ schemaVersion: 2, mediaType: 'application/x-unknown', layers: [] })), 400, 'MANIFEST_INVALID');
    const missing = await put(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...EMPTY, digest: sha256('nope') }, layers: [{ ...EMPTY, digest: sha256('nope2') }] }));
    await expectError(missing, 400, 'MANIFEST_BLOB_UNKNOWN');
    assert.equal((missing.json().errors as unknown[]).length, 2, 'one error per missing blob');
    const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
    await expectError(await put(body, OCI_INDEX, sha256('different')), 400, 'DIGEST_INVALID');
    await expectError(await call('GET', '/v2/man/bad/manifests/bad'), 404, 'NAME_UNKNOWN');
  });

  test('manifests over the size cap get 413', async () => {
    const big = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } });
    await expectError(await call('PUT', '/v2/man/big/manifests/v1', { body: big, headers: { 'Content-Type': OCI_INDEX } }), 413, 'SIZE_INVALID');
  });

  test('push by digest with ?tag= creates the tags and answers OCI-Tag (each tag once)', async () => {
    const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
    const res = await call('PUT', `/v2/man/tagparam/manifests/${sha256(body)}?tag=a&tag=b&tag=a`, { body, headers: { 'Content-Type': OCI_INDEX } });
    assert.equal(res.status, 201);
    assert.equal(res.headers.get('oci-tag'), 'a, b');
    assert.deepEqual((await call('GET', '/v2/man/tagparam/tags/list')).json().tags, ['a', 'b']);
  });

  test('deletes answer 202 and take effect at once', async () => {
    const image = await pushImage('man/del', 'v1');
    await call('PUT', '/v2/man/del/manifests/v2', { body: image.body, headers: { 'Content-Type': OCI_MANIFEST } });
    assert.equal((await call('DELETE', '/v2/man/del/manifests/v1')).status, 202);
    await expectError(await call('GET', '/v2/man/del/manifests/v1'), 404, 'MANIFEST_UNKNOWN');
    assert.equal((await call('GET', '/v2/man/del/manifests/v2')).status, 200);
    assert.equal((await call('DELETE', `/v2/man/del/manifests/${image.digest}`)).status, 202);
    await expectError(await call('HEAD', `/v2/man/del/manifests/${image.digest}`), 404, 'MANIFEST_UNKNOWN');
    await expectError(await call('GET', '/v2/man/del/manifests/v2'), 404, 'MANIFEST_UNKNOWN');
    const layer = JSON.parse(image.body).layers[0].digest as string;
    assert.equal((await call('DELETE', `/v2/man/del/blobs/${layer}`)).status, 202);
    await expectError(await call('GET', `/v2/man/del/blobs/${layer}`), 404, 'BLOB_UNKNOWN');
    await expectError(await call('DELETE', `/v2/man/del/blobs/${layer}`), 404, 'BLOB_UNKNOWN');
  });
});

describe('listings', () => {
  test('tags are sorted and paginated with n, last and Link', async () => {
    for (const tag of ['b', 'a', 'C', 'c', '1']) await pushImage('list/tags', tag);
    assert.deepEqual((await call('GET', '/v2/list/tags/tags/list')).json().tags, ['1', 'C', 'a', 'b', 'c']);
    const page = await call('GET', '/v2/list/tags/tags/list?n=2');
    assert.deepEqual(page.json().tags, ['1', 'C']);
    assert.equal(page.headers.get('link'), '</v2/list/tags/tags/list?n=2&last=C>; rel="next"');
    assert.deepEqual((await call('GET', '/v2/list/tags/tags/list?n=2&last=C')).json().tags, ['a', 'b']);
    const zero = await call('GET', '/v2/list/tags/tags/list?n=0');
    assert.deepEqual(zero.json().tags, []);
    assert.equal(zero.headers.get('link'), null);
    await expectError(await call('GET', '/v2/list/tags/tags/list?n=-1'), 400, 'PAGINATION_NUMBER_INVALID');
    await expectError(await call('GET', '/v2/list/nothing/tags/list'), 404, 'NAME_UNKNOWN');
  });

  test('catalog lists repositories in order with pagination', async () => {
    await pushImage('list/zeta', 'v1');
    const all = (await call('GET', '/v2/_catalog')).json().repositories as string[];
    assert.deepEqual(all, [...all].sort());
    assert.ok(all.includes('list/zeta') && all.includes('list/tags'));
    const page = await call('GET', '/v2/_catalog?n=1');
    assert.equal((page.json().repositories as string[]).length, 1);
    assert.match(page.headers.get('link')!, /^<\/v2\/_catalog\?n=1&last=.+>; rel="next"$/);
  });

  test('extension discovery', async () => {
    const res = await call('GET', '/v2/_oci/ext/discover');
    assert.equal((res.json().extensions as { name: string }[])[0]!.name, '_oci');
  });
});

describe('referrers', () => {
  test('unknown repositories and subjects answer 200 with an empty index and the exact Content-Type', async () => {
    const res = await call('GET', `/v2/ref/never/referrers/${sha256('x')}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), OCI_INDEX);
    assert.deepEqual(res.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
    await expectError(await call('GET', '/v2/ref/never/referrers/sha256:bad'), 400, 'DIGEST_INVALID');
  });

  test('lists referrers with annotations copied exactly, filters by artifactType, pages with Link', async () => {
    const image = await pushImage('ref/app', 'v1');
    const sbom = await pushReferrer('ref/app', image, 'application/vnd.example.sbom', { 'org.example.kind': 'sbom', 'io.cncf.notary.x509chain.thumbprint#S256': '["ab"]' });
    const sig = await pushReferrer('ref/app', image, 'application/vnd.example.sig', { 'org.example.kind': 'sig' });
    const all = await call('GET', `/v2/ref/app/referrers/${image.digest}`);
    const manifests = all.json().manifests as { digest: string; artifactType: string; annotations: Record<string, string> }[];
    assert.deepEqual(manifests.map((m) => m.digest).sort(), [sbom.digest, sig.digest].sort());
    assert.deepEqual(manifests.find((m) => m.digest === sbom.digest)!.annotations, { 'org.example.kind': 'sbom', 'io.cncf.notary.x509chain.thumbprint#S256': '["ab"]' });
    assert.equal(all.headers.get('oci-filters-applied'), null);
    const filtered = await call('GET', `/v2/ref/app/referrers/${image.digest}?artifactType=application/vnd.example.sig`);
    assert.equal(filtered.headers.get('oci-filters-applied'), 'artifactType');
    assert.deepEqual((filtered.json().manifests as { digest: string }[]).map((m) => m.digest), [sig.digest]);
    const first = await call('GET', `/v2/ref/app/referrers/${image.digest}?n=1`);
    assert.equal((first.json().manifests as unknown[]).length, 1);
    const link = /^<([^>]+)>; rel="next"$/.exec(first.headers.get('link') ?? '');
    assert.ok(link, 'a Link to the next page');
    const second = await call('GET', link[1]!);
    assert.equal((second.json().manifests as unknown[]).length, 1);
    assert.equal(second.headers.get('link'), null);
  });

  test('without n, a referrers page is as large as the byte budget allows, and its Link asks the same way', async () => {
    const image = await pushImage('ref/many', 'v1');
    for (let i = 0; i < 1200; i++) await pushReferrer('ref/many', image, 'application/vnd.example.sig', { seq: String(i) });
    // More than maxListPage (1,000), in one answer: the 4 MiB budget is what cuts a page.
    const whole = await call('GET', `/v2/ref/many/referrers/${image.digest}`);
    assert.equal((whole.json().manifests as unknown[]).length, 1200);
    assert.equal(whole.headers.get('link'), null);
    // With n, maxListPage still caps the page, and the Link carries n.
    const capped = await call('GET', `/v2/ref/many/referrers/${image.digest}?n=5000`);
    assert.equal((capped.json().manifests as unknown[]).length, 1000);
    assert.match(capped.headers.get('link') ?? '', /[?&]n=5000&/);

    // A small budget cuts pages early; following Link (without n) visits every referrer once.
    const small = await startTestRegistry({ maxReferrersBytes: 20_000 });
    try {
      const put = (path: string, body: string, type: string) => fetch(`${small.url}${path}`, { method: 'PUT', body, headers: { 'Content-Type': type } });
      const empty = await fetch(`${small.url}/v2/ref/small/blobs/uploads/?digest=${EMPTY.digest}`, { method: 'POST', body: '{}' });
      assert.equal(empty.status, 201);
      const ghost = { mediaType: OCI_MANIFEST, digest: sha256('ghost subject'), size: 13 };
      const expected = new Set<string>();
      for (let i = 0; i < 300; i++) {
        const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.sig', config: EMPTY, layers: [EMPTY], subject: ghost, annotations: { seq: String(i) } });
        const res = await put(`/v2/ref/small/manifests/${sha256(body)}`, body, OCI_MANIFEST);
        assert.equal(res.status, 201);
        expected.add(sha256(body));
      }
      const seen: string[] = [];
      let next: string | null = `/v2/ref/small/referrers/${ghost.digest}`;
      let pages = 0;
      while (next) {
        const res = await fetch(`${small.url}${next}`);
        const text = await res.text();
        assert.equal(res.status, 200, text);
        assert.ok(Buffer.byteLength(text) <= 20_000, `a page of ${Buffer.byteLength(text)} bytes`);
        seen.push(...(JSON.parse(text) as { manifests: { digest: string }[] }).manifests.map((m) => m.digest));
        const link = res.headers.get('link');
        if (link) assert.doesNotMatch(link, /[?&]n=/);
        next = link ? /^<([^>]+)>/.exec(link)![1]! : null;
        pages++;
      }
      assert.ok(pages > 3, `${pages} pages`);
      assert.equal(seen.length, 300);
      assert.deepEqual(new Set(seen), expected);
    } finally {
      await small.dispose();
    }
  });

  test('a referrer whose subject is missing is accepted and listed', async () => {
    const ghost = { digest: sha256('ghost'), size: 5 };
    const ref = await pushReferrer('ref/ghost', ghost, 'application/vnd.example.sig', {});
    const res = await call('GET', `/v2/ref/ghost/referrers/${ghost.digest}`);
    assert.deepEqual((res.json().manifests as { digest: string }[]).map((m) => m.digest), [ref.digest]);
  });

  test('a fallback-tag index pushed by an older client does not duplicate entries', async () => {
    const image = await pushImage('ref/fallback', 'v1');
    const ref = await pushReferrer('ref/fallback', image, 'application/vnd.example.sbom', {});
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, ...ref, artifactType: 'application/vnd.example.sbom' }] });
    const tag = image.digest.replace(':', '-');
    assert.equal((await call('PUT', `/v2/ref/fallback/manifests/${tag}`, { body: index, headers: { 'Content-Type': OCI_INDEX } })).status, 201);
    const res = await call('GET', `/v2/ref/fallback/referrers/${image.digest}`);
    assert.deepEqual((res.json().manifests as { digest: string }[]).map((m) => m.digest), [ref.digest]);
  });
});

describe('the layout on disk', () => {
  test('index.json lists tags and referrers the way oras and containerd read them', async () => {
    const image = await pushImage('disk/app', 'v1');
    const ref = await pushReferrer('disk/app', image, 'application/vnd.example.sbom', { a: 'b' });
    await reg.registry.layout.flushAll();
    const index = JSON.parse(await stored('disk/app/index.json'));
    assert.equal(index.schemaVersion, 2);
    const tagged = index.manifests.find((d: { annotations?: Record<string, string> }) => d.annotations?.['org.opencontainers.image.ref.name'] === 'v1');
    assert.equal(tagged.digest, image.digest);
    const referrer = index.manifests.find((d: { digest: string }) => d.digest === ref.digest);
    assert.deepEqual(referrer.annotations, { 'io.containerd.manifest.subject': image.digest });
    assert.equal(referrer.artifactType, 'application/vnd.example.sbom');
    assert.deepEqual(JSON.parse(await stored('disk/app/oci-layout')), { imageLayoutVersion: '1.0.0' });
    assert.equal(await stored(`disk/app/blobs/sha256/${image.digest.slice(7)}`), image.body);
  });

  test('edits another tool makes to index.json are noticed', async () => {
    const image = await pushImage('disk/edited', 'v1');
    await reg.registry.layout.flushAll();
    const index = JSON.parse(await stored('disk/edited/index.json'));
    index.manifests.push({ mediaType: OCI_MANIFEST, digest: image.digest, size: image.size, annotations: { 'org.opencontainers.image.ref.name': 'added-outside' } });
    // Another tool writing the same storage (a file edit, or a PUT into the bucket).
    if (storageOnS3()) await reg.registry.driver.writeFile('disk/edited/index.json', JSON.stringify(index));
    else await (await import('node:fs/promises')).writeFile(join(reg.dataDir, 'disk/edited/index.json'), JSON.stringify(index));
    await new Promise((r) => setTimeout(r, 1100)); // the check interval
    assert.deepEqual((await call('GET', '/v2/disk/edited/tags/list')).json().tags, ['added-outside', 'v1']);
  });
});

describe('bad input never escapes the data root or gets a 5xx', () => {
  test('names with traversal, encoding, reserved components or excess length are NAME_INVALID', async () => {
    for (const name of ['..', 'a/../b', 'a/%2e%2e/b', 'a%2Fb', 'A/b', 'a//b', '_trellis', 'a/blobs', 'a/index.json', 'oci-layout', 'x'.repeat(256), 'a/-b']) {
      const res = await call('GET', `/v2/${name}/tags/list`);
      assert.ok(res.status === 400 || res.status === 404, `${name}: ${res.status}`);
      if (res.status === 400) await expectError(res, 400, 'NAME_INVALID');
    }
    await expectError(await call('POST', `/v2/${'a'.repeat(256)}/blobs/uploads/`), 400, 'NAME_INVALID');
    await expectError(await call('PUT', '/v2/a/blobs/manifests/v1', { body: '{}' }), 400, 'NAME_INVALID');
  });

  test('unknown endpoints and methods get OCI error bodies', async () => {
    await expectError(await call('GET', '/v2/a/unknown/thing'), 404, 'NAME_UNKNOWN');
    await expectError(await call('POST', '/v2/a/manifests/v1'), 405, 'UNSUPPORTED');
    await expectError(await call('GET', '/v2/a/manifests/%E0%A4%A'), 400, 'NAME_INVALID');
  });

  test('the open upload cap answers 429 with Retry-After', async () => {
    const opened: string[] = [];
    let refused;
    for (let i = 0; i < 60 && !refused; i++) {
      const res = await call('POST', '/v2/cap/test/blobs/uploads/');
      if (res.status === 202) opened.push(res.headers.get('location')!);
      else refused = res;
    }
    assert.ok(refused, 'the cap was reached');
    await expectError(refused, 429, 'TOOMANYREQUESTS');
    assert.ok(refused.headers.get('retry-after'));
    for (const location of opened) await call('DELETE', location);
  });

  test('random manifest bodies and references never produce a 5xx', async () => {
    let seed = 42;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const fragments = ['{', '}', '[', ']', '"schemaVersion":2', '"mediaType":"' + OCI_MANIFEST + '"', '"config":', '"layers":', '"manifests":', '"subject":', ',', ':', 'null', '1e999', '"\\u0000"', '{"digest":"sha256:' + 'a'.repeat(64) + '","size":-1,"mediaType":"a/b"}', '['.repeat(70), '{"a":'.repeat(65), '"\\"[[["'];
    for (let i = 0; i < 200; i++) {
      const body = Array.from({ length: 1 + Math.floor(random() * 12) }, () => fragments[Math.floor(random() * fragments.length)]).join('');
      const ref = random() < 0.5 ? 'fuzz' : `sha256:${'0'.repeat(Math.floor(random() * 70))}`;
      const res = await call('PUT', `/v2/fuzz/repo/manifests/${ref}`, { body, headers: { 'Content-Type': random() < 0.5 ? OCI_MANIFEST : 'text/plain' } });
      assert.ok(res.status === 201 || res.status === 400, `${body} -> ${res.status}`);
    }
  });

  test('concurrent writers on one tag leave exactly one winner and a valid layout', async () => {
    const images = await Promise.all(Array.from({ length: 8 }, (_, i) => pushImage('race/one', `w${i}`)));
    await Promise.all(images.map((image) => call('PUT', '/v2/race/one/manifests/latest', { body: image.body, headers: { 'Content-Type': OCI_MANIFEST } })));
    const winner = (await call('HEAD', '/v2/race/one/manifests/latest')).headers.get('docker-content-digest');
    assert.ok(images.some((image) => image.digest === winner));
    await reg.registry.layout.flushAll();
    const index = JSON.parse(await stored('race/one/index.json'));
    const latest = index.manifests.filter((d: { annotations?: Record<string, string> }) => d.annotations?.['org.opencontainers.image.ref.name'] === 'latest');
    assert.equal(latest.length, 1);
    assert.equal(latest[0].digest, winner);
  });
});

describe('upload sessions', () => {
  test('abandoned sessions expire after the configured time, with their data', async () => {
    const short = await startTestRegistry({ uploadTimeoutSeconds: 1 });
    try {
      const open = await fetch(`${short.url}/v2/expire/me/blobs/uploads/`, { method: 'POST' });
      const location = open.headers.get('location')!;
      await (await fetch(`${short.url}${location}`, { method: 'PATCH', body: 'partial' })).arrayBuffer();
      await new Promise((r) => setTimeout(r, 2600));
      const status = await fetch(`${short.url}${location}`);
      assert.equal(status.status, 404);
      assert.deepEqual(await short.registry.driver.list('_trellis/uploads'), []);
      assert.deepEqual(await short.registry.driver.listWriters(), []);
    } finally {
      await short.dispose();
    }
  });

  test('an open session survives a restart', async () => {
    const first = await startTestRegistry();
    const open = await fetch(`${first.url}/v2/restart/me/blobs/uploads/`, { method: 'POST' });
    const location = open.headers.get('location')!;
    await (await fetch(`${first.url}${location}`, { method: 'PATCH', body: 'first half,', headers: { 'Content-Range': '0-10' } })).arrayBuffer();
    await first.close();
    const second = await startTestRegistry({}, first.dataDir);
    try {
      const res = await fetch(`${second.url}${location}?digest=${sha256('first half, second half')}`, { method: 'PUT', body: ' second half', headers: { 'Content-Range': '11-22' } });
      assert.equal(res.status, 201, await res.text());
      const blob = await fetch(`${second.url}/v2/restart/me/blobs/${sha256('first half, second half')}`);
      assert.equal(await blob.text(), 'first half, second half');
    } finally {
      await second.close();
      const { rm } = await import('node:fs/promises');
      await rm(first.dataDir, { recursive: true, force: true });
    }
  });
});
