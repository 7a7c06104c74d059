// Queries on the SQLite metadata index (src/metadata/query.ts is the contract). Each condition becomes an EXISTS over the manifest's
// attribute rows (or its tags, or its repository); the cheapest indexed condition drives the scan
// so that a page costs about the same at any registry size. See docs/query.md for the plans.
import type { DatabaseSync, SQLInputValue } from 'node:sqlite';
import { BOUND_LIMIT, StatementCache } from './statements.ts';
import { QueryInvalid, type Condition, type Query } from '../query/language.ts';
import { orderKey } from '../query/order.ts';
import { ATTRIBUTE_ROW_SCAN, type QueryAccess, type QueryIndex, type QueryMatch, type QueryPage, type QueryScope } from './query.ts';
import type { Synchronous } from './store.ts';
import { LISTED_TYPE } from '../query/attributes.ts';

/**
 * Attributes answered from other tables rather than stored as attribute rows: the manifest's own
 * columns (single-valued) and its edges or tags (multi-valued). Storing them again would double
 * the index pages every push writes.
 */
type Source = { column: string } | { columns: string[] } | { from: string; value: string };
const SOURCES: Record<string, Source> = {
  digest: { column: 'm.digest' },
  mediatype: { column: 'lower(m.media_type)' },
  artifacttype: { column: 'lower(m.artifact_type)' },
  [LISTED_TYPE]: { columns: ['lower(m.media_type)', 'lower(m.artifact_type)'] },
  repository: { column: 'lower(r.name)' },
  config__digest: { from: "edges fe WHERE fe.repo_id = m.repo_id AND fe.parent = m.digest AND fe.kind = 'config'", value: 'fe.child' },
  layers__digest: { from: "edges fe WHERE fe.repo_id = m.repo_id AND fe.parent = m.digest AND fe.kind = 'layer'", value: 'fe.child' },
  tag: { from: 'tags ft INDEXED BY tags_by_digest WHERE ft.repo_id = m.repo_id AND ft.digest = m.digest', value: 'lower(ft.name)' },
};
/** Paths the attributes table does not store (see SOURCES). */
export const PATHS_STORED_ELSEWHERE: ReadonlySet<string> = new Set(Object.keys(SOURCES));
/** Stored paths and the ones answered from other tables, those starting with `prefix`, in order, at most `limit`. */
export function withRegistryFacts(stored: readonly string[], limit: number, prefix = ''): string[] {
  return [...new Set([...PATHS_STORED_ELSEWHERE, ...stored])].filter((path) => path.startsWith(prefix)).sort().slice(0, limit);
}
/** An eq driver matching more rows than this yields to the sort index when a sort is asked for. */
const SELECTIVE_ENOUGH = 5000;

/**
 * The attribute paths of a caller's pullable repositories (a JSON array of names), read from those
 * repositories' manifests alone: CROSS JOIN keeps that order, so rows of repositories the caller
 * cannot see are never read. Exported for the test of its plan.
 */
export const PULLABLE_ATTRIBUTE_PATHS = `SELECT DISTINCT path FROM (SELECT a.path FROM json_each(?) p
  CROSS JOIN repos r ON r.name = p.value CROSS JOIN manifests m ON m.repo_id = r.id CROSS JOIN attributes a ON a.manifest_id = m.id
  LIMIT ${ATTRIBUTE_ROW_SCAN}) WHERE path >= ? ORDER BY path LIMIT ?`;

interface Row {
  id: number;
  repo_id: number;
  repository: string;
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  subject: string | null;
  annotations: string;
  pushed_at: number;
  sk?: string | null;
}

class Sql {
  readonly where: string[] = [];
  readonly params: SQLInputValue[] = [];
  add(clause: string, ...params: SQLInputValue[]): void {
    this.where.push(clause);
    this.params.push(...params);
  }
}

interface Fragment {
  text: string;
  params: SQLInputValue[];
}

