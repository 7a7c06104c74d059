// Fills a registry the way users do: oras pushes an image and attaches a three-level referrer
// chain (signature, its SBOM, that SBOM's attestation), an OCM component arrives from a transport
// archive, and a ko-style index lists images in nested namespaces.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FIXTURES, importCtf } from '../components/ocm-client.ts';
import { OCI_INDEX, OCI_MANIFEST, makeImage, pushBuilt, pushManifest, sha256 } from '../helpers/oci-client.ts';

const run = promisify(execFile);

export const TYPES = {
  app: 'application/vnd.example.app',
  signature: 'application/vnd.example.signature',
  sbom: 'application/spdx+json',
  attestation: 'application/vnd.in-toto+json',
};

export interface Filled {
  app: { repository: string; tag: string; digest: string };
  chain: string[];
  nested: { parent: string; tag: string; children: { repository: string; digest: string }[] };
  component: { name: string; repository: string };
}

export async function fillRegistry(base: string, host: string, oras: string): Promise<Filled> {
  const work = await mkdtemp(join(tmpdir(), 'trellis-ui-fill-'));
  const env = { ...process.env, HOME: work, NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1' };
  const exec = async (args: string[]) => (await run(oras, args, { cwd: work, env, timeout: 60_000 })).stdout;
  try {
    await writeFile(join(work, 'app.txt'), 'the application\n');
    await writeFile(join(work, 'sig.json'), '{"signature":"abc"}\n');
    await writeFile(join(work, 'sbom.json'), '{"spdxVersion":"SPDX-2.3"}\n');
    await writeFile(join(work, 'att.json'), '{"_type":"https://in-toto.io/Statement/v1"}\n');
    const pushed = JSON.parse(await exec(['push', '--plain-http', '--format', 'json', `${host}/demo/app:v1`, 'app.txt:text/plain', '--artifact-type', TYPES.app,
      '--annotation', 'org.opencontainers.image.version=1.4.2', '--annotation', 'org.opencontainers.image.vendor=acme'])) as { digest: string };
    await exec(['tag', '--plain-http', `${host}/demo/app:v1`, 'v1.4', 'latest']);
    const chain = [pushed.digest];
    const attach = [['sig.json', TYPES.signature], ['sbom.json', TYPES.sbom], ['att.json', TYPES.attestation]] as const;
    for (const [file, type] of attach) {
      const out = JSON.parse(await exec(['attach', '--plain-http', '--format', 'json', '--artifact-type', type, '--annotation', `level=${chain.length}`,
        `${host}/demo/app@${chain[chain.length - 1]}`, `${file}:application/json`])) as { digest: string };
      chain.push(out.digest);
    }
    // A second signature on the app, so the artifact-type filter has something to filter.
    await exec(['attach', '--plain-http', '--artifact-type', TYPES.sbom, `${host}/demo/app:v1`, 'sbom.json:application/json']);
    for (let i = 0; i < 3; i++) await exec(['push', '--plain-http', `${host}/demo/tools/cli-${i}:1.0.${i}`, 'app.txt:text/plain']);

    // ko-style: images in team/app/ko-build/{api,web}, an index in team/app/ko-build naming them.
    const children: { repository: string; digest: string }[] = [];
    const entries = [];
    for (const part of ['api', 'web']) {
      const image = makeImage({ config: { architecture: part === 'api' ? 'amd64' : 'arm64', os: 'linux', part } });
      const repository = `team/app/ko-build/${part}`;
      const result = await pushBuilt(base, repository, part, image);
      if (result.status !== 201) throw new Error(`push ${repository}: ${result.status}`);
      children.push({ repository, digest: image.digest });
      entries.push({ mediaType: OCI_MANIFEST, digest: image.digest, size: image.bytes.length, platform: { os: 'linux', architecture: part === 'api' ? 'amd64' : 'arm64' }, annotations: { 'dev.trellis.repository': part } });
    }
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }));
    const put = await pushManifest(base, 'team/app/ko-build', 'v1', index, OCI_INDEX);
    if (put.status !== 201) throw new Error(`index push: ${put.status} ${put.body}`);
    if (put.digest !== sha256(index)) throw new Error('index digest');

    await importCtf(base, join(FIXTURES, 'helloworld-01/transport-archive'), 'ocm');
    return {
      app: { repository: 'demo/app', tag: 'v1', digest: pushed.digest },
      chain,
      nested: { parent: 'team/app/ko-build', tag: 'v1', children },
      component: { name: 'github.com/acme.org/helloworld', repository: 'ocm/component-descriptors/github.com/acme.org/helloworld' },
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
