// A reference "registry" for the blob push figure: node:http that answers the upload protocol,
// hashes every body with SHA-256 (as any registry must) and writes nothing. It shows what the
// client, loopback HTTP and hashing cost on this machine before any storage work, and how soon
// and how small any Node server can be (the start-up and memory floors).
import { createHash } from 'node:crypto';

// As in the registry: an ES module import of node:http evaluates its lazy exports, which loads
// undici (about 30 ms and 12 MiB), so a floor measured that way would not be the floor.
const { createServer } = process.getBuiltinModule('node:http');

const port = Number(process.argv[2]);
const server = createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  if (req.method === 'POST' && path.endsWith('/blobs/uploads/')) {
    req.resume();
    req.on('end', () => {
      res.writeHead(202, { Location: `${path}session`, 'Content-Length': 0 });
      res.end();
    });
    return;
  }
  if (req.method === 'PUT' && path.includes('/blobs/uploads/')) {
    const hash = createHash('sha256');
    req.on('data', (chunk: Buffer) => hash.update(chunk));
    req.on('end', () => {
      const digest = `sha256:${hash.digest('hex')}`;
      res.writeHead(201, { 'Docker-Content-Digest': digest, 'Content-Length': 0 });
      res.end();
    });
    return;
  }
  req.resume();
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 2 });
  res.end('{}');
});
server.listen(port, '127.0.0.1');
process.once('SIGTERM', () => server.close(() => process.exit(0)));
