// The body of the write thread (see write-thread.ts). Plain JavaScript: a worker does not get the
// type-stripping hooks the launcher installs when Trellis runs from node_modules.
import { writevSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

/** Writes every byte of `chunks` at the end of `fd` (opened for appending); finishes short writes. */
function writeAll(fd, chunks) {
  let total = 0;
  for (const chunk of chunks) total += chunk.byteLength;
  let written = writevSync(fd, chunks);
  while (written < total) {
    let skip = written;
    const rest = [];
    for (const chunk of chunks) {
      if (skip >= chunk.byteLength) skip -= chunk.byteLength;
      else {
        rest.push(chunk.subarray(skip));
        skip = 0;
      }
    }
    written += writevSync(fd, rest);
  }
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
