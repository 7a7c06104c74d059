// Components (OCM and rule-defined, docs/query.md#components): the list with provider and label
// filters, a component's versions in semver order, a version's resources, sources and references.
import { useState, type FormEvent } from 'react';
import { api, enc } from '../api.ts';
import { href, Link, navigate } from '../router.tsx';
import { Failure, Loading, formatTime, shortDigest, useAsync } from '../util.tsx';

interface ComponentSummary {
  name: string;
  kind: string;
  repository: string;
  provider: string | null;
  labels: Record<string, string>;
  latest: string;
  versionCount: number;
}

interface VersionRow {
  version: string;
  tag: string;
  digest: string;
  repository: string;
  kind: string;
  pushedAt: string;
}

interface Resource {
  name: string;
  version: string | null;
  type: string | null;
  relation: string | null;
  access: Record<string, unknown> | null;
  digest: string | null;
}

interface ComponentRef {
  name?: string;
  componentName?: string;
  version: string;
  repository?: string;
}

interface VersionDetail extends VersionRow {
  name: string;
  provider: string | null;
  labels: Record<string, string>;
  resources: Resource[];
  sources: Resource[];
  references: ComponentRef[];
  referencedBy: ComponentRef[];
}

export function ComponentsPage({ params }: { params: URLSearchParams }) {
  const [name, setName] = useState(params.get('q_name__contains') ?? '');
  const [provider, setProvider] = useState(params.get('q_provider__eq') ?? '');
  const [label, setLabel] = useState(() => [...params.keys()].find((k) => k.startsWith('q_labels__'))?.replace(/^q_labels__|__eq$/g, '') ?? '');
  const [labelValue, setLabelValue] = useState(() => [...params.entries()].find(([k]) => k.startsWith('q_labels__'))?.[1] ?? '');
  const query = new URLSearchParams([...params].filter(([k]) => k.startsWith('q_') || k === 'prefix'));
  const result = useAsync(async () => (await api.json<{ components: ComponentSummary[] }>(`/v2/_trellis/components?n=500&${query}`)).value.components, [query.toString()]);

  const filter = (event: FormEvent) => {
    event.preventDefault();
    const next: Record<string, string> = {};
    if (params.get('prefix')) next.prefix = params.get('prefix')!;
    if (name) next.q_name__contains = name;
    if (provider) next.q_provider__eq = provider;
    if (label) next[`q_labels__${label.toLowerCase()}__${labelValue ? 'eq' : 'exists'}`] = labelValue || 'true';
    navigate(href('components', next));
  };

  return (
    <section aria-labelledby="components-title">
      <h1 id="components-title">Components</h1>
      <form onSubmit={filter} className="row" aria-label="Filter components">
        <label>Name contains <input value={name} onChange={(e) => setName(e.target.value)} /></label>
        <label>Provider <input value={provider} onChange={(e) => setProvider(e.target.value)} /></label>
        <label>Label <input value={label} onChange={(e) => setLabel(e.target.value)} /></label>
        <label>Label value <input value={labelValue} onChange={(e) => setLabelValue(e.target.value)} /></label>
        <button type="submit">Filter</button>
      </form>
      {params.get('prefix') && <p className="muted">Under <code>{params.get('prefix')}</code></p>}
      {result.state === 'loading' ? <Loading what="components" /> : result.state === 'error' ? <Failure error={result.error} /> : result.value.length === 0 ? <p role="status">No components.</p> : (
        <table data-testid="components">
          <thead><tr><th scope="col">Component</th><th scope="col">Provider</th><th scope="col">Latest</th><th scope="col">Versions</th><th scope="col">Kind</th><th scope="col">Repository</th></tr></thead>
          <tbody>
            {result.value.map((c) => (
              <tr key={`${c.name}@${c.repository}`}>
                <td><Link to={href('component', { name: c.name, repository: c.repository })}>{c.name}</Link></td>
                <td>{c.provider ?? ''}</td>
                <td>{c.latest}</td>
                <td>{c.versionCount}</td>
                <td>{c.kind}</td>
                <td><Link to={href('repository', { name: c.repository })}>{c.repository}</Link></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function ComponentPage({ name, repository }: { name: string; repository: string }) {
  const result = useAsync(async () => (await api.json<{ versions: VersionRow[] }>(`/v2/_trellis/components/versions?component=${enc(name)}${repository ? `&repository=${enc(repository)}` : ''}&n=1000`)).value.versions, [name, repository]);
  return (
    <section aria-labelledby="component-title">
      <nav aria-label="Breadcrumb" className="crumbs"><Link to={href('components')}>Components</Link></nav>
      <h1 id="component-title">{name}</h1>
      {repository && <p className="muted">In <Link to={href('repository', { name: repository })}>{repository}</Link></p>}
      <h2>Versions</h2>
      {result.state === 'loading' ? <Loading what="versions" /> : result.state === 'error' ? <Failure error={result.error} /> : (
        <table data-testid="component-versions">
          <thead><tr><th scope="col">Version</th><th scope="col">Tag</th><th scope="col">Digest</th><th scope="col">Pushed</th></tr></thead>
          <tbody>
            {result.value.map((v) => (
              <tr key={`${v.version}@${v.repository}`}>
                <td><Link to={href('component-version', { name, version: v.version, repository: v.repository })}>{v.version}</Link></td>
                <td>{v.tag}</td>
                <td><Link to={href('manifest', { name: v.repository, ref: v.digest })}><code>{shortDigest(v.digest)}</code></Link></td>
                <td>{formatTime(v.pushedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** Where a resource's access points inside this registry, if it does. */
function accessLink(resource: Resource, repository: string) {
  const access = resource.access ?? {};
  const image = typeof access.imageReference === 'string' ? access.imageReference : undefined;
  if (image) {
    const match = /^([^/]+)\/(.+?)(?::([\w][\w.-]*))?(?:@(sha256:[0-9a-f]{64}))?$/.exec(image);
    if (match && match[1] === window.location.host) {
      return <Link to={href('manifest', { name: match[2]!, ref: match[4] ?? match[3] ?? 'latest' })}>{image}</Link>;
    }
    return <code>{image}</code>;
  }
  const local = typeof access.localReference === 'string' ? access.localReference : undefined;
  if (local) return <a href={`/v2/${repository}/blobs/${local}`}>local blob {shortDigest(local)}</a>;
  return <code>{String(access.type ?? '')}</code>;
}

function ResourceTable({ items, repository, testId }: { items: Resource[]; repository: string; testId: string }) {
  if (!items.length) return <p className="muted">None.</p>;
  return (
    <table data-testid={testId}>
      <thead><tr><th scope="col">Name</th><th scope="col">Version</th><th scope="col">Type</th><th scope="col">Relation</th><th scope="col">Access</th></tr></thead>
      <tbody>
        {items.map((r, i) => (
          <tr key={i}><td>{r.name}</td><td>{r.version ?? ''}</td><td>{r.type ?? ''}</td><td>{r.relation ?? ''}</td><td className="wrap">{accessLink(r, repository)}</td></tr>
        ))}
      </tbody>
    </table>
  );
}

export function ComponentVersionPage({ name, version, repository }: { name: string; version: string; repository: string }) {
  const result = useAsync(async () => (await api.json<VersionDetail>(`/v2/_trellis/components/version?component=${enc(name)}&version=${enc(version)}${repository ? `&repository=${enc(repository)}` : ''}`)).value, [name, version, repository]);
  if (result.state === 'loading') return <Loading what="the component version" />;
  if (result.state === 'error') return <Failure error={result.error} />;
  const v = result.value;
  const refLink = (r: ComponentRef, i: number) => {
    const component = r.componentName ?? r.name ?? '';
    return <li key={i}><Link to={href('component-version', { name: component, version: r.version, repository: r.repository })}>{component} {r.version}</Link>{r.name && r.componentName ? <span className="muted"> as {r.name}</span> : null}</li>;
  };
  return (
    <section aria-labelledby="version-title">
      <nav aria-label="Breadcrumb" className="crumbs"><Link to={href('components')}>Components</Link> / <Link to={href('component', { name, repository: v.repository })}>{name}</Link></nav>
      <h1 id="version-title">{v.name} {v.version}</h1>
      <dl className="facts">
        <dt>Provider</dt><dd>{v.provider ?? '—'}</dd>
        <dt>Kind</dt><dd>{v.kind}</dd>
        <dt>Manifest</dt><dd><Link to={href('manifest', { name: v.repository, ref: v.digest })}>{v.repository}@{shortDigest(v.digest)}</Link> (tag {v.tag})</dd>
        <dt>Pushed</dt><dd>{formatTime(v.pushedAt)}</dd>
      </dl>
      {Object.keys(v.labels ?? {}).length > 0 && <><h2>Labels</h2><ul className="plain">{Object.entries(v.labels).map(([k, val]) => <li key={k}><code>{k}</code>: {val}</li>)}</ul></>}
      <h2>Resources</h2>
      <ResourceTable items={v.resources ?? []} repository={v.repository} testId="resources" />
      <h2>Sources</h2>
      <ResourceTable items={v.sources ?? []} repository={v.repository} testId="sources" />
      <h2>References</h2>
      {(v.references ?? []).length ? <ul className="plain">{v.references.map(refLink)}</ul> : <p className="muted">None.</p>}
      <h2>Referenced by</h2>
      {(v.referencedBy ?? []).length ? <ul className="plain">{v.referencedBy.map(refLink)}</ul> : <p className="muted">None.</p>}
    </section>
  );
}
