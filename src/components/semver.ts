// Loose semantic versions as OCM reads them: an optional `v`, one to three numeric parts, then
// `-prerelease` and `+build`. Constraints follow the Masterminds grammar OCM uses:
// `>=1.0.0 <2.0.0`, `>=1, <2`, `~1.2`, `^0.3.1`, `1.2.x`, `1.0 - 2.0`, alternatives with `||`.
import { queryError } from './query.ts';

export interface Version {
  major: number;
  minor: number;
  patch: number;
  prerelease: string[];
  build: string;
  original: string;
}

const LOOSE = /^v?(0|[1-9]\d{0,15})(?:\.(0|[1-9]\d{0,15}))?(?:\.(0|[1-9]\d{0,15}))?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$/;

export function parseVersion(text: string): Version | undefined {
  const m = LOOSE.exec(text);
  if (!m) return undefined;
  return {
    major: Number(m[1]), minor: Number(m[2] ?? 0), patch: Number(m[3] ?? 0),
    prerelease: m[4] ? m[4].split('.') : [], build: m[5] ?? '', original: text,
  };
}

export function isVersionLike(text: string): boolean {
  return parseVersion(text) !== undefined;
}

function compareIdentifiers(a: string, b: string): number {
  const an = /^\d+$/.test(a);
  const bn = /^\d+$/.test(b);
  if (an && bn) return Number(a) - Number(b);
  if (an !== bn) return an ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Semver precedence; build metadata does not count. */
export function compare(a: Version, b: Version): number {
  const core = a.major - b.major || a.minor - b.minor || a.patch - b.patch;
  if (core) return Math.sign(core);
  if (!a.prerelease.length && !b.prerelease.length) return 0;
  if (!a.prerelease.length) return 1;
  if (!b.prerelease.length) return -1;
  for (let i = 0; i < Math.max(a.prerelease.length, b.prerelease.length); i++) {
    if (i >= a.prerelease.length) return -1;
    if (i >= b.prerelease.length) return 1;
    const c = compareIdentifiers(a.prerelease[i]!, b.prerelease[i]!);
    if (c) return Math.sign(c);
  }
  return 0;
}

/**
 * A total order for version strings: semver precedence, then the text (so `1.0.0+a` and
 * `1.0.0+b`, equal in precedence, still have a stable order), non-versions last.
 */
export function compareVersionStrings(a: string, b: string): number {
  const va = parseVersion(a);
  const vb = parseVersion(b);
  if (va && vb) return compare(va, vb) || (a < b ? -1 : a > b ? 1 : 0);
  if (va || vb) return va ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

type Op = '=' | '!=' | '>' | '<' | '>=' | '<=';
interface Bound {
  op: Op;
  version: Version;
}

export type Constraint = Bound[][];

function invalid(text: string, why: string): Error {
  return queryError(`constraint ${JSON.stringify(text.slice(0, 200))} is not valid: ${why}`);
}

const v = (major: number, minor: number, patch: number, prerelease: string[] = []): Version => ({ major, minor, patch, prerelease, build: '', original: '' });

/** Expands one `op version` term (wildcards, ~, ^) into plain bounds. */
function term(op: string, raw: string, whole: string): Bound[] {
  const m = /^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/.exec(raw);
  if (!m) throw invalid(whole, `${JSON.stringify(raw.slice(0, 50))} is not a version`);
  const wild = (s: string | undefined) => s === undefined || /^[xX*]$/.test(s);
  const parts = [m[1], m[2], m[3]];
  const fixed = parts.findIndex(wild);
  const count = fixed === -1 ? 3 : fixed; // how many leading parts are given
  const [major, minor, patch] = parts.map((p) => (wild(p) ? 0 : Number(p))) as [number, number, number];
  const pre = m[4] ? m[4].split('.') : [];
  const low = v(major, minor, patch, pre);
  // The first version past the given parts (for 1.2.x: 1.3.0; for 1.x: 2.0.0).
  const next = count === 0 ? undefined : count === 1 ? v(major + 1, 0, 0) : count === 2 ? v(major, minor + 1, 0) : undefined;
  if (count === 0) return op === '<' || op === '!=' ? [{ op: '<', version: v(0, 0, 0) }] : [];
  switch (op) {
    case '':
    case '=':
      return next ? [{ op: '>=', version: low }, { op: '<', version: next }] : [{ op: '=', version: low }];
    case '!=':
      if (next) throw invalid(whole, '!= with a wildcard is not supported');
      return [{ op: '!=', version: low }];
    case '>':
      return next ? [{ op: '>=', version: next }] : [{ op: '>', version: low }];
    case '>=':
    case '=>':
      return [{ op: '>=', version: low }];
    case '<':
      return [{ op: '<', version: low }];
    case '<=':
    case '=<':
      return next ? [{ op: '<', version: next }] : [{ op: '<=', version: low }];
    case '~':
    case '~>':
      return [{ op: '>=', version: low }, { op: '<', version: count === 1 ? v(major + 1, 0, 0) : v(major, minor + 1, 0) }];
    case '^': {
      const upper = major > 0 || count === 1 ? v(major + 1, 0, 0) : minor > 0 || count === 2 ? v(0, minor + 1, 0) : v(0, 0, patch + 1);
      return [{ op: '>=', version: low }, { op: '<', version: upper }];
    }
    default:
      throw invalid(whole, `unknown operator ${JSON.stringify(op)}`);
  }
}

/** Parses a constraint; throws QueryInvalid naming what is wrong. */
export function parseConstraint(text: string): Constraint {
  if (!text.trim()) throw invalid(text, 'it is empty');
  if (text.length > 1000) throw invalid(text, 'it is too long');
  return text.split('||').map((alternative) => {
    const bounds: Bound[] = [];
    const hyphen = /^\s*(\S+)\s+-\s+(\S+)\s*$/.exec(alternative);
    if (hyphen) return [...term('>=', hyphen[1]!, text), ...term('<=', hyphen[2]!, text)];
    // Operators may be separated from their version by spaces: `>= 1.0`.
    const tokens = alternative.replace(/([<>=!~^]+)\s+/g, '$1').split(/[\s,]+/).filter(Boolean);
    if (!tokens.length) throw invalid(text, 'an alternative is empty');
    for (const token of tokens) {
      const m = /^(!=|>=|=>|<=|=<|~>|[=<>~^])?(.*)$/.exec(token)!;
      bounds.push(...term(m[1] ?? '', m[2]!, text));
    }
    return bounds;
  });
}

function holds(bound: Bound, version: Version): boolean {
  const c = compare(version, bound.version);
  switch (bound.op) {
    case '=': return c === 0;
    case '!=': return c !== 0;
    case '>': return c > 0;
    case '<': return c < 0;
    case '>=': return c >= 0;
    case '<=': return c <= 0;
  }
}

export function satisfies(version: string, constraint: Constraint): boolean {
  const parsed = parseVersion(version);
  return parsed !== undefined && constraint.some((bounds) => bounds.every((b) => holds(b, parsed)));
}
