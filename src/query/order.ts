// Order keys: strings whose byte order is the order of the values they encode, so that `gt`/`lt`
// and sorting run on an index. A key starts with its kind; values of different kinds never compare.
//   t  RFC 3339 timestamps (and plain dates), as milliseconds since 1970
//   v  versions: semver, loosely (`v1.2`, `2.3`, `1.2.3-rc.1+build`), and every number from 0 up
//      that is not written as a version: the whole number n (`401`, `1e4`) is the version n.0.0,
//      a fraction n + f (`1.5e-3`, `.5`) sorts after n.0.0 and before n.0.1, so such numbers
//      compare as numbers, with each other and with versions
//   u  negative numbers, as IEEE 754 bits: below every `v` key; `u` and `v` form one range, so
//      `gt=-1` holds for every non-negative number and version
// A decimal written `2.10` is the version 2.10.0 (above 2.9), which version annotations need.

export type OrderKind = 't' | 'v' | 'u';

const TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2}))?$/;
const VERSION = /^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;
const NUMBER = /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const WIDTH = 20;
// Keeps the key of a 1970-or-later time and of times up to ~31,000 years earlier positive.
const TIME_OFFSET = 1e15;

function padNumber(digits: string): string {
  const trimmed = digits.replace(/^0+(?=\d)/, '');
  return trimmed.length > WIDTH ? '9'.repeat(WIDTH) : trimmed.padStart(WIDTH, '0');
}

function timeKey(value: string): string | null {
  const match = TIME.exec(value);
  if (!match) return null;
  const ms = Date.parse(match[4] === undefined ? `${value}T00:00:00Z` : value.replace(' ', 'T').toUpperCase());
  if (!Number.isFinite(ms)) return null;
  return `t${String(ms + TIME_OFFSET).padStart(16, '0')}`;
}

// Release sorts after its prereleases ('1' > '0'); prerelease identifiers: numeric ones
// numerically and before alphanumeric ones, fewer identifiers first when all else is equal.
function versionKey(value: string): string | null {
  const match = VERSION.exec(value);
  if (!match) return null;
  const [, major, minor = '0', patch = '0', pre] = match;
  let key = `v${padNumber(major!)}.${padNumber(minor)}.${padNumber(patch)}`;
  if (pre === undefined) return `${key}1`;
  const parts = pre.split('.').map((id) => (/^\d+$/.test(id) ? `0${padNumber(id)}` : `1${id.toLowerCase()}`));
  key += `0${parts.join('\u0001')}`;
  return key;
}

function numberKey(value: string): string | null {
  if (!NUMBER.test(value)) return null;
  const n = Number(value);
  if (!Number.isFinite(n)) return null;
  if (n >= 0) {
    // From 0 up, numbers live among the versions (see above); -0 is 0.
    const whole = Math.floor(Math.abs(n));
    const key = versionKey(BigInt(whole).toString())!;
    const fraction = n - whole;
    return fraction > 0 ? `${key}\u0002${fraction.toFixed(20).slice(2).replace(/0+$/, '')}` : key;
  }
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, n);
  // A negative number with every bit flipped: unsigned order is then numeric order.
  const h = ~view.getUint32(0) >>> 0;
  const l = ~view.getUint32(4) >>> 0;
  return `u${h.toString(16).padStart(8, '0')}${l.toString(16).padStart(8, '0')}`;
}

/** The order key of a value, or null when it is not a time, a version or a number. */
export function orderKey(value: string): string | null {
  const trimmed = value.trim();
  if (trimmed === '' || trimmed.length > 256) return null;
  return timeKey(trimmed) ?? versionKey(trimmed) ?? numberKey(trimmed);
}

/**
 * The keys a key compares with: from `start` (inclusive) to `end` (exclusive), the bounds of a range
 * scan. Negative numbers (`u`) and whole numbers and versions (`v`) are one range.
 */
export function kindRange(key: string): { start: string; end: string } {
  const kind = key.charAt(0);
  if (kind === 'u' || kind === 'v') return { start: 'u', end: 'w' };
  return { start: kind, end: String.fromCharCode(key.charCodeAt(0) + 1) };
}

export function compareVersions(a: string, b: string): number {
  const ka = versionKey(a);
  const kb = versionKey(b);
  if (ka === null || kb === null) return ka === kb ? a.localeCompare(b) : ka === null ? 1 : -1;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

export function isVersion(value: string): boolean {
  return versionKey(value) !== null;
}
