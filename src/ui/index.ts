// The web UI's server side: the built bundle (`npm run build` writes it to dist/ui/), read into
// memory once at start and looked up by path. The app itself (ui/) talks only to the public API;
// src/registry/ui.ts answers HTTP with what `lookup` finds.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative, sep } from 'node:path';

/** Where `npm run build` puts the bundle. */
export const DEFAULT_BUNDLE_DIR = join(import.meta.dirname, '../../dist/ui');

export const UI_PATH = '/ui/';

export interface UiAsset {
  body: Buffer;
  contentType: string;
  /** Hashed file names never change content; index.html must be revalidated. */
  immutable: boolean;
  etag: string;
}

export interface UiBundle {
  /**
   * The asset for a path below `/ui/` (without that prefix). Paths that are not files are app
   * routes and get index.html; a missing file under `assets/` is undefined (a 404, not the app).
   */
  lookup(path: string): UiAsset | undefined;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
};

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** Reads the bundle; undefined when it was not built (the caller says so in the log). */
export async function openUiBundle(dir = DEFAULT_BUNDLE_DIR): Promise<UiBundle | undefined> {
  let files: string[];
  try {
    files = await listFiles(dir);
  } catch {
    return undefined;
  }
  const assets = new Map<string, UiAsset>();
  for (const file of files) {
    const body = await readFile(file);
    const path = relative(dir, file).split(sep).join('/');
    assets.set(path, {
      body,
      contentType: CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      immutable: path.startsWith('assets/'),
      etag: `"${createHash('sha256').update(body).digest('hex').slice(0, 32)}"`,
    });
  }
  const index = assets.get('index.html');
  if (!index) return undefined;
  return {
    lookup(path: string): UiAsset | undefined {
      const found = assets.get(path);
      if (found) return found;
      if (path.startsWith('assets/') || extname(path) !== '') return undefined;
      return index;
    },
  };
}