/** Predicates over one attribute's values: `any` (some value satisfies) and `has` (some value). */
function valuesOf(path: string): { any: (predicate: (value: string, order: string) => string, ...params: SQLInputValue[]) => Fragment; has: Fragment } {
  const source = SOURCES[path];
  if (source && 'columns' in source) {
    // Several single-valued columns: some value satisfies when one of them does (NULL never does).
    return {
      any: (predicate, ...params) => ({
        text: `(${source.columns.map((c) => `IFNULL(${predicate(c, `trellis_order_key(${c})`)}, 0)`).join(' OR ')})`,
        params: source.columns.flatMap(() => params),
      }),
      has: { text: `(${source.columns.map((c) => `${c} IS NOT NULL`).join(' OR ')})`, params: [] },
    };
  }
  if (source && 'column' in source) {
    const order = `trellis_order_key(${source.column})`;
    return { any: (predicate, ...params) => ({ text: predicate(source.column, order), params }), has: { text: `${source.column} IS NOT NULL`, params: [] } };
  }
  // `+a.path` keeps the planner on the primary key (one manifest's few rows): with the path usable
  // it may pick a path index and scan every manifest's rows for each candidate.
  const from = source ? source.from : 'attributes a WHERE a.manifest_id = m.id AND +a.path = ?';
  const base: SQLInputValue[] = source ? [] : [path];
  const value = source ? source.value : 'a.value';
  const order = source ? `trellis_order_key(${source.value})` : 'a.ord';
  return {
    any: (predicate, ...params) => ({ text: `EXISTS (SELECT 1 FROM ${from} AND ${predicate(value, order)})`, params: [...base, ...params] }),
    has: { text: `EXISTS (SELECT 1 FROM ${from})`, params: base },
  };
}

/** The SQL of one condition over manifest `m`. */
function conditionSql(condition: Condition, sql: Sql): void {
  const { any, has } = valuesOf(condition.path);
  const add = (f: Fragment) => sql.add(f.text, ...f.params);
  const hasButNot = (f: Fragment) => sql.add(`${has.text} AND NOT ${f.text}`, ...has.params, ...f.params);
  const v = condition.value;
  switch (condition.comparison) {
    case 'eq': return add(any((value) => `${value} = ?`, v));
    case 'ne': return hasButNot(any((value) => `${value} = ?`, v));
    case 'contains': return add(any((value) => `instr(${value}, ?) > 0`, v));
    case 'notcontains': return hasButNot(any((value) => `instr(${value}, ?) > 0`, v));
    case 'exists': return sql.add(`${v === 'true' ? '' : 'NOT '}(${has.text})`, ...has.params);
    default: {
      const { params } = orderRange(condition, '');
      return add(any((_, order) => orderRange(condition, order).text, ...params));
    }
  }
}

/** Attributes inside a JSON array can have several values per manifest; every other path has one. */
function isSingleValued(path: string): boolean {
  return !['layers__', 'manifests__', 'blobs__'].some((prefix) => path.startsWith(prefix));
}

/** The index range an ordered condition covers, for driving a scan by it. */
function orderRange(condition: Condition, column: string): { text: string; params: SQLInputValue[] } {
  const { key, start, end } = condition.order!;
  switch (condition.comparison) {
    case 'gt': return { text: `${column} > ? AND ${column} < ?`, params: [key, end] };
    case 'gte': return { text: `${column} >= ? AND ${column} < ?`, params: [key, end] };
    case 'lt': return { text: `${column} < ? AND ${column} >= ?`, params: [key, start] };
    default: return { text: `${column} <= ? AND ${column} >= ?`, params: [key, start] };
  }
}

function encodeCursor(parts: (string | number | null)[]): string {
  return Buffer.from(JSON.stringify(parts)).toString('base64url');
}

function decodeCursor(cursor: string, sorted: boolean): { id: number; sk?: string } {
  try {
    const parts = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(parts)) {
      if (!sorted && parts.length === 1 && Number.isSafeInteger(parts[0])) return { id: parts[0] as number };
      if (sorted && parts.length === 2 && typeof parts[0] === 'string' && Number.isSafeInteger(parts[1])) return { sk: parts[0], id: parts[1] as number };
    }
  } catch {
    // fall through
  }
  throw new QueryInvalid('last is not a cursor this query produced; follow the Link header');
}

export class SqliteQueryIndex implements Synchronous<QueryIndex> {
  private readonly db: DatabaseSync;
  private readonly statements: StatementCache;

  constructor(db: DatabaseSync) {
    this.db = db;
    this.statements = new StatementCache(db);
    db.function('trellis_order_key', { deterministic: true, directOnly: true }, (value) => (value === null ? null : orderKey(String(value))));
  }

  knownAttributes(paths: readonly string[]): Set<string> {
    const known = this.statements.get('SELECT 1 FROM attribute_paths WHERE path = ?');
    return new Set(paths.filter((path) => PATHS_STORED_ELSEWHERE.has(path) || known.get(path) !== undefined));
  }

  attributePaths(limit: number, access: QueryAccess | undefined, prefix = ''): string[] {
    // Paths from `prefix` on, in order: those starting with it come first (the rest are dropped).
    const rows = access
      ? this.statements.get(PULLABLE_ATTRIBUTE_PATHS).all(JSON.stringify(access.pullable), prefix, limit)
      : this.statements.get(`SELECT path FROM attribute_paths WHERE path >= ? ORDER BY path ${BOUND_LIMIT}`).all(prefix, limit);
    return withRegistryFacts((rows as { path: string }[]).map((r) => r.path), limit, prefix);
  }

