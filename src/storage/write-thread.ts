// One thread that writes upload bytes to their files. Handing a chunk's memory to it (a transfer,
// not a copy) takes the chunk off the main thread at once: the main thread then neither waits on
// file writes nor carries megabytes of pending socket buffers, whose external memory made V8
// collect its old generation again and again. A 100 MiB push with curl went from a median of 293
// to 496 MB/s, with less server CPU (docs/benchmarks.md, session 15).
import { Worker } from 'node:worker_threads';

interface Pending {
  resolve(): void;
  reject(err: Error): void;
}

class WriteThread {
  private worker: Worker | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  /**
   * Appends `chunks` to `fd`, in order with earlier calls. With `handOver` the chunks' memory is
   * given to the thread (the chunks are empty afterwards); otherwise it is copied.
   */
  write(fd: number, chunks: Buffer[], handOver: boolean): Promise<void> {
    const worker = this.started();
    const id = this.nextId++;
    try {
      worker.postMessage({ id, fd, chunks }, handOver ? transferable(chunks) : []);
    } catch (err) {
      // Memory that cannot be handed over (marked untransferable) is copied instead; a chunk that
      // cannot be sent at all (its memory already given away) fails this write.
      if (!handOver) return Promise.reject(err as Error);
      try {
        worker.postMessage({ id, fd, chunks });
      } catch (again) {
        return Promise.reject(again as Error);
      }
    }
    if (this.pending.size === 0) worker.ref(); // an unfinished write keeps the process alive
    return new Promise<void>((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    // None of the process's own flags apply (`--input-type`, for one, would stop it loading).
    const worker = new Worker(new URL('./write-thread.worker.mjs', import.meta.url), { execArgv: [] });
    worker.unref();
    worker.on('message', ({ id, error }: { id: number; error?: { message: string; code?: string } }) => {
      const pending = this.pending.get(id);
      this.pending.delete(id);
      if (this.pending.size === 0) worker.unref();
      if (error) pending?.reject(Object.assign(new Error(error.message), { code: error.code }));
      else pending?.resolve();
    });
    // A thread that dies fails what it was given; the next write starts another.
    const failAll = (err: Error) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      for (const pending of this.pending.values()) pending.reject(err);
      this.pending.clear();
    };
    worker.on('error', failAll);
    worker.on('exit', (code) => failAll(new Error(`the write thread exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }
}

/**
 * The memory of chunks that own all of it, once each. A slice of a larger buffer (a socket read
 * that also held headers, a pool) is left out, and so copied: its neighbours are not ours to give.
 */
function transferable(chunks: Buffer[]): ArrayBuffer[] {
  const owned = new Set<ArrayBuffer>();
  for (const chunk of chunks) {
    const memory = chunk.buffer;
    if (memory instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === memory.byteLength) owned.add(memory);
  }
  return [...owned];
}

/** The process's write thread, started on first use. */
export const writeThread = new WriteThread();
