// What a command line names: a registry reference (`host[:port]/repo[:tag|@digest]`), or an OCI
// layout directory or tar (`oci:<path>[:tag|@digest]`, `oci-archive:<file>`, or a path that starts
// with `/`, `./`, `../` or ends in `.tar`). Layouts are opened through a scratch Trellis data
// directory, so every referrer style is read and what is written is read back by oras and regctl.
import { cp, mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Registry } from '../content/registry.ts';
import { DEFAULT_SETTINGS, type Settings } from '../config/settings.ts';
import { repositoryNameProblem, isValidTag } from '../oci/names.ts';
import { isValidDigest } from '../oci/digest.ts';
import { HttpRegistry } from '../transfer/http.ts';
import { LocalRegistry } from '../transfer/local.ts';
import { getCredentials } from '../transfer/auth.ts';
import type { ContentSink, ContentSource } from '../transfer/store.ts';
import { createLogger, registryOptions } from './serve.ts';
import { requireParentFolder } from './paths.ts';
import { UsageError } from './errors.ts';


export interface RegistryReference {
  kind: 'registry';
  host: string;
  repository: string;
  tag?: string;
  digest?: string;
  /** What the user typed. */
  text: string;
}

export interface LayoutReference {
  kind: 'layout';
  path: string;
  tar: boolean;
  tag?: string;
  digest?: string;
  text: string;
}

export type Reference = RegistryReference | LayoutReference;

export interface ConnectionFlags {
  plainHttp?: boolean;
}

const LOCAL_HOSTS = /^(localhost|127(?:\.\d+){3}|\[::1\])(:\d+)?$/;

/** Splits `name[:tag][@digest]` where the name may itself hold `:` (a port) before its last `/`. */
function splitReference(text: string): { name: string; tag?: string; digest?: string } {
  let rest = text;
  let digest: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at > 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isValidDigest(digest)) throw new UsageError(`${text}: "${digest}" is not a valid digest`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw new UsageError(`${text}: "${tag}" is not a valid tag`);
  }
  const result: { name: string; tag?: string; digest?: string } = { name: rest };
  if (tag !== undefined) result.tag = tag;
  if (digest !== undefined) result.digest = digest;
  return result;
}

export function isLayoutText(text: string): boolean {
  return /^(oci:|oci-archive:|ocidir:\/\/)/.test(text) || /^\.{0,2}\//.test(text) || /\.tar(:[^/]*)?$/.test(text);
}

export function parseReference(text: string): Reference {
  if (isLayoutText(text)) {
    const archive = text.startsWith('oci-archive:');
    const bare = text.replace(/^(oci:|oci-archive:|ocidir:\/\/)/, '');
    const { name, tag, digest } = splitReference(bare);
    const ref: LayoutReference = { kind: 'layout', path: resolve(name), tar: archive || /\.tar$/i.test(name), text };
    if (tag) ref.tag = tag;
    if (digest) ref.digest = digest;
    return ref;
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    const bare = text.slice(scheme[0].length);
    const hint = scheme[1]!.toLowerCase() === 'http' ? ' and add --plain-http' : '';
    throw new UsageError(`${text}: a reference has no scheme; write ${bare}${hint}`);
  }
  const slash = text.indexOf('/');
  if (slash < 0) throw new UsageError(`${text}: a reference is <registry>/<repository>[:tag|@digest], e.g. localhost:5000/app:v1 (or oci:<dir> for a layout)`);
  const host = checkHost(text.slice(0, slash), text);
  const { name, tag, digest } = splitReference(text.slice(slash + 1));
  const problem = repositoryNameProblem(name);
  if (problem && name !== name.toLowerCase() && !repositoryNameProblem(name.toLowerCase())) {
    throw new UsageError(`${text}: repository names are lower case; use ${host}/${name.toLowerCase()}`);
  }
  if (problem) throw new UsageError(`${text}: ${problem}`);
  const ref: RegistryReference = { kind: 'registry', host, repository: name, text };
  if (tag) ref.tag = tag;
  if (digest) ref.digest = digest;
  return ref;
}

export function parseRegistryReference(text: string, what = 'reference'): RegistryReference {
  const ref = parseReference(text);
  if (ref.kind !== 'registry') throw new UsageError(`${text}: this command needs a registry ${what}, not a layout`);
  return ref;
}

