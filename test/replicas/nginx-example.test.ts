// docs/examples/nginx.conf must carry the proxy settings the replica tests run behind, and nginx
// must accept it; docs/examples/compose.yaml must give every replica the same metadata and storage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { NGINX_PROXY_SETTINGS, NGINX_SERVER_OPTIONS, findNginx, freePort } from '../helpers/replicas.ts';

const EXAMPLES = resolve(import.meta.dirname, '../../docs/examples');

test('docs/examples/nginx.conf has the settings the replica tests use, and nginx accepts it', async (t) => {
  const example = await readFile(join(EXAMPLES, 'nginx.conf'), 'utf8');
  const lines = example.split('\n').map((line) => line.trim());
  for (const setting of NGINX_PROXY_SETTINGS) assert.ok(lines.includes(setting), `nginx.conf lacks ${setting}`);
  const servers = lines.filter((line) => line.startsWith('server ') && line.endsWith(';'));
  assert.equal(servers.length, 3);
  for (const server of servers) assert.ok(server.includes(NGINX_SERVER_OPTIONS), `${server} lacks ${NGINX_SERVER_OPTIONS}`);

  const nginx = findNginx();
  if (!nginx) {
    if (process.env.CI === 'true') throw new Error('nginx is not installed (apt-get install nginx-light); CI must check the example');
    t.skip('nginx is not installed');
    return;
  }
  // The same file with the replicas' names and the listening port made local, and every path nginx writes in a temp folder.
  const dir = await mkdtemp(join(tmpdir(), 'trellis-nginx-example-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const local = `pid ${dir}/nginx.pid;\n${example}`
    .replace(/trellis-\d:5000/g, '127.0.0.1:9')
    .replace('listen 80;', `listen 127.0.0.1:${await freePort()};`)
    .replace('http {', `http {\n  access_log ${dir}/access.log;\n  client_body_temp_path ${dir}/body;\n  proxy_temp_path ${dir}/proxy;\n  fastcgi_temp_path ${dir}/fastcgi;\n  uwsgi_temp_path ${dir}/uwsgi;\n  scgi_temp_path ${dir}/scgi;`);
  await writeFile(join(dir, 'nginx.conf'), local);
  const { stderr } = await promisify(execFile)(nginx, ['-t', '-c', join(dir, 'nginx.conf'), '-p', dir, '-e', join(dir, 'error.log')]);
  assert.match(stderr, /test is successful/);
});

test('docs/examples/compose.yaml runs three replicas on one database and one bucket behind nginx', async () => {
  interface Service { environment?: Record<string, string>; volumes?: string[]; image?: string }
  const compose = parse(await readFile(join(EXAMPLES, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
  const replicas = Object.entries(compose.services).filter(([name]) => /^trellis-\d$/.test(name)).map(([, service]) => service);
  assert.equal(replicas.length, 3);
  for (const replica of replicas) {
    assert.equal(replica.environment?.TRELLIS_METADATA, replicas[0]!.environment?.TRELLIS_METADATA);
    assert.equal(replica.environment?.TRELLIS_STORAGE, replicas[0]!.environment?.TRELLIS_STORAGE);
  }
  assert.match(replicas[0]!.environment!.TRELLIS_METADATA!, /^postgres:\/\//);
  assert.match(replicas[0]!.environment!.TRELLIS_STORAGE!, /^s3:\/\//);
  assert.ok(compose.services.nginx?.volumes?.includes('./nginx.conf:/etc/nginx/nginx.conf:ro'));
});
