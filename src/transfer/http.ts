// A registry over the OCI Distribution API, as a copy source and sink (plain fetch, streaming blobs).
import { Readable } from 'node:stream';
import type { Descriptor } from '../oci/manifest.ts';
import { digestOf } from '../oci/digest.ts';
import { MANIFEST_TYPES, bareMediaType } from '../oci/mediatypes.ts';
import type { ContentSink, ContentSource, FetchedManifest } from './store.ts';

const ACCEPT = [...MANIFEST_TYPES].join(', ');

export class RegistryRequestFailed extends Error {}

export class HttpRegistry implements ContentSource, ContentSink {
  readonly base: string;

  constructor(base: string) {
    this.base = base.replace(/\/+$/, '');
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const url = path.startsWith('http') ? path : `${this.base}${path}`;
    try {
      return await fetch(url, init);
    } catch (err) {
      throw new RegistryRequestFailed(`${init.method ?? 'GET'} ${url}: ${(err as Error).message}`);
    }
  }

  private async fail(res: Response, what: string): Promise<never> {
    const text = await res.text().catch(() => '');
    let message = text.slice(0, 300);
    try {
      const errors = (JSON.parse(text) as { errors?: { code: string; message: string }[] }).errors;
      if (errors?.length) message = errors.map((e) => `${e.code}: ${e.message}`).join('; ');
    } catch { /* not an OCI error body */ }
    throw new RegistryRequestFailed(`${what}: ${res.status} ${message}`);
  }

  /** Follows `Link: <…>; rel="next"` pages. */
  private async *pages(path: string): AsyncGenerator<Response> {
    let next: string | undefined = path;
    while (next) {
      const res = await this.request(next);
      yield res;
      const link = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
      next = link ? new URL(link[1]!, this.base).toString() : undefined;
    }
  }

  async tags(repository: string): Promise<string[]> {
    const tags: string[] = [];
    for await (const res of this.pages(`/v2/${repository}/tags/list`)) {
      if (res.status === 404) return tags;
      if (!res.ok) await this.fail(res, `listing tags of ${repository}`);
      tags.push(...(((await res.json()) as { tags?: string[] | null }).tags ?? []));
    }
    return tags;
  }

  async manifest(repository: string, reference: string): Promise<FetchedManifest | undefined> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, { headers: { Accept: ACCEPT } });
    if (res.status === 404) return undefined;
    if (!res.ok) await this.fail(res, `fetching manifest ${repository}:${reference}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    return { bytes, mediaType: bareMediaType(res.headers.get('content-type') ?? undefined) ?? '', digest: res.headers.get('docker-content-digest') ?? digestOf(bytes) };
  }

  async blob(repository: string, digest: string): Promise<{ stream: Readable; size: number } | undefined> {
    const res = await this.request(`/v2/${repository}/blobs/${digest}`);
    if (res.status === 404) return undefined;
    if (!res.ok || !res.body) await this.fail(res, `fetching blob ${repository}@${digest}`);
    return { stream: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), size: Number(res.headers.get('content-length') ?? 0) };
  }

  async referrers(repository: string, digest: string): Promise<Descriptor[]> {
    const found: Descriptor[] = [];
    for await (const res of this.pages(`/v2/${repository}/referrers/${digest}`)) {
      if (!res.ok) await this.fail(res, `listing referrers of ${repository}@${digest}`);
      found.push(...((await res.json()) as { manifests: Descriptor[] }).manifests);
    }
    return found;
  }

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD' });
    return res.ok;
  }

  async putBlob(repository: string, digest: string, size: number, stream: Readable): Promise<void> {
    const open = await this.request(`/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    const location = open.headers.get('location');
    if (open.status !== 202 || !location) await this.fail(open, `starting upload to ${repository}`);
    const url = new URL(location!, this.base);
    url.searchParams.set('digest', digest);
    const body = Readable.toWeb(stream) as unknown as RequestInit['body'];
    const res = await this.request(url.toString(), {
      method: 'PUT', body, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) }, duplex: 'half',
    } as RequestInit);
    if (res.status !== 201) await this.fail(res, `uploading blob ${digest} to ${repository}`);
    await res.arrayBuffer();
  }

  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<void> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, { method: 'PUT', body: bytes, headers: { 'Content-Type': mediaType } });
    if (res.status !== 201) await this.fail(res, `pushing manifest ${repository}:${reference}`);
    await res.arrayBuffer();
  }
}
