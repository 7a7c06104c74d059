// Small statistics over latency arrays (NaN entries are failed requests and are skipped).

export function median(values: number[]): number {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (!sorted.length) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Mean of the finite values in [from, to). */
export function meanRange(values: Float64Array, from: number, to: number): number {
  let sum = 0;
  let n = 0;
  for (let i = Math.max(0, from); i < Math.min(to, values.length); i++) {
    const v = values[i]!;
    if (Number.isFinite(v)) {
      sum += v;
      n++;
    }
  }
  return n ? sum / n : NaN;
}

/** Percentile (0..100) of the finite values in [from, to). */
export function percentile(values: Float64Array, p: number, from = 0, to = values.length): number {
  const slice = Array.from(values.subarray(Math.max(0, from), Math.min(to, values.length))).filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (!slice.length) return NaN;
  const rank = Math.min(slice.length - 1, Math.max(0, Math.ceil((p / 100) * slice.length) - 1));
  return slice[rank]!;
}

/** Mean latency of each consecutive window of `size` requests. */
export function windowMeans(values: Float64Array, count: number, size: number): number[] {
  const out: number[] = [];
  for (let from = 0; from < count; from += size) out.push(round(meanRange(values, from, Math.min(from + size, count)), 3));
  return out;
}

export function round(value: number, digits = 2): number {
  if (!Number.isFinite(value)) return value;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}
