// Results of the one search box: repositories whose name, manifests whose tag, and manifests
// whose digest contains the text (three registry-wide searches, see docs/query.md#search).
import { api, enc } from '../api.ts';
import { href, Link } from '../router.tsx';
import { Failure, Loading, formatTime, shortDigest, useAsync } from '../util.tsx';

export interface SearchResult {
  repository: string;
  digest: string;
  mediaType: string;
  size: number;
  artifactType?: string;
  tags: string[];
  subjectDigest?: string;
  pushedAt: string;
  annotations?: Record<string, string>;
}

async function search(query: string): Promise<SearchResult[]> {
  const { value } = await api.json<{ results: SearchResult[] }>(`/v2/_trellis/search?${query}`);
  return value.results;
}

export function SearchPage({ text }: { text: string }) {
  const needle = text.trim().toLowerCase();
  const looksLikeDigest = /^(sha256:|sha512:)?[0-9a-f]{6,}$/.test(needle);
  const result = useAsync(async () => {
    const [byName, byTag, byDigest] = await Promise.all([
      search(`q_repository__contains=${enc(needle)}&n=500`),
      search(`q_tag__contains=${enc(needle)}&n=100`),
      looksLikeDigest ? search(`q_digest__${/^sha(256|512):[0-9a-f]+$/.test(needle) && needle.length >= 71 ? 'eq' : 'contains'}=${enc(needle)}&n=50`) : Promise.resolve([]),
    ]);
    return { repositories: [...new Set(byName.map((r) => r.repository))].sort(), byTag, byDigest };
  }, [needle]);

  if (!needle) return <p>Type something to search for.</p>;
  if (result.state === 'loading') return <Loading what="results" />;
  if (result.state === 'error') return <Failure error={result.error} />;
  const { repositories, byTag, byDigest } = result.value;
  const tagged = byTag.flatMap((r) => r.tags.filter((t) => t.toLowerCase().includes(needle)).map((tag) => ({ ...r, tag })));
  return (
    <section aria-labelledby="search-title">
      <h1 id="search-title">Results for “{text}”</h1>
      <h2>Repositories <span className="badge">{repositories.length}</span></h2>
      {repositories.length ? (
        <ul className="plain" data-testid="search-repositories">
          {repositories.map((name) => <li key={name}><Link to={href('repository', { name })}>{name}</Link></li>)}
        </ul>
      ) : <p className="muted">No repository name contains it.</p>}
      <h2>Tags <span className="badge">{tagged.length}</span></h2>
      {tagged.length ? (
        <table>
          <thead><tr><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Pushed</th></tr></thead>
          <tbody>
            {tagged.map((r) => (
              <tr key={`${r.repository}:${r.tag}`}>
                <td><Link to={href('manifest', { name: r.repository, ref: r.tag })}>{r.repository}:{r.tag}</Link></td>
                <td><code>{shortDigest(r.digest)}</code></td>
                <td>{formatTime(r.pushedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : <p className="muted">No tag contains it.</p>}
      {looksLikeDigest && (
        <>
          <h2>Digests <span className="badge">{byDigest.length}</span></h2>
          {byDigest.length ? (
            <ul className="plain">
              {byDigest.map((r) => <li key={`${r.repository}@${r.digest}`}><Link to={href('manifest', { name: r.repository, ref: r.digest })}>{r.repository}@{shortDigest(r.digest)}</Link> <span className="muted">{r.artifactType ?? r.mediaType}</span></li>)}
            </ul>
          ) : <p className="muted">No manifest digest matches.</p>}
        </>
      )}
    </section>
  );
}
