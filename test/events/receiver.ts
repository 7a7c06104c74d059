// A real webhook receiver for the events tests: a node:http server on 127.0.0.1 that records every
// request, and can answer 503 for a while or stop listening altogether and come back on its port.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

export interface Received {
  headers: IncomingHttpHeaders;
  raw: string;
  event: { specversion: string; id: string; source: string; type: string; time: string; subject?: string; datacontenttype: string; data: Record<string, any> };
}

export class Receiver {
  readonly received: Received[] = [];
  /** Requests answered with 503 (while failing). */
  refused = 0;
  failing = false;
  /** Records each event at once but answers it this much later (a slow receiver). */
  answerDelayMs = 0;
  port: number;
  private server: Server | undefined;

  private constructor(port: number) {
    this.port = port;
  }

  static async start(port = 0): Promise<Receiver> {
    const receiver = new Receiver(port);
    await receiver.listen();
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Distinct events by id, in order of first arrival. */
  get events(): Received['event'][] {
    const seen = new Set<string>();
    return this.received.map((r) => r.event).filter((e) => !seen.has(e.id) && seen.add(e.id));
  }

  async listen(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.failing) {
          this.refused++;
          res.writeHead(503).end();
          return;
        }
        const raw = Buffer.concat(chunks).toString('utf8');
        this.received.push({ headers: req.headers, raw, event: JSON.parse(raw) });
        if (this.answerDelayMs) setTimeout(() => res.writeHead(204).end(), this.answerDelayMs);
        else res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.server = server;
  }

  /** Stops listening: connections are refused until `listen` again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}

export async function waitFor(what: string, condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
