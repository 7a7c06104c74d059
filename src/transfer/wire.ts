// A minimal HTTP/1.1 exchange on a socket of its own, for moving large blob bodies: the response
// header is parsed here and the body is the socket itself, so bytes go from one socket to the other
// without Node's HTTP parser copying every chunk (the largest client cost in a copy). Used only
// for bodies with a Content-Length; anything else goes through node:http.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Readable } from 'node:stream';

export interface WireResponse {
  status: number;
  headers: Record<string, string>;
  /** The socket, positioned at the first body byte; it ends when the server closes. */
  body: Socket;
}

const HEADER_LIMIT = 64 * 1024;

function open(url: URL): Promise<Socket> {
  const secure = url.protocol === 'https:';
  const port = Number(url.port || (secure ? 443 : 80));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const socket: Socket = secure
      ? tlsConnect({ host, port, servername: /^[\d.:]+$/.test(host) ? '' : host, ALPNProtocols: ['http/1.1'] }, () => resolve(socket))
      : netConnect({ host, port }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function readHead(socket: Socket): Promise<{ status: number; headers: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buffered.length > HEADER_LIMIT) fail(new Error('response header too large'));
        return;
      }
      cleanup();
      socket.pause();
      const rest = buffered.subarray(end + 4);
      if (rest.length) socket.unshift(rest);
      const [statusLine, ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? NaN);
      if (!Number.isInteger(status)) return reject(new Error(`not an HTTP response: ${JSON.stringify(statusLine)}`));
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      resolve({ status, headers });
    };
    const onEnd = () => fail(new Error('connection closed before the response header'));
    const fail = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', fail);
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('error', fail);
  });
}

function requestHead(method: string, url: URL, headers: Record<string, string>): string {
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, 'Connection: close', 'User-Agent: trellis'];
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Sends a request (with an optional body of known length) and returns the response head and body socket. */
export async function exchange(method: string, url: URL, headers: Record<string, string>, body?: Readable): Promise<WireResponse> {
  const socket = await open(url);
  socket.write(requestHead(method, url, headers));
  const head = readHead(socket);
  if (body) {
    body.once('error', (err) => socket.destroy(err));
    body.pipe(socket, { end: false });
  }
  try {
    const { status, headers: responseHeaders } = await head;
    return { status, headers: responseHeaders, body: socket };
  } catch (err) {
    socket.destroy();
    body?.destroy();
    throw err;
  }
}

export async function drain(response: WireResponse): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of response.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
