// The layout writer: a failed index.json rewrite is retried by itself (with backoff), so the layout
// catches up with the journal even if nothing else ever changes in the repository.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestRegistry } from '../helpers/registry.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';

test('a failed index.json rewrite is retried without waiting for another change', async () => {
  const reg = await startTestRegistry();
  const repo = 'retry/app';
  try {
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // The disk refuses the next three index.json writes (full, or a transient I/O error).
    const driver = reg.registry.driver;
    const writeAtomic = driver.writeAtomic.bind(driver);
    let refused = 0;
    driver.writeAtomic = async (key, data, beforeCommit) => {
      if (key.endsWith('/index.json') && refused < 3) {
        refused++;
        throw Object.assign(new Error('ENOSPC: no space left on device (injected)'), { code: 'ENOSPC' });
      }
      return writeAtomic(key, data, beforeCommit);
    };
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v2', image)).status, 201);
    // No other change follows; the layout must still catch up (retries after 100, 200, 400 ms).
    const listed = async () => (await readFile(join(reg.dataDir, repo, 'index.json'), 'utf8')).includes(image.digest);
    for (const deadline = Date.now() + 10_000; !(await listed()); await sleep(50)) {
      assert.ok(Date.now() < deadline, `index.json still misses v2 ${refused} refused writes later`);
    }
    assert.equal(refused, 3);
    const repoRecord = reg.registry.metadata.repository(repo)!;
    assert.equal(repoRecord.flushedGen, repoRecord.gen);
  } finally {
    await reg.dispose();
  }
});