  run(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): QueryMatch[] {
    if (page.limit <= 0) return [];
    const sql = this.build(query, scope, page, access);
    const rows = this.statements.get(sql.text).all(...sql.params) as unknown as Row[];
    // In-process, so one indexed read per match costs microseconds (and sees the same snapshot:
    // the caller's await comes after this method returns).
    const tagsOf = scope.kind === 'manifests' ? this.statements.get('SELECT name FROM tags INDEXED BY tags_by_digest WHERE repo_id = ? AND digest = ? ORDER BY name') : undefined;
    return rows.map((row) => ({
      repository: row.repository, digest: row.digest, mediaType: row.media_type, size: row.size, artifactType: row.artifact_type,
      subject: row.subject, annotations: JSON.parse(row.annotations) as Record<string, string>, pushedAt: row.pushed_at,
      ...(tagsOf && { tags: (tagsOf.all(row.repo_id, row.digest) as { name: string }[]).map((t) => t.name) }),
      cursor: query.sort ? encodeCursor([row.sk ?? '', row.id]) : scope.kind === 'referrersOf' ? row.digest : encodeCursor([row.id]),
    }));
  }

  private eqMatchesAtMost(condition: Condition, limit: number): boolean {
    const row = this.db.prepare('SELECT count(*) AS n FROM (SELECT 1 FROM attributes INDEXED BY attributes_by_value WHERE path = ? AND value = ? LIMIT ?)')
      .get(condition.path, condition.value, limit + 1) as { n: number };
    return row.n <= limit;
  }

