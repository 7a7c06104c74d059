// Renders the results as markdown tables (the figures in docs/benchmarks.md come from here).
// Each registry's figure is the median of its rounds; the comparison columns give the ratio for
// every round (the registries of a round ran back to back, so a round's ratio is the fairest one)
// and their median.
import type { BenchResults } from '../run.ts';
import { renderQueries } from '../query.ts';
import { PEAK_RSS_ROW, PEERS, TARGET_NAMES, type Measure, type SectionResult, type Target } from './harness.ts';
import { median } from './stats.ts';

function fmt(value: number | undefined, digits = 1): string {
  if (value === undefined || !Number.isFinite(value)) return '—';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** How Trellis fares against `against`: ≥ 1 means at or ahead, whichever way the measure runs. */
function advantage(trellis: number, against: number, higherIsBetter: boolean): number {
  return higherIsBetter ? trellis / against : against / trellis;
}

/** Per round: Trellis against the best of `peers` in that round. */
function roundRatios(values: Partial<Record<Target, number[]>>, trellis: Target, peers: readonly Target[], higherIsBetter: boolean): number[] {
  const mine = values[trellis] ?? [];
  return mine.map((v, r) => {
    const theirs = peers.map((p) => values[p]?.[r]).filter((x): x is number => x !== undefined && Number.isFinite(x) && x > 0);
    if (!theirs.length || !(v > 0)) return NaN;
    const best = higherIsBetter ? Math.max(...theirs) : Math.min(...theirs);
    return advantage(v, best, higherIsBetter);
  });
}

/** Node's floor (the sink, per round) against the best peer of the same round, as a median. */
function floorRatio(values: Partial<Record<Target, number[]>>, higherIsBetter: boolean, floor: number[] | undefined): { floorRatio?: number } {
  if (!floor?.length) return {};
  const ratios = roundRatios({ ...values, trellis: floor }, 'trellis', PEERS, higherIsBetter).filter(Number.isFinite);
  return ratios.length ? { floorRatio: median(ratios) } : {};
}

function ratioCell(ratios: number[]): string {
  const finite = ratios.filter(Number.isFinite);
  if (!finite.length) return '—';
  const m = median(finite);
  return `**${fmt(m, 2)}** (${finite.map((x) => fmt(x, 2)).join(', ')})`;
}

/** Rows that miss the goal (Trellis behind the best peer), collected for the summary. */
export interface Shortfall {
  section: string;
  row: string;
  ratio: number;
  /** Node's floor against the best peer, where the run measured one. */
  floorRatio?: number;
}

function sectionTable(name: string, section: SectionResult, targets: readonly Target[], shortfalls: Shortfall[]): string[] {
  const lines: string[] = [];
  const cols = targets.map((t) => TARGET_NAMES[t]);
  lines.push(`### ${name}`, '');
  lines.push(`| measure | ${cols.join(' | ')} | Trellis vs best peer, median (per round) | Trellis fsync vs distribution |`);
  lines.push(`| --- | ${cols.map(() => '---:').join(' | ')} | ---: | ---: |`);
  const add = (label: string, values: Partial<Record<Target, number[]>>, higherIsBetter: boolean, digits: number, compare: boolean, m?: Measure, longLabel = label, floor?: number[]) => {
    const cells = targets.map((t) => {
      const v = values[t];
      if (!v?.length) return '—';
      const med = median(v);
      const flag = m?.expected !== undefined && v.some((x) => x !== m.expected) ? ` ✗ (of ${fmt(m.expected, 0)})` : '';
      return fmt(med, digits) + flag;
    });
    let vsBest = '';
    let vsDist = '';
    if (compare) {
      const ratios = roundRatios(values, 'trellis', PEERS, higherIsBetter);
      vsBest = ratioCell(ratios);
      vsDist = ratioCell(roundRatios(values, 'trellis-fsync', ['distribution'], higherIsBetter));
      const m2 = median(ratios.filter(Number.isFinite));
      if (Number.isFinite(m2) && m2 < 1) shortfalls.push({ section: name, row: longLabel, ratio: m2, ...floorRatio(values, higherIsBetter, floor) });
    }
    lines.push(`| ${label} | ${cells.join(' | ')} | ${vsBest} | ${vsDist} |`);
  };
  for (const m of section.measures) {
    add(m.label, m.rounds, m.higherIsBetter, m.digits ?? 1, !m.noComparison && m.expected === undefined, m, m.label, m.floor);
    if (m.cpuMsPerOp) add(`↳ server CPU per operation (ms)`, m.cpuMsPerOp, false, 2, true, undefined, `${m.label}: server CPU per operation`);
  }
  const mib = (kib: number | undefined) => (kib === undefined ? undefined : kib / 1024);
  const memRow = (label: string, figures: SectionResult['memory']) => {
    const values: Partial<Record<Target, number[]>> = {};
    for (const t of targets) {
      const v = mib(figures[t]?.peakKiB);
      if (v !== undefined) values[t] = [v];
    }
    const floor = section.memoryFloor?.[label];
    add(label, values, false, 0, true, undefined, label, floor === undefined ? undefined : [floor]);
  };
  memRow(PEAK_RSS_ROW, section.memory);
  for (const [label, figures] of Object.entries(section.memoryAt ?? {})) memRow(`peak RSS ${label} (MiB)`, figures);
  if (section.references) {
    lines.push('');
    for (const [label, runs] of Object.entries(section.references)) {
      if (runs.length) lines.push(`- ${label}: ${fmt(median(runs))} (rounds: ${runs.map((v) => fmt(v)).join(', ')})`);
    }
  }
  lines.push('', `Other processes used ${fmt(section.otherCores, 2)} cores on average meanwhile.`);
  for (const note of section.notes) lines.push('', note);
  return lines;
}

export function renderMarkdown(r: BenchResults): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(`# Trellis vs olareg and distribution 2.8: ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC`, '');
  lines.push(`${m.nproc} cores, ${m.cpuModel}; Node ${m.node}; distribution ${m.distribution.replace(/^\S+\s+\S+\s+/, '')}; olareg ${m.olareg}; ${m.zot ? `zot ${m.zot}; ` : ''}${m.openssl}; `
    + `Trellis ${m.trellisCommit}. ${r.settings.rounds} rounds${r.settings.quick ? ' (BENCH_QUICK)' : ''}; run took ${r.durationS ?? '?'} s. MB = 10⁶ bytes.`, '');
  lines.push('Figures are medians of the rounds. "Trellis vs best peer" compares Trellis in its default durability with the best of olareg, distribution (and zot, when measured) in the same round; '
    + '"Trellis fsync vs distribution" compares Trellis with `fsync: true` with distribution. ≥ 1 means Trellis is at or ahead (for times, CPU and memory: the peer\'s figure ÷ Trellis\'s). '
    + 'A ✗ marks a checked count that a registry missed in some round.', '');
  if (r.settings.targets.includes('trellis-postgres')) {
    lines.push('"Trellis on PostgreSQL" is Trellis in its default durability with its metadata on PostgreSQL (durable commits); it is not in the comparison columns, '
      + 'and its server CPU and RSS are the Trellis process\'s only, not PostgreSQL\'s.', '');
  }
  if (r.settings.targets.some((t) => t === 'trellis-s3' || t === 'trellis-s3x3')) {
    lines.push('"Trellis S3+PG ×1" and "×3" are the HA layout (docs/deployment.md): 1 or 3 replicas on PostgreSQL (durable commits) and a bucket on versitygw, '
      + 'reached through nginx round-robin; not in the comparison columns. Their server CPU and RSS are the replicas\' summed '
      + '(not nginx\'s, PostgreSQL\'s or versitygw\'s: those show in "other processes").', '');
  }
  const shortfalls: Shortfall[] = [];
  for (const [name, section] of Object.entries(r.sections)) {
    if (section) lines.push(...sectionTable(name, section, r.settings.targets, shortfalls), '');
  }
  if (shortfalls.length) {
    lines.push('### Rows where Trellis is behind the best peer', '');
    for (const s of shortfalls) lines.push(`- ${s.section}: ${s.row}: ${fmt(s.ratio, 2)}${s.floorRatio === undefined ? '' : ` (Node's floor, the sink: ${fmt(s.floorRatio, 2)})`}`);
    lines.push('');
  }
  if (r.errors.length) lines.push('**Errors:**', ...r.errors.map((e) => `- ${e.split('\n')[0]}`), '');
  if (r.queries) lines.push(renderQueries(r.queries).trimEnd(), '');
  if (r.trellisLogWarnings.length) lines.push(`Trellis logged ${r.trellisLogWarnings.length} warning line(s) at --log-level warn; see the JSON.`);
  return lines.join('\n') + '\n';
}
