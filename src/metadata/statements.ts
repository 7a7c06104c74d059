// Prepared statements by SQL text: preparing costs more than running most of them.
import type { DatabaseSync, StatementSync } from 'node:sqlite';

/**
 * A bound LIMIT. SQLite plans a bare `LIMIT ?` with the value bound at the time, so it prepares
 * the statement again whenever a value is bound anew: every call, through node:sqlite. The
 * index.json entries query ran in 40–50 µs that way, against 4–5 µs with `? + 0`, an expression
 * the planner does not look into. Paths whose plans depend on how many rows are wanted (queries,
 * sqlite-query.ts) keep the bare form.
 */
export const BOUND_LIMIT = 'LIMIT ? + 0';

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
