// Users from an htpasswd file (bcrypt only: `htpasswd -B`). The file is read again when it changes,
// so adding or removing a user needs no restart.
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
// Compared against when the user is unknown, so a wrong name costs as long as a wrong password:
// of the cost the file's hashes use (bcrypt's time doubles with each step of cost, so a dummy of
// another cost would tell unknown names from known ones). Made on first use, once per cost:
// hashing at import would cost every CLI command ~0.1 s of CPU.
const dummies = new Map<number, Promise<string>>();
function dummy(cost: number): Promise<string> {
  let hash = dummies.get(cost);
  if (!hash) dummies.set(cost, (hash = bcrypt.hash('trellis-no-such-user', cost)));
  return hash;
}
const costOf = (hash: string) => Math.min(Math.max(Number(hash.slice(4, 6)), 4), 31);

export class Htpasswd {
  private readonly path: string;
  private users = new Map<string, string>();
  private stamp = '';
  /** The cost most of the file's hashes use: the dummy an unknown name is compared against has it. */
  private dummyCost = 10;
  /** Lines that were refused on the last read (not bcrypt, malformed), for the log. */
  problems: string[] = [];

  constructor(path: string) {
    this.path = path;
  }

  /** Re-reads the file if it changed since the last read; true when it did. */
  async refresh(): Promise<boolean> {
    const info = await stat(this.path);
    const stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
    if (stamp === this.stamp) return false;
    const users = new Map<string, string>();
    const problems: string[] = [];
    const lines = (await readFile(this.path, 'utf8')).split(/\r?\n/);
    lines.forEach((line, i) => {
      if (!line.trim() || line.startsWith('#')) return;
      const colon = line.indexOf(':');
      const name = line.slice(0, colon);
      const hash = line.slice(colon + 1).trim();
      if (colon <= 0) problems.push(`${this.path}:${i + 1}: expected user:hash`);
      else if (!BCRYPT.test(hash)) problems.push(`${this.path}:${i + 1}: user ${name}: only bcrypt hashes are supported (create them with htpasswd -B)`);
      else users.set(name, hash);
    });
    this.users = users;
    this.problems = problems;
    const counts = new Map<number, number>();
    for (const hash of users.values()) counts.set(costOf(hash), (counts.get(costOf(hash)) ?? 0) + 1);
    this.dummyCost = [...counts].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0]?.[0] ?? 10;
    void dummy(this.dummyCost); // ready before the first unknown name, which would otherwise wait for it
    this.stamp = stamp;
    return true;
  }

  has(name: string): boolean {
    return this.users.has(name);
  }

  /** The stored hash of `name`'s password (it changes with the password: bcrypt salts each one). */
  hashOf(name: string): string | undefined {
    return this.users.get(name);
  }

  /** Whether `password` is `name`'s; takes a bcrypt comparison's time either way. */
  async verify(name: string, password: string): Promise<boolean> {
    const hash = this.users.get(name);
    const ok = await bcrypt.compare(password, hash ?? await dummy(this.dummyCost));
    return ok && hash !== undefined;
  }
}
