// The body of the write thread (see write-thread.ts). Plain JavaScript: a worker does not get the
// type-stripping hooks the launcher installs when Trellis runs from node_modules.
import { writevSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

/** Writes every byte of `chunks` at the end of `fd` (opened for appending); finishes short writes. */
function writeAll(fd, chunks) {
  const total = chunks.reduce((sum, chunk) => sum + chunk.byteLength, 0);
  let written = writevSync(fd, chunks);
  // Short writes are rare (a full disk reports an error instead): the rest goes in one piece.
  while (written < total) written += writevSync(fd, [Buffer.concat(chunks).subarray(written)]);
}

/**
 * Frees the chunks' memory now rather than at this thread's next collection, which V8 schedules
 * late for memory outside its heap: the process's peak memory then grows by tens of MiB.
 */
function release(chunks) {
  for (const chunk of chunks) if (!chunk.buffer.detached) chunk.buffer.transfer(0);
}

parentPort.on('message', ({ id, fd, chunks }) => {
  try {
    writeAll(fd, chunks);
    parentPort.postMessage({ id });
  } catch (err) {
    parentPort.postMessage({ id, error: { message: err.message, code: err.code } });
  } finally {
    release(chunks);
  }
});
