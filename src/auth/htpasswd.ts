// Users from an htpasswd file (bcrypt only: `htpasswd -B`). The file is read again when it changes,
// so adding or removing a user needs no restart.
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
// Compared against when the user is unknown, so a wrong name costs as long as a wrong password.
// Made on first use: hashing at import would cost every CLI command ~0.1 s of CPU.
let dummyHash: string | undefined;
const dummy = () => (dummyHash ??= bcrypt.hashSync('trellis-no-such-user', 10));

export class Htpasswd {
  private readonly path: string;
  private users = new Map<string, string>();
  private stamp = '';
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
    this.stamp = stamp;
    return true;
  }

  has(name: string): boolean {
    return this.users.has(name);
  }

  /** Whether `password` is `name`'s; takes a bcrypt comparison's time either way. */
  async verify(name: string, password: string): Promise<boolean> {
    const hash = this.users.get(name);
    const ok = await bcrypt.compare(password, hash ?? dummy());
    return ok && hash !== undefined;
  }
}
