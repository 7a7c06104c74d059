// How client commands talk: `-o json` documents on stdout, aligned tables, progress bars on a
// terminal (per blob and in total, with bytes, speed and ETA), nothing extra with -q or off a TTY.
import cliProgress from 'cli-progress';
import type { CopyProgress } from '../transfer/copy.ts';

export type OutputFormat = 'text' | 'json' | 'table' | 'tree';

export interface OutputFlags {
  output?: string;
  quiet?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function table(rows: string[][], header: string[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** Messages for people (not data): stderr, silenced by -q. */
export function note(flags: OutputFlags, message: string): void {
  if (!flags.quiet) process.stderr.write(`${message}\n`);
}

const short = (id: string) => {
  const at = id.lastIndexOf('@');
  return id.slice(at + 1).replace(/^sha256:/, '').slice(0, 12);
};

/** Progress bars on stderr when it is a terminal and -q is not given; otherwise undefined. */
export function progressBars(flags: OutputFlags): (CopyProgress & { stop(): void }) | undefined {
  if (flags.quiet || !process.stderr.isTTY || flags.output === 'json') return undefined;
  const format = (options: cliProgress.Options, params: cliProgress.Params, payload: { name: string; speed?: string }) => {
    const elapsed = Math.max(0.001, (Date.now() - params.startTime) / 1000);
    const rate = params.value / elapsed;
    const eta = rate > 0 ? Math.max(0, Math.round((params.total - params.value) / rate)) : 0;
    const size = options.barsize ?? 30;
    const filled = params.total > 0 ? Math.round((params.value / params.total) * size) : 0;
    const bar = '█'.repeat(filled) + '░'.repeat(Math.max(0, size - filled));
    return `${payload.name.padEnd(14)} ${bar} ${humanBytes(params.value).padStart(9)} / ${humanBytes(params.total).padEnd(9)} ${`${humanBytes(rate)}/s`.padStart(11)} ETA ${eta}s`;
  };
  const multi = new cliProgress.MultiBar({ format, hideCursor: true, clearOnComplete: false, stopOnComplete: false, barsize: 30, stream: process.stderr, fps: 8 });
  // The total line appears with the first transfer (nothing to show when everything is there).
  let total: cliProgress.SingleBar | undefined;
  let totalSize = 0;
  let stopped = false;
  const bars = new Map<string, cliProgress.SingleBar>();
  return {
    start(id, size) {
      totalSize += size;
      total ??= multi.create(0, 0, { name: 'total' });
      total.setTotal(totalSize);
      bars.set(id, multi.create(size, 0, { name: short(id) }));
    },
    advance(id, bytes) {
      bars.get(id)?.increment(bytes);
      total?.increment(bytes);
    },
    finish(id) {
      const bar = bars.get(id);
      if (bar) {
        bar.stop();
        multi.remove(bar);
        bars.delete(id);
      }
    },
    stop() {
      if (stopped) return;
      stopped = true;
      multi.stop();
    },
  };
}
