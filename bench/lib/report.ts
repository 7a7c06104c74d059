// Renders the results as a markdown table (the figures in docs/benchmarks.md come from here).
import type { BenchResults, Target } from '../run.ts';
import { renderQueries } from '../query.ts';

type Cell = number | string | null | undefined;

function fmt(value: Cell, digits = 1): string {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'string') return value;
  if (!Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: Cell, b: Cell, digits = 2): string {
  if (typeof a !== 'number' || typeof b !== 'number' || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '—';
  return `${fmt(a / b, digits)}×`;
}

const mib = (kib: number | undefined) => (kib === undefined ? undefined : kib / 1024);

export function renderMarkdown(r: BenchResults): string {
  const rows: string[][] = [];
  // Trellis on PostgreSQL metadata, when measured, is a column beside Trellis on SQLite; its cell
  // for a row is read from the same field of its section (set just before each row).
  const withPostgres = r.settings.targets.includes('trellis-postgres');
  let onPostgres: Cell;
  const row = (label: string, t: Cell, d: Cell, vs: string, digits = 1) => {
    rows.push(withPostgres ? [label, fmt(t, digits), fmt(onPostgres, digits), fmt(d, digits), vs] : [label, fmt(t, digits), fmt(d, digits), vs]);
    onPostgres = undefined;
  };
  const server = <T>(map: Partial<Record<Target, T>> | undefined, target: Target): T | undefined => map?.[target];

  const tp = r.throughput;
  if (tp) {
    const t = server(tp.servers, 'trellis');
    const d = server(tp.servers, 'distribution');
    const size = `${Math.round(tp.blobBytes / 1048576)} MiB`;
    row(`Blob push, ${size} monolithic (MB/s, median of ${r.settings.blobRuns})`, t?.pushMBps, d?.pushMBps, ratio(t?.pushMBps, d?.pushMBps));
    row(`Blob pull, ${size} (MB/s, median of ${r.settings.blobRuns})`, t?.pullMBps, d?.pullMBps, ratio(t?.pullMBps, d?.pullMBps));
    row('Push ÷ `openssl dgst -sha256` (goal ≥ 0.7)', t?.pushOverOpenssl, d?.pushOverOpenssl, '', 2);
  }
  const mf = r.manifests;
  if (mf) {
    const t = server(mf.servers, 'trellis');
    const d = server(mf.servers, 'distribution');
    const n = r.settings.manifests;
    const p = server(mf.servers, 'trellis-postgres');
    onPostgres = p?.single.perSecond;
    row(`Manifest PUT by tag, 1 client (pushes/s, ${n})`, t?.single.perSecond, d?.single.perSecond, ratio(t?.single.perSecond, d?.single.perSecond));
    onPostgres = p?.concurrent.perSecond;
    row(`Manifest PUT by tag, ${r.settings.concurrency} clients (pushes/s, ${n})`, t?.concurrent.perSecond, d?.concurrent.perSecond, ratio(t?.concurrent.perSecond, d?.concurrent.perSecond));
    onPostgres = p?.concurrent.p99Ms;
    row(`Manifest PUT latency p99, ${r.settings.concurrency} clients (ms)`, t?.concurrent.p99Ms, d?.concurrent.p99Ms, ratio(t?.concurrent.p99Ms, d?.concurrent.p99Ms), 2);
    onPostgres = p?.cpuMsPerPush;
    row('Server CPU time per manifest push (ms, Trellis server only; PostgreSQL\'s own CPU not counted)', t?.cpuMsPerPush, d?.cpuMsPerPush, ratio(t?.cpuMsPerPush, d?.cpuMsPerPush), 2);
  }
  const rf = r.referrers;
  if (rf) {
    const t = server(rf.servers, 'trellis');
    const d = server(rf.servers, 'distribution');
    const w = (t ?? d)?.window ?? r.settings.referrerWindow;
    const done = (x: typeof t) => (x ? (x.completed === x.requested ? fmt(x.completed, 0) : `${fmt(x.completed, 0)} of ${fmt(x.requested, 0)} (${x.stoppedBy})`) : undefined);
    row(`Referrers pushed into one repository, ${r.settings.concurrency} clients`, done(t), done(d), '');
    const p = server(rf.servers, 'trellis-postgres');
    onPostgres = p?.firstMeanMs;
    row(`Referrer push mean latency, first ${fmt(w, 0)} (ms)`, t?.firstMeanMs, d?.firstMeanMs, ratio(t?.firstMeanMs, d?.firstMeanMs), 2);
    onPostgres = p?.lastMeanMs;
    row(`Referrer push mean latency, last ${fmt(w, 0)} (ms)`, t?.lastMeanMs, d?.lastMeanMs, ratio(t?.lastMeanMs, d?.lastMeanMs), 2);
    onPostgres = p?.lastOverFirst;
    row('Last ÷ first (goal ≤ 2)', t?.lastOverFirst, d?.lastOverFirst, '', 2);
    row(`Referrer push p99, last ${fmt(w, 0)} (ms)`, t?.lastP99Ms, d?.lastP99Ms, ratio(t?.lastP99Ms, d?.lastP99Ms), 2);
    row('Referrer pushes/s, whole run', t?.perSecond, d?.perSecond, ratio(t?.perSecond, d?.perSecond));
    row('Server CPU time per referrer push (ms)', t?.cpuMsPerPush, d?.cpuMsPerPush, ratio(t?.cpuMsPerPush, d?.cpuMsPerPush), 2);
    const listing = (x: typeof t) => (x ? (x.listing.status === 200 ? `${fmt(x.listing.ms, 0)} ms, ${fmt(x.listing.manifests, 0)} in ${x.listing.pages} pages` : `HTTP ${x.listing.status} (no API)`) : undefined);
    row('GET /v2/<repo>/referrers/<subject>, all pages', listing(t), listing(d), '');
    row('SIGTERM to exit after the referrers (s)', t ? t.stopMs / 1000 : undefined, d ? d.stopMs / 1000 : undefined, '', 2);
  }
  for (const [name, section] of [['throughput', tp], ['manifests', mf], ['referrers', rf]] as const) {
    if (!section) continue;
    const t = mib(section.servers.trellis?.memory?.peakKiB);
    const d = mib(section.servers.distribution?.memory?.peakKiB);
    row(`Peak RSS (VmHWM) after ${name} (MiB)`, t, d, ratio(t, d));
  }
  for (const [name, section] of [['throughput', tp], ['manifests', mf], ['referrers', rf]] as const) {
    if (!section) continue;
    row(`Other processes' CPU during ${name} (cores, avg)`, section.servers.trellis?.otherCores, section.servers.distribution?.otherCores, '', 2);
  }

  const lines: string[] = [];
  const m = r.machine;
  lines.push(`# Trellis vs distribution 2.8: ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`, '');
  lines.push(`${m.nproc} cores, ${m.cpuModel}; Node ${m.node}; distribution ${m.distribution.replace(/^\S+\s+\S+\s+/, '')}; ${m.openssl}; Trellis ${m.trellisCommit}. Run took ${r.durationS ?? '?'} s.`, '');
  if (withPostgres) lines.push('| measure | Trellis (SQLite) | Trellis (PostgreSQL) | distribution 2.8 | Trellis ÷ distribution |', '| --- | ---: | ---: | ---: | ---: |');
  else lines.push('| measure | Trellis | distribution 2.8 | Trellis ÷ distribution |', '| --- | ---: | ---: | ---: |');
  for (const cells of rows) lines.push(`| ${cells.join(' | ')} |`);
  if (tp) {
    lines.push('', `Reference on the same ${Math.round(tp.blobBytes / 1048576)} MiB file: \`openssl dgst -sha256\` ${fmt(tp.opensslMBps)} MB/s (runs ${tp.opensslRunsMBps.map((v) => fmt(v)).join(', ')}); `
      + `the same client pushing to a node:http server that only hashes the body: ${fmt(tp.sinkPushMBps)} MB/s. MB = 10⁶ bytes.`);
  }
  if (mf) lines.push('', `Manifests are ${mf.manifestBytes} bytes; referrer manifests ${rf?.referrerBytes ?? '—'} bytes.`);
  lines.push('', `"Other processes' CPU" is what the rest of the machine used while each server was measured (from /proc/stat, less the server and the harness); the client runs on the same ${m.nproc} cores as the servers.`);
  if (r.errors.length) lines.push('', '**Errors:**', ...r.errors.map((e) => `- ${e.split('\n')[0]}`));
  const pushErrors: string[] = [];
  for (const target of ['trellis', 'distribution'] as const) {
    for (const [name, phase] of [['manifests 1 client', mf?.servers[target]?.single], ['manifests concurrent', mf?.servers[target]?.concurrent], ['referrers', rf?.servers[target]]] as const) {
      if (phase && phase.errors) pushErrors.push(`- ${target} ${name}: ${phase.errors} failed requests, e.g. ${phase.firstErrors[0] ?? ''}`);
    }
  }
  if (pushErrors.length) lines.push('', '**Failed requests:**', ...pushErrors);
  if (r.queries) lines.push('', renderQueries(r.queries).trimEnd());
  if (r.trellisLogWarnings.length) lines.push('', `Trellis logged ${r.trellisLogWarnings.length} warning line(s) at --log-level warn; see the JSON.`);
  return lines.join('\n') + '\n';
}
