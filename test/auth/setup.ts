// A Trellis server with access control on: an htpasswd file, an auth file and helpers to call it
// with Basic credentials or tokens from its own token endpoint.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import bcrypt from 'bcryptjs';
import type { Settings } from '../../src/config/settings.ts';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeImage, sha256, type Built } from '../helpers/oci-client.ts';

export interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
  json(): any;
}

export interface AuthRegistry {
  reg: TestRegistry;
  base: string;
  dir: string;
  authFile: string;
  basic(user: string, password?: string): string;
  /** A token from the built-in endpoint (GET with Basic, or anonymous without a user). */
  token(user: string | undefined, scopes: string[]): Promise<string>;
  call(path: string, init?: RequestInit & { auth?: string | undefined }): Promise<Answer>;
  /** Pushes an image's blobs and manifest with the given Authorization; the first failing status, or 201. */
  push(repo: string, ref: string, auth: string | undefined, image?: Built): Promise<{ status: number; digest: string; body: Buffer }>;
}

export const PASSWORD = 'correct horse battery staple';

export async function startAuthRegistry(t: TestContext, options: {
  users: string[];
  auth: Record<string, unknown>;
  settings?: Partial<Settings>;
}): Promise<AuthRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-auth-'));
  const htpasswd = options.users.map((u) => `${u}:${bcrypt.hashSync(PASSWORD, 4)}`).join('\n');
  await writeFile(join(dir, 'htpasswd'), `${htpasswd}\n`);
  const authFile = join(dir, 'auth.json');
  await writeFile(authFile, JSON.stringify({ htpasswd: 'htpasswd', ...options.auth }));
  const data = join(dir, 'data');
  const reg = await startTestRegistry({ authFile, ...options.settings }, data);
  t.after(async () => {
    await reg.dispose();
    await rm(dir, { recursive: true, force: true });
  });
  const base = reg.url;
  const basic = (user: string, password = PASSWORD) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  const call = async (path: string, init: RequestInit & { auth?: string | undefined } = {}): Promise<Answer> => {
    const headers = new Headers(init.headers);
    if (init.auth) headers.set('Authorization', init.auth);
    const res = await fetch(new URL(path, base), { ...init, headers });
    const body = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) };
  };
  const token = async (user: string | undefined, scopes: string[]) => {
    const query = new URLSearchParams({ service: 'trellis' });
    for (const s of scopes) query.append('scope', s);
    const answer = await call(`/v2/_trellis/token?${query}`, { auth: user ? basic(user) : undefined });
    if (answer.status !== 200) throw new Error(`token request failed: ${answer.status} ${answer.body}`);
    return answer.json().token as string;
  };
  const push = async (repo: string, ref: string, auth: string | undefined, image = makeImage()) => {
    for (const blob of image.blobs) {
      const digest = sha256(blob);
      const open = await call(`/v2/${repo}/blobs/uploads/`, { method: 'POST', auth });
      const location = open.headers.get('location');
      if (open.status !== 202 || !location) return { status: open.status, digest, body: open.body };
      const url = new URL(location, base);
      url.searchParams.set('digest', digest);
      const put = await call(url.pathname + url.search, { method: 'PUT', body: blob, auth, headers: { 'Content-Type': 'application/octet-stream' } });
      if (put.status !== 201) return { status: put.status, digest, body: put.body };
    }
    const answer = await call(`/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: image.bytes, auth, headers: { 'Content-Type': image.mediaType } });
    return { status: answer.status, digest: image.digest, body: answer.body };
  };
  return { reg, base, dir, authFile, basic, token, call, push };
}
