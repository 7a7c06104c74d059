// One repository: its tags with pushed time, size, platforms and artifact type, loaded a page at a
// time as the list scrolls and rendered virtualized, so 100,000 tags stay smooth.
import { useCallback, useEffect, useRef, useState } from 'react';
import { useVirtualizer } from '@tanstack/react-virtual';
import { api, nextPage } from '../api.ts';
import { href, Link } from '../router.tsx';
import { Failure, formatSize, formatTime, shortDigest } from '../util.tsx';

interface TagDetail {
  tag: string;
  digest: string;
  mediaType: string;
  artifactType?: string;
  size: number;
  pushedAt: string;
  platforms: string[];
}

const ROW = 34;

function kindOf(t: TagDetail): string {
  if (t.artifactType && !/image\.config|container\.image/.test(t.artifactType)) return t.artifactType;
  if (/index|list/.test(t.mediaType)) return 'image index';
  return 'image';
}

export function RepositoryPage({ name }: { name: string }) {
  const [tags, setTags] = useState<TagDetail[]>([]);
  const [next, setNext] = useState<string | undefined>(`/v2/${name}/_trellis/tags?n=250`);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<Error | undefined>();
  const scroller = useRef<HTMLDivElement>(null);

  // One page in flight at a time, whatever React runs twice (StrictMode) or scrolling asks for.
  const inFlight = useRef<string | undefined>(undefined);
  const loadMore = useCallback(() => {
    if (!next || inFlight.current === next) return;
    inFlight.current = next;
    setLoading(true);
    api.json<{ tags: TagDetail[] }>(next).then(({ value, response }) => {
      setTags((old) => [...old, ...value.tags]);
      setNext(nextPage(response));
    }, (err: unknown) => setError(err as Error)).finally(() => setLoading(false));
  }, [next]);

  useEffect(() => { loadMore(); }, []); // eslint-disable-line react-hooks/exhaustive-deps

  const virtualizer = useVirtualizer({ count: tags.length, getScrollElement: () => scroller.current, estimateSize: () => ROW, overscan: 10 });
  const items = virtualizer.getVirtualItems();
  const lastShown = items[items.length - 1]?.index ?? 0;
  useEffect(() => {
    if (next && !loading && lastShown >= tags.length - 50) loadMore();
  }, [lastShown, tags.length, next, loading, loadMore]);

  const parts = name.split('/');
  return (
    <section aria-labelledby="repo-title">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to={href('')}>Repositories</Link>
        {parts.map((part, i) => <span key={i}> / {i === parts.length - 1 ? part : <span>{part}</span>}</span>)}
      </nav>
      <h1 id="repo-title">{name}</h1>
      <p className="muted">Pull with <code>docker pull {window.location.host}/{name}:&lt;tag&gt;</code> · <Link to={href('query', { q_repository__eq: name, scope: 'search' })}>every manifest here</Link></p>
      {error ? <Failure error={error} /> : (
        <>
          <h2>Tags <span className="badge" data-testid="tag-count">{tags.length}{next ? '+' : ''}</span></h2>
          {tags.length === 0 && !next && !loading && <p className="muted">No tags.</p>}
          <div role="table" aria-label={`Tags of ${name}`} aria-rowcount={next ? -1 : tags.length + 1} className="vtable">
            <div role="rowgroup">
              <div role="row" className="vrow head" aria-rowindex={1}>
                <span role="columnheader">Tag</span><span role="columnheader">Kind</span><span role="columnheader">Platforms</span>
                <span role="columnheader">Size</span><span role="columnheader">Pushed</span><span role="columnheader">Digest</span>
              </div>
            </div>
            <div ref={scroller} className="vbody" role="rowgroup">
              <div style={{ height: virtualizer.getTotalSize(), position: 'relative' }}>
                {items.map((item) => {
                  const t = tags[item.index]!;
                  return (
                    <div role="row" key={t.tag} className="vrow" aria-rowindex={item.index + 2} style={{ transform: `translateY(${item.start}px)`, height: ROW }}>
                      <span role="cell"><Link to={href('manifest', { name, ref: t.tag })}>{t.tag}</Link></span>
                      <span role="cell" className="ellipsis" title={t.artifactType ?? t.mediaType}>{kindOf(t)}</span>
                      <span role="cell" className="ellipsis" title={t.platforms.join(", ")}>{t.platforms.join(", ")}</span>
                      <span role="cell">{formatSize(t.size)}</span>
                      <span role="cell">{formatTime(t.pushedAt)}</span>
                      <span role="cell"><code>{shortDigest(t.digest)}</code></span>
                    </div>
                  );
                })}
              </div>
            </div>
          </div>
          {loading && <p className="muted" role="status">Loading tags…</p>}
        </>
      )}
      <p><Link to={href('components', { prefix: name })}>Components in {name}</Link></p>
    </section>
  );
}
