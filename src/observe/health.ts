// Liveness and readiness. Alive: the process answers. Ready: start-up (the walk of storage, journal
// replay into every index.json) is done, the metadata index answers a query, and the data
// directory takes a write.
// Each check is one small query or one tiny file, and a result is reused for `cacheMs`, so a
// probe every second from several balancers costs next to nothing.

export interface ReadinessChecks {
  /** Resolves when the metadata index answers (one indexed lookup, no scan). */
  metadata(): Promise<unknown> | unknown;
  /** Resolves when a small file can be written and removed in the data directory. */
  storage(): Promise<unknown>;
  /** False while start-up still catches up with storage in the background (requests are answered meanwhile). */
  caughtUp?(): boolean;
}

export interface CheckResult {
  ok: boolean;
  ms?: number;
  error?: string;
}

export interface HealthReport {
  status: 'ok' | 'unavailable';
  checks: Record<string, CheckResult>;
}

export class Health {
  /**
   * Told of every failed check with its full error. The answer shows only the error's code: the
   * probes answer anyone, and a message may name paths, hosts or database users.
   */
  onCheckFailed: (check: string, err: unknown) => void = () => undefined;
  private checks: ReadinessChecks | undefined;
  private phase: 'starting' | 'serving' | 'stopping' = 'starting';
  private readonly startedAt = Date.now();
  private readonly cacheMs: number;
  private readonly checkTimeoutMs: number;
  private cached: { at: number; report: Promise<HealthReport> } | undefined;
  /** Checks still running: one that hangs is waited on again, not started once more per probe. */
  private readonly running = new Map<string, Promise<unknown>>();

  constructor(options: { cacheMs?: number; checkTimeoutMs?: number } = {}) {
    this.cacheMs = options.cacheMs ?? 1000;
    this.checkTimeoutMs = options.checkTimeoutMs ?? 2000;
  }

  /** The data directory is open and requests are answered: readiness checks can run. */
  serving(checks: ReadinessChecks): void {
    this.checks = checks;
    this.phase = 'serving';
    this.cached = undefined;
  }

  /** Shutdown began: balancers should stop sending requests here. */
  stopping(): void {
    this.phase = 'stopping';
    this.cached = undefined;
  }

  alive(): { status: 'ok'; uptimeSeconds: number } {
    return { status: 'ok', uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000) };
  }

  ready(): Promise<HealthReport> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.cacheMs) return this.cached.report;
    const report = this.evaluate();
    this.cached = { at: now, report };
    return report;
  }

  private async evaluate(): Promise<HealthReport> {
    // A balancer sends traffic once the start-up walk of storage is done: until then registry-wide
    // answers and pushes wait for it here, while replicas that are caught up answer at once.
    const caughtUp = this.checks?.caughtUp?.() ?? true;
    const startup: CheckResult = { ok: this.phase === 'serving' && caughtUp };
    if (this.phase !== 'serving') startup.error = this.phase === 'starting' ? 'start-up: the data directory is still being opened' : 'shutting down';
    else if (!caughtUp) startup.error = 'start-up: still adopting the layouts in storage (requests are answered meanwhile)';
    const checks: Record<string, CheckResult> = { startup };
    if (this.checks && this.phase === 'serving') {
      const probes = this.checks;
      const [metadata, storage] = await Promise.all([this.run('metadata', () => probes.metadata()), this.run('storage', () => probes.storage())]);
      checks.metadata = metadata;
      checks.storage = storage;
    }
    const ok = Object.values(checks).every((c) => c.ok) && this.phase === 'serving';
    return { status: ok ? 'ok' : 'unavailable', checks };
  }

  private async run(name: string, check: () => unknown): Promise<CheckResult> {
    const started = performance.now();
    let running = this.running.get(name);
    if (!running) {
      const attempt = Promise.resolve().then(check);
      running = attempt;
      this.running.set(name, attempt);
      attempt.finally(() => this.running.delete(name)).catch(() => undefined);
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`the ${name} check has not answered for ${this.checkTimeoutMs} ms`), { code: 'TIMEOUT' })), this.checkTimeoutMs);
    });
    try {
      await Promise.race([running, timeout]);
      return { ok: true, ms: +(performance.now() - started).toFixed(2) };
    } catch (err) {
      this.onCheckFailed(name, err);
      const code = (err as { code?: unknown } | null)?.code;
      const shown = typeof code === 'string' && /^[A-Za-z0-9_]{1,32}$/.test(code) ? ` (${code})` : '';
      return { ok: false, ms: +(performance.now() - started).toFixed(2), error: `the ${name} check failed${shown}; the server log has the details` };
    } finally {
      clearTimeout(timer);
    }
  }
}
