// What every handler receives.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Registry } from '../content/registry.ts';
import type { Uploads } from '../content/uploads.ts';

export interface ApiLimits {
  maxManifestBytes: number;
  /** Largest page of tags or repositories in one answer. */
  maxListPage: number;
  /** Largest referrers answer body in bytes before it is split with a `Link`. */
  maxReferrersBytes: number;
}

export interface ApiContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  head: boolean;
  registry: Registry;
  uploads: Uploads;
  limits: ApiLimits;
  log: Logger;
}

export type Handler = (ctx: ApiContext, name: string, arg: string) => Promise<void>;