/** The base URL: plain HTTP when asked, and by default for localhost and 127.0.0.1. */
export function baseUrl(host: string, flags: ConnectionFlags): string {
  if (/^https?:\/\//.test(host)) return host;
  return `${flags.plainHttp ?? LOCAL_HOSTS.test(host) ? 'http' : 'https'}://${host}`;
}

export function connect(host: string, flags: ConnectionFlags): HttpRegistry {
  return new HttpRegistry(baseUrl(host, flags), { credentials: getCredentials });
}

const HOST = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** A registry host, `name[:port]`; a port run into the repository (`localhost:5000team`) gets a hint. */
function checkHost(host: string, text: string): string {
  if (HOST.test(host)) return host;
  const joined = /^(.*:\d+)([a-z][^/]*)$/i.exec(host);
  if (joined) throw new UsageError(`${text}: "${host}" is not a registry host; did you mean ${joined[1]}/${text.slice(joined[1]!.length)}?`);
  throw new UsageError(`${text}: "${host}" is not a registry host; expected a name or address with an optional port, such as localhost:5000`);
}

/** A registry host given alone (login, repos): `host[:port]`, maybe with a scheme. */
export function parseHost(text: string): string {
  const host = text.replace(/^https?:\/\//, '').replace(/\/+$/, '');
  if (!host || host.includes('/')) throw new UsageError(`${text}: expected a registry host such as localhost:5000`);
  return checkHost(host, text);
}

/** One end of a copy, opened. `close` writes a layout destination out and removes scratch files. */
export interface Endpoint {
  store: ContentSource & ContentSink;
  repository: string;
  reference: string | undefined;
  close(commit: boolean): Promise<void>;
}

const LAYOUT_REPOSITORY = 'layout';

async function scratchRegistry(): Promise<{ dir: string; open: () => Promise<Registry> }> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-copy-'));
  const settings: Settings = { ...DEFAULT_SETTINGS, data: dir };
  return { dir, open: () => Registry.open(registryOptions(settings, createLogger('warn'))) };
}

async function isLayoutDir(path: string): Promise<boolean> {
  return (await stat(join(path, 'oci-layout')).catch(() => undefined)) !== undefined;
}

export async function openEndpoint(ref: Reference, flags: ConnectionFlags, role: 'source' | 'destination'): Promise<Endpoint> {
  const reference = ref.digest ?? ref.tag;
  if (ref.kind === 'registry') {
    return { store: connect(ref.host, flags), repository: ref.repository, reference, close: async () => undefined };
  }
  if (role === 'destination') await requireParentFolder(ref.path, ref.text);
  const { dir, open } = await scratchRegistry();
  const layout = join(dir, LAYOUT_REPOSITORY);
  try {
    const exists = await stat(ref.path).catch(() => undefined);
    if (role === 'source' && !exists) throw new UsageError(`${ref.path} does not exist`);
    if (exists && (role === 'source' || !ref.tar)) {
      await mkdir(layout, { recursive: true });
      // tar refuses absolute paths and `..` entries by default, so nothing lands outside the folder.
      if (ref.tar) await (await import('tar')).extract({ file: ref.path, cwd: layout });
      else if (await isLayoutDir(ref.path)) await cp(ref.path, layout, { recursive: true });
      else if (role === 'source' || (await readdir(ref.path)).length > 0) throw new UsageError(`${ref.path} is not an OCI layout (no oci-layout file)`);
      if (role === 'source' && !(await isLayoutDir(layout))) throw new UsageError(`${ref.path} is not an OCI layout (no oci-layout file)`);
    }
    const registry = await open();
    const store = new LocalRegistry(registry);
    return {
      store, repository: LAYOUT_REPOSITORY, reference,
      async close(commit: boolean) {
        try {
          await registry.close(); // writes every index.json
          // Nothing was written (the source failed before the first blob): leave no empty layout.
          const written = await stat(layout).then(() => true, () => false);
          if (commit && role === 'destination' && written) {
            if (ref.tar) {
              await (await import('tar')).create({ cwd: layout, file: ref.path, portable: true }, await readdir(layout));
            } else {
              await mkdir(ref.path, { recursive: true });
              await cp(layout, ref.path, { recursive: true, force: true });
            }
          }
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
      },
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