  private build(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): { text: string; params: SQLInputValue[] } {
    const sql = new Sql();
    let conditions = [...query.conditions];
    const sort = query.sort;
    const sortKey = sort ? `(SELECT ${sort.descending ? 'MAX' : 'MIN'}(x.ord) FROM attributes x WHERE x.manifest_id = m.id AND +x.path = ? AND x.ord IS NOT NULL)` : '';
    let from = 'manifests m JOIN repos r ON r.id = m.repo_id';
    let orderBy = 'm.id';
    let drivenBySortIndex = false;

    if (scope.kind === 'referrersOf') {
      const repo = this.db.prepare('SELECT id FROM repos WHERE name = ?').get(scope.repository) as { id: number } | undefined;
      sql.add(scope.includeAttestations ? 'm.repo_id = ? AND (m.subject = ? OR m.attests = ?)' : 'm.repo_id = ? AND m.subject = ?',
        repo?.id ?? -1, scope.subject, ...(scope.includeAttestations ? [scope.subject] : []));
      if (scope.artifactTypes.length) sql.add(`m.artifact_type IN (${scope.artifactTypes.map(() => '?').join(',')})`, ...scope.artifactTypes);
      orderBy = 'm.digest';
    } else if (access) {
      // A caller who may not pull everything: the scan starts from the repositories it may pull
      // (CROSS JOIN fixes that order), so neither the answer nor the time it takes depends on what
      // other repositories hold. Every condition is a filter on those repositories' manifests.
      if (scope.kind === 'referrers') sql.add('m.subject IS NOT NULL');
      from = 'repos r CROSS JOIN manifests m ON m.repo_id = r.id';
    } else {
      if (scope.kind === 'referrers') sql.add('m.subject IS NOT NULL');
      const eq = conditions.find((c) => c.comparison === 'eq' && !PATHS_STORED_ELSEWHERE.has(c.path));
      const typeEq = conditions.find((c) => c.comparison === 'eq' && c.path === 'artifacttype');
      const digestEq = conditions.find((c) => c.comparison === 'eq' && c.path === 'digest');
      const useEq = eq && (!sort || this.eqMatchesAtMost(eq, SELECTIVE_ENOUGH));
      if (digestEq) {
        // Which repositories hold a digest: the blobs table knows, by its digest index.
        sql.add('m.repo_id IN (SELECT b.repo_id FROM blobs b INDEXED BY blobs_by_digest WHERE b.digest = ?) AND m.digest = ?', digestEq.value, digestEq.value);
        conditions = conditions.filter((c) => c !== digestEq);
      } else if (typeEq && !sort) {
        from = 'manifests m INDEXED BY manifests_by_artifact_type JOIN repos r ON r.id = m.repo_id';
        sql.add('m.artifact_type = ? COLLATE NOCASE', typeEq.value);
        conditions = conditions.filter((c) => c !== typeEq);
      } else if (useEq) {
        from = 'attributes d INDEXED BY attributes_by_value CROSS JOIN manifests m ON m.id = d.manifest_id JOIN repos r ON r.id = m.repo_id';
        sql.add('d.path = ? AND d.value = ?', eq.path, eq.value);
        conditions = conditions.filter((c) => c !== eq);
        orderBy = 'd.manifest_id';
      } else if (sort) {
        from = 'attributes s INDEXED BY attributes_by_order CROSS JOIN manifests m ON m.id = s.manifest_id JOIN repos r ON r.id = m.repo_id';
        if (isSingleValued(sort.path)) {
          sql.add('s.path = ? AND s.ord IS NOT NULL', sort.path);
          // A range on the sort attribute itself bounds the scan instead of filtering it.
          for (const ranged of conditions.filter((c) => c.order && c.path === sort.path)) {
            const range = orderRange(ranged, 's.ord');
            sql.add(range.text, ...range.params);
            conditions = conditions.filter((c) => c !== ranged);
          }
        } else {
          // One row per manifest: the one holding its sort key (lowest value among equal keys).
          sql.add(`s.path = ? AND s.ord IS NOT NULL AND s.ord = ${sortKey.replace('m.id', 's.manifest_id')}
            AND s.value = (SELECT MIN(y.value) FROM attributes y WHERE y.manifest_id = s.manifest_id AND +y.path = s.path AND y.ord = s.ord)`,
          sort.path, sort.path);
        }
        drivenBySortIndex = true;
      } else {
        const repository = conditions.find((c) => c.comparison === 'eq' && c.path === 'repository');
        const ordered = conditions.find((c) => c.order && !PATHS_STORED_ELSEWHERE.has(c.path));
        const contains = conditions.find((c) => c.comparison === 'contains' && !PATHS_STORED_ELSEWHERE.has(c.path));
        if (repository) {
          sql.add('m.repo_id = (SELECT id FROM repos WHERE lower(name) = ?)', repository.value);
          conditions = conditions.filter((c) => c !== repository);
        } else if (ordered) {
          const range = orderRange(ordered, 'd.ord');
          sql.add(`m.id IN (SELECT d.manifest_id FROM attributes d INDEXED BY attributes_by_order WHERE d.path = ? AND ${range.text})`, ordered.path, ...range.params);
          conditions = conditions.filter((c) => c !== ordered);
        } else if (contains) {
          sql.add('m.id IN (SELECT d.manifest_id FROM attributes d INDEXED BY attributes_by_value WHERE d.path = ? AND instr(d.value, ?) > 0)', contains.path, contains.value);
          conditions = conditions.filter((c) => c !== contains);
        }
      }
    }
    for (const condition of conditions) conditionSql(condition, sql);
    // The caller's grants are data in the scan: other repositories' rows never reach a page.
    if (access) sql.add('r.name IN (SELECT value FROM json_each(?))', JSON.stringify(access.pullable));

    const columns = 'm.id, m.repo_id, r.name AS repository, m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations, m.pushed_at';
    const direction = sort?.descending ? 'DESC' : 'ASC';
    const after = sort?.descending ? '<' : '>';
    let text: string;
    const params: SQLInputValue[] = [];
    if (sort) {
      const cursor = page.after ? decodeCursor(page.after, true) : undefined;
      const key = drivenBySortIndex ? 's.ord' : 'sk';
      const id = drivenBySortIndex ? 's.manifest_id' : 'id';
      const cursorClause = cursor ? ` AND (${key}, ${id}) ${after} (?, ?)` : '';
      if (drivenBySortIndex) {
        text = `SELECT ${columns}, s.ord AS sk FROM ${from}
          WHERE ${sql.where.join(' AND ')}${cursorClause} ORDER BY s.ord ${direction}, s.manifest_id ${direction} LIMIT ?`;
        params.push(...sql.params);
      } else {
        // The key is computed per candidate, then sorted: used when few candidates are left.
        text = `SELECT * FROM (SELECT ${columns}, ${sortKey} AS sk FROM ${from}
          WHERE ${sql.where.join(' AND ')}) WHERE sk IS NOT NULL${cursorClause} ORDER BY sk ${direction}, id ${direction} LIMIT ?`;
        params.push(sort.path, ...sql.params);
      }
      if (cursor) params.push(cursor.sk!, cursor.id);
    } else {
      let cursorClause = '';
      if (page.after) {
        if (scope.kind === 'referrersOf') {
          cursorClause = ' AND m.digest > ?';
          params.push(page.after);
        } else {
          cursorClause = ` AND ${orderBy} > ?`;
          params.push(decodeCursor(page.after, false).id);
        }
      }
      text = `SELECT ${columns} FROM ${from} WHERE ${sql.where.length ? sql.where.join(' AND ') : '1'}${cursorClause} ORDER BY ${orderBy} LIMIT ?`;
      params.unshift(...sql.params);
    }
    params.push(page.limit);
    return { text, params };
  }
}
