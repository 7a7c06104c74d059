// Queries on the PostgreSQL metadata store: the plans of the SQLite query index
// (src/metadata/sqlite-query.ts) in PostgreSQL's dialect, with the same cursors, orders and
// access filtering (the caller's pullable repositories as an array parameter, inside the scan).
// Order keys of values held in columns are stored beside them (`*_ord`), computed on write.
import type pg from 'pg';
import { QueryInvalid, type Condition, type Query } from '../query/language.ts';
import { ATTRIBUTE_ROW_SCAN, type QueryAccess, type QueryIndex, type QueryMatch, type QueryPage, type QueryScope } from './query.ts';
import { LISTED_TYPE } from '../query/attributes.ts';
import { withRegistryFacts } from './sqlite-query.ts';

type SQLInputValue = string | number | null | readonly string[];

/**
 * Attributes answered from other tables rather than stored as attribute rows: the manifest's own
 * columns (single-valued) and its edges or tags (multi-valued). Storing them again would double
 * the index pages every push writes.
 */
type Source = { column: string; order: string } | { columns: { column: string; order: string }[] } | { from: string; value: string; order: string };
// Digests never have an order key (they are neither times, versions nor numbers).
const SOURCES: Record<string, Source> = {
  digest: { column: 'm.digest', order: 'NULL::text' },
  mediatype: { column: 'lower(m.media_type)', order: 'm.media_type_ord' },
  artifacttype: { column: 'lower(m.artifact_type)', order: 'm.artifact_type_ord' },
  [LISTED_TYPE]: { columns: [{ column: 'lower(m.media_type)', order: 'm.media_type_ord' }, { column: 'lower(m.artifact_type)', order: 'm.artifact_type_ord' }] },
  repository: { column: 'lower(r.name)', order: 'r.name_ord' },
  config__digest: { from: "edges fe WHERE fe.repo_id = m.repo_id AND fe.parent = m.digest AND fe.kind = 'config'", value: 'fe.child', order: 'NULL::text' },
  layers__digest: { from: "edges fe WHERE fe.repo_id = m.repo_id AND fe.parent = m.digest AND fe.kind = 'layer'", value: 'fe.child', order: 'NULL::text' },
  tag: { from: 'tags ft WHERE ft.repo_id = m.repo_id AND ft.digest = m.digest', value: 'lower(ft.name)', order: 'ft.name_ord' },
};
const PATHS_STORED_ELSEWHERE: ReadonlySet<string> = new Set(Object.keys(SOURCES));
/** An eq driver matching more rows than this yields to the sort index when a sort is asked for. */
const SELECTIVE_ENOUGH = 5000;
/** Attribute paths remembered as stored (bounded: annotation keys are the pusher's choice). */
const KNOWN_PATHS_LIMIT = 10_000;

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
  tags?: string[];
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
        text: `(${source.columns.map((c) => `COALESCE(${predicate(c.column, c.order)}, FALSE)`).join(' OR ')})`,
        params: source.columns.flatMap(() => params),
      }),
      has: { text: `(${source.columns.map((c) => `${c.column} IS NOT NULL`).join(' OR ')})`, params: [] },
    };
  }
  if (source && 'column' in source) {
    const order = source.order;
    return { any: (predicate, ...params) => ({ text: predicate(source.column, order), params }), has: { text: `${source.column} IS NOT NULL`, params: [] } };
  }
  // OFFSET 0 keeps each condition a probe of the candidate's own rows (by primary key), as on
  // SQLite: unnested into a join, PostgreSQL would rather hash every manifest matching the
  // condition before the driver, which walks in page order, hands out its first candidate.
  const from = source ? source.from : 'attributes a WHERE a.manifest_id = m.id AND a.path = ?';
  const base: SQLInputValue[] = source ? [] : [path];
  const value = source ? source.value : 'a.value';
  const order = source ? source.order : 'a.ord';
  return {
    any: (predicate, ...params) => ({ text: `EXISTS (SELECT 1 FROM ${from} AND ${predicate(value, order)} OFFSET 0)`, params: [...base, ...params] }),
    has: { text: `EXISTS (SELECT 1 FROM ${from} OFFSET 0)`, params: base },
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
    case 'contains': return add(any((value) => `strpos(${value}, ?) > 0`, v));
    case 'notcontains': return hasButNot(any((value) => `strpos(${value}, ?) > 0`, v));
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

/** `?` placeholders as PostgreSQL's `$1…` (the generated SQL holds no other question mark). */
function numbered(text: string): string {
  let n = 0;
  return text.replace(/\?/g, () => `$${++n}`);
}

export class PostgresQueryIndex implements QueryIndex {
  private readonly pool: pg.Pool;
  /**
   * Paths seen in attribute_paths. A stored path is never removed while a store is open (only
   * `trellis reindex` drops the tables), so a yes needs no second look and a query on known paths
   * costs no round trip for it; a no is asked again (another replica may have stored it since).
   */
  private readonly knownPaths = new Set<string>();

  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  async knownAttributes(paths: readonly string[]): Promise<Set<string>> {
    const known = new Set(paths.filter((path) => PATHS_STORED_ELSEWHERE.has(path) || this.knownPaths.has(path)));
    const unknown = paths.filter((path) => !known.has(path));
    if (!unknown.length) return known;
    const { rows } = await this.pool.query<{ path: string }>('SELECT path FROM attribute_paths WHERE path = ANY($1::text[])', [unknown]);
    for (const { path } of rows) {
      known.add(path);
      if (this.knownPaths.size < KNOWN_PATHS_LIMIT) this.knownPaths.add(path);
    }
    return known;
  }

  async attributePaths(limit: number, access: QueryAccess | undefined, prefix = ''): Promise<string[]> {
    // Paths from `prefix` on, in order: those starting with it come first (the rest are dropped).
    if (!access) {
      const { rows } = await this.pool.query<{ path: string }>('SELECT path FROM attribute_paths WHERE path >= $1 ORDER BY path LIMIT $2', [prefix, limit]);
      return withRegistryFacts(rows.map((r) => r.path), limit, prefix);
    }
    // Driven from the caller's repositories (OFFSET 0 keeps each step a nested loop): rows of
    // repositories the caller cannot see are never read, so they cannot show in the time taken.
    const { rows } = await this.pool.query<{ path: string }>(`SELECT DISTINCT path FROM (SELECT a.path FROM repos r
        CROSS JOIN LATERAL (SELECT id FROM manifests WHERE repo_id = r.id OFFSET 0) m
        CROSS JOIN LATERAL (SELECT path FROM attributes WHERE manifest_id = m.id OFFSET 0) a
        WHERE r.name = ANY($1::text[]) LIMIT ${ATTRIBUTE_ROW_SCAN}) x WHERE path >= $2 ORDER BY path LIMIT $3`, [access.pullable, prefix, limit]);
    return withRegistryFacts(rows.map((r) => r.path), limit, prefix);
  }

  async run(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): Promise<QueryMatch[]> {
    if (page.limit <= 0) return [];
    const sql = await this.build(query, scope, page, access);
    const rows = (await this.pool.query<Row>(numbered(sql.text), sql.params as unknown[])).rows;
    return rows.map((row) => ({
      repository: row.repository, digest: row.digest, mediaType: row.media_type, size: row.size, artifactType: row.artifact_type,
      subject: row.subject, annotations: JSON.parse(row.annotations) as Record<string, string>, pushedAt: row.pushed_at,
      ...(row.tags && { tags: row.tags }),
      cursor: query.sort ? encodeCursor([row.sk ?? '', row.id]) : scope.kind === 'referrersOf' ? row.digest : encodeCursor([row.id]),
    }));
  }

  private async eqMatchesAtMost(condition: Condition, limit: number): Promise<boolean> {
    const { rows } = await this.pool.query<{ n: number }>('SELECT count(*) AS n FROM (SELECT 1 FROM attributes WHERE path = $1 AND value = $2 LIMIT $3) x',
      [condition.path, condition.value, limit + 1]);
    return rows[0]!.n <= limit;
  }

  private async build(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): Promise<{ text: string; params: SQLInputValue[] }> {
    const sql = new Sql();
    let conditions = [...query.conditions];
    const sort = query.sort;
    const sortKey = sort ? `(SELECT ${sort.descending ? 'MAX' : 'MIN'}(x.ord) FROM attributes x WHERE x.manifest_id = m.id AND x.path = ? AND x.ord IS NOT NULL)` : '';
    let from = 'manifests m JOIN repos r ON r.id = m.repo_id';
    let orderBy = 'm.id';
    let drivenBySortIndex = false;

    if (scope.kind === 'referrersOf') {
      const repo = (await this.pool.query<{ id: number }>('SELECT id FROM repos WHERE name = $1', [scope.repository])).rows[0];
      sql.add(scope.includeAttestations ? 'm.repo_id = ? AND (m.subject = ? OR m.attests = ?)' : 'm.repo_id = ? AND m.subject = ?',
        repo?.id ?? -1, scope.subject, ...(scope.includeAttestations ? [scope.subject] : []));
      if (scope.artifactTypes.length) sql.add('m.artifact_type = ANY(?::text[])', scope.artifactTypes);
      orderBy = 'm.digest';
    } else if (access) {
      // A caller who may not pull everything: the scan starts from the repositories it may pull,
      // so neither the answer nor the time it takes depends on what other repositories hold.
      // LATERAL runs the manifests scan per such repository; OFFSET 0 keeps the conditions out of
      // it, so they are filters on those rows only, never pushed down to a scan of every manifest.
      if (scope.kind === 'referrers') sql.add('m.subject IS NOT NULL');
      from = 'repos r CROSS JOIN LATERAL (SELECT * FROM manifests WHERE repo_id = r.id OFFSET 0) m';
    } else {
      if (scope.kind === 'referrers') sql.add('m.subject IS NOT NULL');
      const eq = conditions.find((c) => c.comparison === 'eq' && !PATHS_STORED_ELSEWHERE.has(c.path));
      const typeEq = conditions.find((c) => c.comparison === 'eq' && c.path === 'artifacttype');
      const digestEq = conditions.find((c) => c.comparison === 'eq' && c.path === 'digest');
      const useEq = eq && (!sort || (await this.eqMatchesAtMost(eq, SELECTIVE_ENOUGH)));
      if (digestEq) {
        // Which repositories hold a digest: the blobs table knows, by its digest index.
        sql.add('m.repo_id IN (SELECT b.repo_id FROM blobs b WHERE b.digest = ?) AND m.digest = ?', digestEq.value, digestEq.value);
        conditions = conditions.filter((c) => c !== digestEq);
      } else if (typeEq && !sort) {
        sql.add('lower(m.artifact_type) = ?', typeEq.value);
        conditions = conditions.filter((c) => c !== typeEq);
      } else if (useEq) {
        from = 'attributes d JOIN manifests m ON m.id = d.manifest_id JOIN repos r ON r.id = m.repo_id';
        sql.add('d.path = ? AND d.value = ?', eq.path, eq.value);
        conditions = conditions.filter((c) => c !== eq);
        orderBy = 'd.manifest_id';
      } else if (sort) {
        from = 'attributes s JOIN manifests m ON m.id = s.manifest_id JOIN repos r ON r.id = m.repo_id';
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
            AND s.value = (SELECT MIN(y.value) FROM attributes y WHERE y.manifest_id = s.manifest_id AND y.path = s.path AND y.ord = s.ord)`,
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
          sql.add(`m.id IN (SELECT d.manifest_id FROM attributes d WHERE d.path = ? AND ${range.text})`, ordered.path, ...range.params);
          conditions = conditions.filter((c) => c !== ordered);
        } else if (contains) {
          sql.add('m.id IN (SELECT d.manifest_id FROM attributes d WHERE d.path = ? AND strpos(d.value, ?) > 0)', contains.path, contains.value);
          conditions = conditions.filter((c) => c !== contains);
        }
      }
    }
    for (const condition of conditions) conditionSql(condition, sql);
    // The caller's grants are data in the scan: other repositories' rows never reach a page.
    if (access) sql.add('r.name = ANY(?::text[])', access.pullable);

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
          WHERE ${sql.where.join(' AND ')}) AS q WHERE sk IS NOT NULL${cursorClause} ORDER BY sk ${direction}, id ${direction} LIMIT ?`;
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
      text = `SELECT ${columns} FROM ${from} WHERE ${sql.where.length ? sql.where.join(' AND ') : 'TRUE'}${cursorClause} ORDER BY ${orderBy} LIMIT ?`;
      params.unshift(...sql.params);
    }
    params.push(page.limit);
    if (scope.kind === 'manifests') {
      // Search results list their tags: read for the cut page only, in the same statement (a
      // round trip per result was most of a search's time).
      const order = sort ? `page.sk ${direction}, page.id ${direction}` : 'page.id';
      text = `SELECT page.*, ARRAY(SELECT t.name FROM tags t WHERE t.repo_id = page.repo_id AND t.digest = page.digest ORDER BY t.name) AS tags
        FROM (${text}) AS page ORDER BY ${order}`;
    }
    return { text, params };
  }
}
