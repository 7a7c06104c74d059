// The artifact graph endpoint (`/v2/<name>/_trellis/graph/<ref>`) and its limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';
import { startTestRegistry } from '../helpers/registry.ts';

test('graph walks spend the client\'s query budget: a walk reads up to 100,000 edges whatever the page size', async () => {
  const limited = await startTestRegistry({ queryRatePerSecond: 0.5, queryRateBurst: 2 });
  try {
    assert.equal((await pushBuilt(limited.url, 'team/app', 'v1', makeImage())).status, 201);
    const statuses: number[] = [];
    let last: Response | undefined;
    for (const path of ['/v2/team/app/_trellis/graph/v1?depth=16&n=1', '/v2/team/app/_trellis/graph/v1?direction=up&depth=16', '/v2/team/app/_trellis/graph/v1?depth=16&n=1', '/v2/_trellis/tree']) {
      last = await fetch(`${limited.url}${path}`);
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 429, 429]);
    assert.equal(last!.headers.get('retry-after'), '2');
    assert.equal(((await last!.json()) as { errors: { code: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
  } finally {
    await limited.dispose();
  }
});
