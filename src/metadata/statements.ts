// Prepared statements by SQL text: preparing costs more than running most of them.
import type { DatabaseSync, StatementSync } from 'node:sqlite';

export class StatementCache {
  private readonly db: DatabaseSync;
  private readonly statements = new Map<string, StatementSync>();
  /** Generated SQL (queries) has many shapes; past this many the cache starts over. */
  private readonly capacity: number;

  constructor(db: DatabaseSync, capacity = 1000) {
    this.db = db;
    this.capacity = capacity;
  }

  get(text: string): StatementSync {
    let statement = this.statements.get(text);
    if (!statement) {
      if (this.statements.size >= this.capacity) this.statements.clear();
      statement = this.db.prepare(text);
      this.statements.set(text, statement);
    }
    return statement;
  }
}
