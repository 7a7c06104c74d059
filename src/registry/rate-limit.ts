// Token buckets keyed by client: a burst of `burst` requests, refilled at `perSecond`.
// Buckets idle long enough to be full again are forgotten, so memory follows active clients only.

export interface RateLimit {
  /** Sustained requests per second; 0 turns the limit off. */
  perSecond: number;
  burst: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly limit: RateLimit;
  private readonly now: () => number;
  private lastSweep: number;

  constructor(limit: RateLimit, now: () => number = () => performance.now()) {
    this.limit = limit;
    this.now = now;
    this.lastSweep = now();
  }

  /** Takes one token for `key`; returns 0 when allowed, else the seconds to wait before retrying. */
  take(key: string, cost = 1): number {
    const { perSecond, burst } = this.limit;
    if (perSecond <= 0) return 0;
    const now = this.now();
    this.sweep(now);
    const capacity = Math.max(burst, 1);
    const bucket = this.buckets.get(key) ?? { tokens: capacity, at: now };
    bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
    bucket.at = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens >= cost) {
      bucket.tokens -= cost;
      return 0;
    }
    return Math.max(1, Math.ceil((cost - bucket.tokens) / perSecond));
  }

  /** Seconds until `cost` tokens are available for `key` (0: now), without taking any. */
  wait(key: string, cost = 1): number {
    const { perSecond, burst } = this.limit;
    if (perSecond <= 0) return 0;
    const bucket = this.buckets.get(key);
    const capacity = Math.max(burst, 1);
    const tokens = bucket ? Math.min(capacity, bucket.tokens + ((this.now() - bucket.at) / 1000) * perSecond) : capacity;
    return tokens >= cost ? 0 : Math.max(1, Math.ceil((cost - tokens) / perSecond));
  }

  private sweep(now: number): void {
    const fullAfterMs = (Math.max(this.limit.burst, 1) / this.limit.perSecond) * 1000;
    if (now - this.lastSweep < fullAfterMs) return;
    this.lastSweep = now;
    for (const [key, bucket] of this.buckets) if (now - bucket.at >= fullAfterMs) this.buckets.delete(key);
  }
}
