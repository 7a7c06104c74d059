// Named locks. `Locks` is what the registry, storage and uploads ask for: work on one key (a
// repository, a blob's digest, an upload session) runs in order, different keys run freely.
// KeyedLock does it inside one process; the metadata store hands out locks that also hold across
// processes when several replicas share it (src/metadata/postgres-locks.ts).
export interface Locks {
  /** Whether holders in other processes are excluded too, not only this process's. */
  readonly shared: boolean;
  /** Runs work once the key is free; the key is held until work settles. */
  run<T>(key: string, work: () => Promise<T>): Promise<T>;
  /** Runs work only if the key is free now; `undefined` when it is held (work did not run). */
  tryRun<T>(key: string, work: () => Promise<T>): Promise<{ value: T } | undefined>;
  /**
   * Calls `listener` if locks held at that moment were taken away (shared locks whose connection
   * ended): the work under them still runs, but no longer excludes the other processes.
   */
  whenLost(listener: (reason: string) => void): void;
}

/** One queue per key, inside this process. */
export class KeyedLock implements Locks {
  readonly shared = false;
  private readonly tails = new Map<string, Promise<unknown>>();

  /** Never called: these locks live and die with this process. */
  whenLost(_listener: (reason: string) => void): void {}

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const next = previous.then(work, work);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  async tryRun<T>(key: string, work: () => Promise<T>): Promise<{ value: T } | undefined> {
    if (this.tails.has(key)) return undefined;
    return { value: await this.run(key, work) };
  }
}
