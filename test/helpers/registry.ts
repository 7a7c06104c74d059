// Starts a real Trellis server on a random 127.0.0.1 port over a fresh temp data directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.ts';
import { startRegistry, type RunningRegistry } from '../../src/cli/serve.ts';

export interface TestRegistry extends RunningRegistry {
  /** host:port, as clients want it. */
  host: string;
  dataDir: string;
  /** Stops the server and removes its data. */
  dispose(): Promise<void>;
}

export async function startTestRegistry(overrides: Partial<Settings> = {}, dataDir?: string): Promise<TestRegistry> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'trellis-test-')));
  const settings: Settings = { ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data: dir, logLevel: 'silent', indexFlushMinMs: 5, ...overrides };
  const running = await startRegistry(settings, pino({ level: process.env.TRELLIS_TEST_LOG ?? 'silent' }));
  return {
    ...running,
    host: running.url.replace(/^https?:\/\//, ''),
    dataDir: dir,
    async dispose() {
      await running.close();
      if (!dataDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
