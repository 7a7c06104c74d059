// Webhook settings: where events go, which ones, and how each request is authenticated.
//   { "url": "https://ci.example/hook", "name": "ci", "events": ["manifest.*", "tag.set"],
//     "repositories": ["team/**"], "headers": { "Authorization": "Bearer ..." }, "secret": "..." }
import { SettingsError } from '../config/settings.ts';
import { EVENT_TYPES, type OutboxEvent } from '../metadata/outbox.ts';

export interface Webhook {
  /** Names the webhook's durable position in the outbox: keep it when changing the URL. */
  name: string;
  url: string;
  /** Event type patterns: `manifest.pushed`, `manifest.*`, `*` (default: every type). */
  events: string[];
  /** Repository patterns: `*` within a name component, `**` for any depth (default: every repository). */
  repositories: string[];
  headers: Record<string, string>;
  /** HMAC-SHA256 key: each request carries `X-Trellis-Signature: sha256=<hex of the body's HMAC>`. */
  secret: string;
  matches(event: Pick<OutboxEvent, 'type' | 'repository'>): boolean;
}

const KEYS = new Set(['name', 'url', 'events', 'repositories', 'headers', 'secret']);
const REPOSITORY_PATTERN = /^(?:\*\*|[a-z0-9*]+(?:[._-]+[a-z0-9*]+)*)(?:\/(?:\*\*|[a-z0-9*]+(?:[._-]+[a-z0-9*]+)*))*$/;

function repositoryMatcher(pattern: string): RegExp {
  const parts = pattern.split('/').map((part) => part === '**' ? '[^/]+(?:/[^/]+)*' : part.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*'));
  return new RegExp(`^${parts.join('/')}$`);
}

function typeMatcher(pattern: string, where: string): (type: string) => boolean {
  if (pattern === '*') return () => true;
  if (pattern.endsWith('.*')) {
    const prefix = pattern.slice(0, -1);
    if (!EVENT_TYPES.some((t) => t.startsWith(prefix))) throw new SettingsError(`${where}: no event type matches ${JSON.stringify(pattern)} (types: ${EVENT_TYPES.join(', ')})`);
    return (type) => type.startsWith(prefix);
  }
  if (!(EVENT_TYPES as readonly string[]).includes(pattern)) throw new SettingsError(`${where}: unknown event type ${JSON.stringify(pattern)} (types: ${EVENT_TYPES.join(', ')})`);
  return (type) => type === pattern;
}

function strings(value: unknown, where: string): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new SettingsError(`${where} must be a list of strings`);
  return value;
}

/** Checks the `webhooks` setting; every problem is a SettingsError naming the entry. */
export function parseWebhooks(list: unknown[]): Webhook[] {
  const names = new Set<string>();
  return list.map((raw, i) => {
    const where = `webhooks[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new SettingsError(`${where} must be an object with a url`);
    const entry = raw as Record<string, unknown>;
    for (const key of Object.keys(entry)) if (!KEYS.has(key)) throw new SettingsError(`${where}: unknown key ${key} (known: ${[...KEYS].join(', ')})`);
    const url = entry.url;
    let parsed: URL | undefined;
    try {
      parsed = typeof url === 'string' ? new URL(url) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) throw new SettingsError(`${where}.url must be an http:// or https:// URL`);
    // fetch refuses such a URL on every attempt, with the password in the error (logged on each
    // retry), and the URL is the default name (a metrics label): refuse it here, naming no value.
    if (parsed.username || parsed.password) throw new SettingsError(`${where}.url must not hold credentials (send them in headers, e.g. Authorization)`);
    const name = entry.name ?? parsed.href;
    if (typeof name !== 'string' || !name) throw new SettingsError(`${where}.name must be a non-empty string`);
    if (names.has(name)) throw new SettingsError(`${where}: another webhook is already named ${JSON.stringify(name)} (give each a distinct name)`);
    names.add(name);
    const events = strings(entry.events, `${where}.events`);
    const types = events.map((p) => typeMatcher(p, `${where}.events`));
    const repositories = strings(entry.repositories, `${where}.repositories`);
    for (const p of repositories) if (!REPOSITORY_PATTERN.test(p)) throw new SettingsError(`${where}.repositories: ${JSON.stringify(p)} is not a repository pattern (lowercase name components, * within a component, ** for any depth)`);
    const patterns = repositories.map(repositoryMatcher);
    const headers = entry.headers ?? {};
    if (typeof headers !== 'object' || headers === null || Array.isArray(headers) || !Object.values(headers).every((v) => typeof v === 'string')) {
      throw new SettingsError(`${where}.headers must map header names to strings`);
    }
    // Checked once here: fetch would reject a bad one on every attempt, its error (logged on each
    // retry) quoting the value, often a credential. The error names the header only.
    for (const [key, value] of Object.entries(headers as Record<string, string>)) {
      try {
        new Headers([[key, value]]);
      } catch {
        throw new SettingsError(`${where}.headers: ${JSON.stringify(key)} is not a valid header name, or its value is not a valid header value`);
      }
    }
    const secret = entry.secret ?? '';
    if (typeof secret !== 'string') throw new SettingsError(`${where}.secret must be a string`);
    return {
      name, url: parsed.href, events, repositories, headers: headers as Record<string, string>, secret,
      // Registry-wide events (a GC run) have no repository: only webhooks without repository patterns get them.
      matches: (event) => (!types.length || types.some((m) => m(event.type)))
        && (!patterns.length || (event.repository !== '' && patterns.some((p) => p.test(event.repository)))),
    };
  });
}
