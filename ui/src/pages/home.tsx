// The start page: every repository as a tree of nested namespaces, loaded a level at a time.
import { useCallback, useEffect, useState } from 'react';
import { api, enc, nextPage, collectPages } from '../api.ts';
import { href, navigate } from '../router.tsx';
import { Tree, type TreeNode } from '../tree.tsx';
import { Failure } from '../util.tsx';

interface Entry {
  name: string;
  repository: boolean;
  descendants: number;
}

function toNode(entry: Entry, prefix: string): TreeNode {
  const short = entry.name.slice(prefix.length);
  return {
    id: entry.name,
    text: short,
    expandable: entry.descendants > 0,
    label: (
      <>
        <span className={entry.repository ? 'repo-name' : 'namespace-name'}>{short}{entry.descendants > 0 ? '/' : ''}</span>
        {entry.descendants > 0 && <span className="badge" title={`${entry.descendants} repositories below`}>{entry.descendants}</span>}
        {!entry.repository && <span className="muted small-text"> namespace</span>}
      </>
    ),
  };
}

const treePath = (prefix: string) => `/v2/_trellis/tree${prefix ? `?prefix=${enc(prefix)}` : ''}`;
const FIRST_PAGE = '/v2/_trellis/tree?n=1000';
const repositoryEntries = new Map<string, boolean>();

type TreePage = Awaited<ReturnType<typeof api.json<{ entries: Entry[] }>>>;
let prefetched: { page: Promise<TreePage>; at: number; user: string | undefined } | undefined;

/** Starts loading the first page before React renders (main.tsx calls it on the start page). */
export function prefetchRepositories(): void {
  prefetched = { page: api.json<{ entries: Entry[] }>(FIRST_PAGE), at: performance.now(), user: api.user };
  prefetched.page.catch(() => undefined);
}

function firstPage(): Promise<TreePage> {
  // A prefetch is used while fresh and for the same account (StrictMode's second mount uses it
  // too), then forgotten: after signing in or out the tree is asked for again.
  if (prefetched && prefetched.user === api.user && performance.now() - prefetched.at < 5000) return prefetched.page;
  prefetched = undefined;
  return api.json<{ entries: Entry[] }>(FIRST_PAGE);
}

export function HomePage() {
  const [roots, setRoots] = useState<TreeNode[]>([]);
  const [error, setError] = useState<Error | undefined>();
  const [done, setDone] = useState(false);

  useEffect(() => {
    let live = true;
    (async () => {
      // The first page paints at once; the rest follow page by page.
      let next: string | undefined = FIRST_PAGE;
      let all: TreeNode[] = [];
      while (next && live) {
        const { value, response }: TreePage = next === FIRST_PAGE ? await firstPage() : await api.json<{ entries: Entry[] }>(next);
        for (const e of value.entries) repositoryEntries.set(e.name, e.repository);
        all = [...all, ...value.entries.map((e) => toNode(e, ''))];
        if (live) setRoots(all);
        next = nextPage(response);
      }
      if (live) setDone(true);
    })().catch((err: unknown) => { if (live) setError(err as Error); });
    return () => { live = false; };
  }, []);

  useEffect(() => {
    if (roots.length && !performance.getEntriesByName('trellis:repositories').length) performance.mark('trellis:repositories');
  }, [roots]);

  const loadChildren = useCallback(async (node: TreeNode) => {
    const prefix = `${node.id}/`;
    const entries = await collectPages<Entry>(treePath(prefix), (body) => (body as { entries: Entry[] }).entries);
    for (const e of entries) repositoryEntries.set(e.name, e.repository);
    return entries.map((e) => toNode(e, prefix));
  }, []);

  const open = useCallback((node: TreeNode) => {
    if (!repositoryEntries.get(node.id)) return false;
    navigate(href('repository', { name: node.id }));
    return true;
  }, []);

  return (
    <section aria-labelledby="repos-title">
      <h1 id="repos-title">Repositories</h1>
      {error ? <Failure error={error} /> : (
        <>
          <p className="muted" role="status">
            {roots.length ? `${roots.length.toLocaleString('en')} top-level entries${done ? '' : ' so far'}` : done ? 'No repositories you may see.' : 'Loading repositories…'}
            {' '}Arrow keys move, Right opens a namespace, Enter opens a repository.
          </p>
          {roots.length > 0 && <Tree label="Repositories" roots={roots} loadChildren={loadChildren} onOpen={open} height={560} testId="repository-tree" />}
        </>
      )}
    </section>
  );
}
