// Robot accounts for CI: a name, a random secret (only its hash is stored), optional groups and
// expiry. `trellis robot create|revoke|list` edits the file; a running registry reads it again
// whenever it changes, so a revoked robot is refused on its very next request.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

/** Robots sign in as `robot$<name>` (Harbor's spelling), which htpasswd users cannot collide with. */
export const ROBOT_PREFIX = 'robot$';
const NAME = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;

export interface RobotRecord {
  name: string;
  /** `sha256:<hex>` of the secret. The secret is 32 random bytes, so a fast hash is enough. */
  secret: string;
  groups: string[];
  created: string;
  expires?: string;
  description?: string;
}

function hashSecret(secret: string): string {
  return `sha256:${createHash('sha256').update(secret).digest('hex')}`;
}

export class RobotStore {
  readonly path: string;
  private robots = new Map<string, RobotRecord>();
  private stamp = '';

  constructor(path: string) {
    this.path = path;
  }

  /** Re-reads the file if it changed; a missing file means no robots. */
  async refresh(): Promise<void> {
    let stamp = 'missing';
    try {
      const info = await stat(this.path);
      stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (stamp === this.stamp) return;
    const robots = new Map<string, RobotRecord>();
    if (stamp !== 'missing') {
      const parsed = JSON.parse(await readFile(this.path, 'utf8')) as { robots?: RobotRecord[] };
      for (const robot of parsed.robots ?? []) robots.set(robot.name, robot);
    }
    this.robots = robots;
    this.stamp = stamp;
  }

  async list(): Promise<RobotRecord[]> {
    await this.refresh();
    return [...this.robots.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** The robot behind a `robot$<name>` user name, if it exists and has not expired. */
  async active(username: string, now = Date.now()): Promise<RobotRecord | undefined> {
    if (!username.startsWith(ROBOT_PREFIX)) return undefined;
    await this.refresh();
    const robot = this.robots.get(username.slice(ROBOT_PREFIX.length));
    if (!robot || (robot.expires && Date.parse(robot.expires) <= now)) return undefined;
    return robot;
  }

  async verify(username: string, secret: string): Promise<RobotRecord | undefined> {
    const robot = await this.active(username);
    const expected = Buffer.from(robot?.secret ?? hashSecret(''));
    const actual = Buffer.from(hashSecret(secret));
    return robot && expected.length === actual.length && timingSafeEqual(expected, actual) ? robot : undefined;
  }

  /** Adds a robot and returns its user name and secret (shown once, never stored). */
  async create(name: string, options: { groups?: string[]; expiresDays?: number; description?: string } = {}): Promise<{ username: string; secret: string; robot: RobotRecord }> {
    if (!NAME.test(name) || name.length > 64) throw new Error(`robot name ${JSON.stringify(name)} must be lowercase letters, digits and . _ - (at most 64)`);
    await this.refresh();
    if (this.robots.has(name)) throw new Error(`robot ${name} already exists; revoke it first to issue a new secret`);
    const secret = `trellis_${randomBytes(32).toString('base64url')}`;
    const robot: RobotRecord = { name, secret: hashSecret(secret), groups: options.groups ?? [], created: new Date().toISOString() };
    if (options.expiresDays) robot.expires = new Date(Date.now() + options.expiresDays * 86_400_000).toISOString();
    if (options.description) robot.description = options.description;
    await this.save([...this.robots.values(), robot]);
    return { username: `${ROBOT_PREFIX}${name}`, secret, robot };
  }

  /** Removes a robot; false when there was none of that name. */
  async revoke(name: string): Promise<boolean> {
    await this.refresh();
    const bare = name.startsWith(ROBOT_PREFIX) ? name.slice(ROBOT_PREFIX.length) : name;
    if (!this.robots.has(bare)) return false;
    await this.save([...this.robots.values()].filter((r) => r.name !== bare));
    return true;
  }

  private async save(robots: RobotRecord[]): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    const temp = `${this.path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(temp, `${JSON.stringify({ robots }, null, 2)}\n`, { mode: 0o600 });
    await rename(temp, this.path);
    this.stamp = '';
    await this.refresh();
  }
}
