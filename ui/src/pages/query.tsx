// The query builder for the q_ language (docs/query.md): conditions of attribute, comparison and
// value, a sort, and where to search; the URL holds the query, so results can be shared.
import { useState, type FormEvent } from 'react';
import { api } from '../api.ts';
import { href, Link, navigate } from '../router.tsx';
import { Failure, Loading, formatTime, shortDigest, useAsync } from '../util.tsx';
import type { SearchResult } from './search.tsx';

const COMPARISONS = ['eq', 'ne', 'contains', 'notcontains', 'gt', 'gte', 'lt', 'lte', 'exists'] as const;
const COMPARISON_TEXT: Record<string, string> = {
  eq: 'equals', ne: 'does not equal', contains: 'contains', notcontains: 'does not contain',
  gt: 'greater than', gte: 'at least', lt: 'less than', lte: 'at most', exists: 'exists (true/false)',
};

interface Condition {
  attribute: string;
  comparison: string;
  value: string;
}

type Scope = 'search' | 'references';

function conditionsOf(params: URLSearchParams): Condition[] {
  const out: Condition[] = [];
  for (const [key, value] of params) {
    const match = /^q_(.+)__([a-z]+)$/i.exec(key);
    if (match) out.push({ attribute: match[1]!.toLowerCase(), comparison: match[2]!.toLowerCase(), value });
  }
  return out;
}

function queryString(conditions: Condition[], sort: string, order: string): string {
  const params = new URLSearchParams();
  for (const c of conditions) if (c.attribute && c.comparison) params.append(`q_${c.attribute}__${c.comparison}`, c.value);
  if (sort) params.set('sort', sort);
  if (sort && order === 'desc') params.set('order', 'desc');
  return params.toString();
}

function Results({ scope, query }: { scope: Scope; query: string }) {
  const result = useAsync(async () => {
    if (scope === 'references') {
      const { value } = await api.json<{ manifests: (SearchResult & { subjectDigest: string })[] }>(`/v2/_oci/references?${query}&n=200`);
      return value.manifests.map((m) => ({ ...m, tags: [] as string[], pushedAt: '' }));
    }
    return (await api.json<{ results: SearchResult[] }>(`/v2/_trellis/search?${query}&n=200`)).value.results;
  }, [scope, query]);
  if (result.state === 'loading') return <Loading what="results" />;
  if (result.state === 'error') return <Failure error={result.error} />;
  if (!result.value.length) return <p role="status">No matches.</p>;
  return (
    <>
      <p role="status">{result.value.length}{result.value.length === 200 ? '+' : ''} matches</p>
      <table data-testid="query-results">
        <thead><tr><th scope="col">Manifest</th><th scope="col">Artifact type</th><th scope="col">Tags</th><th scope="col">{scope === 'search' ? 'Pushed' : 'Subject'}</th></tr></thead>
        <tbody>
          {result.value.map((r) => (
            <tr key={`${r.repository}@${r.digest}`}>
              <td><Link to={href('manifest', { name: r.repository, ref: r.digest })}>{r.repository}@{shortDigest(r.digest)}</Link></td>
              <td className="ellipsis">{r.artifactType ?? r.mediaType}</td>
              <td>{r.tags.join(', ')}</td>
              <td>{scope === 'search' ? formatTime(r.pushedAt) : r.subjectDigest ? <Link to={href('manifest', { name: r.repository, ref: r.subjectDigest })}>{shortDigest(r.subjectDigest)}</Link> : ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </>
  );
}

export function QueryPage({ params }: { params: URLSearchParams }) {
  const initial = conditionsOf(params);
  const [conditions, setConditions] = useState<Condition[]>(initial.length ? initial : [{ attribute: 'artifacttype', comparison: 'eq', value: '' }]);
  const [sort, setSort] = useState(params.get('sort') ?? '');
  const [order, setOrder] = useState(params.get('order') ?? 'asc');
  const [scope, setScope] = useState<Scope>(params.get('scope') === 'references' ? 'references' : 'search');
  const attributes = useAsync(async () => (await api.json<{ attributes: string[] }>('/v2/_trellis/attributes')).value.attributes, []);
  const submitted = queryString(conditionsOf(params), params.get('sort') ?? '', params.get('order') ?? 'asc');
  const submittedScope: Scope = params.get('scope') === 'references' ? 'references' : 'search';

  const update = (i: number, change: Partial<Condition>) => setConditions((list) => list.map((c, j) => (j === i ? { ...c, ...change } : c)));
  const run = (event: FormEvent) => {
    event.preventDefault();
    const query = new URLSearchParams(queryString(conditions, sort, order));
    query.set('scope', scope);
    navigate(href('query', query));
  };
  const suggestions = attributes.state === 'done' ? attributes.value : [];

  return (
    <section aria-labelledby="query-title">
      <h1 id="query-title">Query</h1>
      <p className="muted">Every condition must hold. Attributes are the manifest's JSON fields and annotations (<code>annotations__org.opencontainers.image.version</code>), plus <code>repository</code>, <code>tag</code>, <code>digest</code> and <code>pushedat</code>.</p>
      <form onSubmit={run} className="stack" aria-label="Query builder">
        <datalist id="attribute-names">{suggestions.map((a) => <option key={a} value={a} />)}</datalist>
        {conditions.map((c, i) => (
          <fieldset key={i} className="condition">
            <legend className="visually-hidden">Condition {i + 1}</legend>
            <label>Attribute <input list="attribute-names" value={c.attribute} onChange={(e) => update(i, { attribute: e.target.value.toLowerCase() })} required data-testid={`attribute-${i}`} /></label>
            <label>Comparison
              <select value={c.comparison} onChange={(e) => update(i, { comparison: e.target.value })} data-testid={`comparison-${i}`}>
                {COMPARISONS.map((k) => <option key={k} value={k}>{COMPARISON_TEXT[k]}</option>)}
              </select>
            </label>
            <label>Value <input value={c.value} onChange={(e) => update(i, { value: e.target.value })} data-testid={`value-${i}`} /></label>
            <button type="button" className="small" onClick={() => setConditions((list) => list.filter((_, j) => j !== i))} aria-label={`Remove condition ${i + 1}`} disabled={conditions.length === 1}>Remove</button>
          </fieldset>
        ))}
        <div className="row">
          <button type="button" onClick={() => setConditions((list) => [...list, { attribute: '', comparison: 'eq', value: '' }])}>Add condition</button>
          <label>Sort by <input list="attribute-names" value={sort} onChange={(e) => setSort(e.target.value)} placeholder="created, version, pushed or an attribute" /></label>
          <label>Order
            <select value={order} onChange={(e) => setOrder(e.target.value)}><option value="asc">ascending</option><option value="desc">descending</option></select>
          </label>
          <label>Over
            <select value={scope} onChange={(e) => setScope(e.target.value as Scope)}><option value="search">every manifest</option><option value="references">referrers only</option></select>
          </label>
          <button type="submit">Run query</button>
        </div>
      </form>
      {submitted && (
        <>
          <h2>Results</h2>
          <p className="muted small-text"><code>GET {submittedScope === 'search' ? '/v2/_trellis/search' : '/v2/_oci/references'}?{submitted}</code></p>
          <Results scope={submittedScope} query={submitted} />
        </>
      )}
    </section>
  );
}
