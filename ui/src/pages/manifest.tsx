// One manifest or index: what it is, its config, layers and platforms, annotations, raw JSON, pull
// commands, the whole referrer tree (expanded lazily, filtered by artifact type), what it uses
// and what uses it (index children, artifact blobs, nested-namespace links) and owning components.
import { useCallback, useMemo, useState } from 'react';
import { api, collectPages, enc, MANIFEST_ACCEPT } from '../api.ts';
import { href, Link, navigate } from '../router.tsx';
import { Tree, type TreeNode } from '../tree.tsx';
import { CopyButton, Failure, Loading, formatSize, formatTime, shortDigest, useAsync } from '../util.tsx';

const NESTED = 'dev.trellis.repository';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

interface Manifest {
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  blobs?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

interface GraphNode {
  repository: string;
  digest: string;
  mediaType?: string;
  size?: number;
  artifactType?: string;
}

interface GraphEdge {
  from: GraphNode | { forbidden: true };
  to: GraphNode | { forbidden: true };
  kind: string;
  depth: number;
}

async function loadManifest(name: string, reference: string) {
  const response = await api.fetch(`/v2/${name}/manifests/${reference}`, { headers: { Accept: MANIFEST_ACCEPT } });
  const text = await response.text();
  const digest = response.headers.get('Docker-Content-Digest') ?? reference;
  return { text, digest, mediaType: response.headers.get('Content-Type') ?? '', manifest: JSON.parse(text) as Manifest };
}

function platformText(p: Descriptor['platform']): string {
  return p ? [p.os, p.architecture, p.variant].filter(Boolean).join('/') : '';
}

function Annotations({ values }: { values: Record<string, string> | undefined }) {
  const entries = Object.entries(values ?? {});
  if (!entries.length) return <p className="muted">None.</p>;
  return (
    <table>
      <thead><tr><th scope="col">Key</th><th scope="col">Value</th></tr></thead>
      <tbody>{entries.map(([k, v]) => <tr key={k}><td><code>{k}</code></td><td className="wrap">{v}</td></tr>)}</tbody>
    </table>
  );
}

function PullCommands({ name, reference }: { name: string; reference: string }) {
  const host = window.location.host;
  const ref = reference.includes(':') && reference.startsWith('sha') ? `${host}/${name}@${reference}` : `${host}/${name}:${reference}`;
  const commands: [string, string][] = [
    ['docker', `docker pull ${ref}`],
    ['podman', `podman pull ${ref}`],
    ['oras', `oras pull ${ref}`],
    ['regctl', `regctl image copy ${ref} ocidir://./${name.split('/').pop()}`],
    ['trellis', `trellis pull ${ref}`],
  ];
  return (
    <table className="commands">
      <tbody>
        {commands.map(([tool, command]) => (
          <tr key={tool}><th scope="row">{tool}</th><td><code>{command}</code></td><td><CopyButton text={command} label={`Copy the ${tool} command`} /></td></tr>
        ))}
      </tbody>
    </table>
  );
}

/** The referrers of a subject as tree nodes; each can be expanded into its own referrers. */
function referrerNodes(parentId: string, referrers: Descriptor[]): TreeNode[] {
  return referrers.map((r) => ({
    id: `${parentId}>${r.digest}`,
    text: `${r.artifactType ?? r.mediaType} ${shortDigest(r.digest)}`,
    expandable: true,
    label: (
      <>
        <span className="atype">{r.artifactType ?? r.mediaType}</span>{' '}
        <code>{shortDigest(r.digest)}</code>{' '}
        <span className="muted">{formatSize(r.size)}</span>
        {r.annotations?.['org.opencontainers.image.created'] && <span className="muted"> · {formatTime(r.annotations['org.opencontainers.image.created'])}</span>}
      </>
    ),
  }));
}

const fetchReferrers = (name: string, digest: string) =>
  collectPages<Descriptor>(`/v2/${name}/referrers/${digest}?n=1000`, (body) => (body as { manifests: Descriptor[] }).manifests ?? [], 10_000);

function ReferrerTree({ name, digest }: { name: string; digest: string }) {
  const referrers = useAsync(() => fetchReferrers(name, digest), [name, digest]);
  const [filter, setFilter] = useState<string | undefined>();
  const loadChildren = useCallback(async (node: TreeNode) => {
    const child = node.id.slice(node.id.lastIndexOf('>') + 1);
    return referrerNodes(node.id, await fetchReferrers(name, child));
  }, [name]);
  const open = useCallback((node: TreeNode) => {
    navigate(href('manifest', { name, ref: node.id.slice(node.id.lastIndexOf('>') + 1) }));
    return true;
  }, [name]);
  const all = referrers.state === 'done' ? referrers.value : [];
  const counts = useMemo(() => {
    const map = new Map<string, number>();
    for (const r of all) map.set(r.artifactType ?? r.mediaType, (map.get(r.artifactType ?? r.mediaType) ?? 0) + 1);
    return [...map.entries()].sort();
  }, [all]);
  const roots = useMemo(() => referrerNodes(digest, all.filter((r) => !filter || (r.artifactType ?? r.mediaType) === filter)), [all, filter, digest]);
  if (referrers.state === 'loading') return <Loading what="referrers" />;
  if (referrers.state === 'error') return <Failure error={referrers.error} />;
  if (!all.length) return <p className="muted">No signatures, SBOMs, attestations or other referrers.</p>;
  return (
    <>
      <div role="group" aria-label="Filter referrers by artifact type" className="chips">
        <button type="button" aria-pressed={!filter} onClick={() => setFilter(undefined)}>All <span className="badge">{all.length}</span></button>
        {counts.map(([type, count]) => (
          <button type="button" key={type} aria-pressed={filter === type} onClick={() => setFilter(filter === type ? undefined : type)}>{type} <span className="badge">{count}</span></button>
        ))}
      </div>
      <p className="muted small-text">Right arrow or ▸ shows a referrer's own referrers; Enter opens it.</p>
      <Tree key={filter ?? ''} label="Referrers" roots={roots} loadChildren={loadChildren} onOpen={open} height={360} testId="referrer-tree" />
    </>
  );
}

function GraphList({ name, digest, direction }: { name: string; digest: string; direction: 'down' | 'up' }) {
  const result = useAsync(async () => {
    const { value } = await api.json<{ edges: GraphEdge[] }>(`/v2/${name}/_trellis/graph/${digest}?direction=${direction}&depth=1`);
    // Config and layers are shown above; here: manifests, artifact blobs, subjects and parents.
    return value.edges.filter((e) => e.kind !== 'layer' && e.kind !== 'config');
  }, [name, digest, direction]);
  if (result.state === 'loading') return <Loading what={direction === 'down' ? 'what it uses' : 'what uses it'} />;
  if (result.state === 'error') return <Failure error={result.error} />;
  if (!result.value.length) return <p className="muted">{direction === 'down' ? 'No manifests.' : 'Nothing in the registry uses it.'}</p>;
  return (
    <ul className="plain" data-testid={direction === 'down' ? 'uses' : 'used-by'}>
      {result.value.map((edge, i) => {
        const far = direction === 'down' ? edge.to : edge.from;
        if ('forbidden' in far) return <li key={i}><span className="forbidden">forbidden</span> <span className="muted">a {edge.kind} you may not pull</span></li>;
        const elsewhere = far.repository !== name;
        return (
          <li key={i}>
            <span className="kind">{direction === 'up' && edge.kind === 'subject' ? 'referrer' : edge.kind}</span>{' '}
            <Link to={href('manifest', { name: far.repository, ref: far.digest })}>{elsewhere ? `${far.repository}@` : ''}{shortDigest(far.digest)}</Link>{' '}
            <span className="muted">{far.artifactType ?? far.mediaType ?? ''}{elsewhere ? ' · nested namespace' : ''}</span>
          </li>
        );
      })}
    </ul>
  );
}

function Owners({ digest }: { digest: string }) {
  const result = useAsync(async () => (await api.json<{ owners: { name: string; version: string; repository: string; via: string }[] }>(`/v2/_trellis/components/owners?digest=${enc(digest)}`)).value.owners, [digest]);
  if (result.state !== 'done' || !result.value.length) return null;
  return (
    <>
      <h2>Part of components</h2>
      <ul className="plain">
        {result.value.map((o) => <li key={`${o.name}@${o.version}@${o.repository}`}><Link to={href('component-version', { name: o.name, version: o.version, repository: o.repository })}>{o.name} {o.version}</Link> <span className="muted">({o.via})</span></li>)}
      </ul>
    </>
  );
}

/** An image config (or any small JSON config) as formatted JSON, on demand. */
function ConfigView({ name, config }: { name: string; config: Descriptor }) {
  const [open, setOpen] = useState(false);
  const result = useAsync(async () => {
    if (!open) return undefined;
    const response = await api.fetch(`/v2/${name}/blobs/${config.digest}`);
    return JSON.stringify(JSON.parse(await response.text()), null, 2);
  }, [open, name, config.digest]);
  if (config.size > 256 * 1024 || !/json/.test(config.mediaType) || config.size <= 2) return null;
  return (
    <details onToggle={(e) => setOpen((e.target as HTMLDetailsElement).open)}>
      <summary>Config JSON</summary>
      {result.state === 'loading' ? <Loading what="the config" /> : result.state === 'error' ? <Failure error={result.error} /> : <pre className="raw" tabIndex={0}>{result.value}</pre>}
    </details>
  );
}

export function ManifestPage({ name, reference }: { name: string; reference: string }) {
  const result = useAsync(() => loadManifest(name, reference), [name, reference]);
  if (result.state === 'loading') return <Loading what="the manifest" />;
  if (result.state === 'error') return <Failure error={result.error} />;
  const { manifest, digest, text, mediaType } = result.value;
  const layers = manifest.layers ?? manifest.blobs ?? [];
  const total = (manifest.config?.size ?? 0) + layers.reduce((s, l) => s + l.size, 0);
  return (
    <section aria-labelledby="manifest-title">
      <nav aria-label="Breadcrumb" className="crumbs"><Link to={href('')}>Repositories</Link> / <Link to={href('repository', { name })}>{name}</Link></nav>
      <h1 id="manifest-title">{name}{reference.includes(':') ? '@' : ':'}{reference.includes(':') ? shortDigest(reference) : reference}</h1>
      <dl className="facts">
        <dt>Digest</dt><dd><code>{digest}</code> <CopyButton text={digest} label="Copy the digest" /></dd>
        <dt>Media type</dt><dd>{mediaType}</dd>
        {manifest.artifactType && <><dt>Artifact type</dt><dd>{manifest.artifactType}</dd></>}
        {layers.length > 0 && <><dt>Size</dt><dd>{formatSize(total)} in {layers.length} layer{layers.length === 1 ? '' : 's'}</dd></>}
        {manifest.subject && <><dt>Subject</dt><dd><Link to={href('manifest', { name, ref: manifest.subject.digest })}>{shortDigest(manifest.subject.digest)}</Link></dd></>}
      </dl>
      <h2>Pull</h2>
      <PullCommands name={name} reference={reference} />
      {manifest.manifests && (
        <>
          <h2>Platforms and children</h2>
          <table data-testid="children">
            <thead><tr><th scope="col">Manifest</th><th scope="col">Platform</th><th scope="col">Type</th><th scope="col">Size</th></tr></thead>
            <tbody>
              {manifest.manifests.map((child) => {
                const nested = child.annotations?.[NESTED];
                const repository = nested ? `${name}/${nested}` : name;
                return (
                  <tr key={child.digest + (nested ?? '')}>
                    <td><Link to={href('manifest', { name: repository, ref: child.digest })}>{nested ? `${repository}@` : ''}{shortDigest(child.digest)}</Link>{nested && <span className="muted"> (nested)</span>}</td>
                    <td>{platformText(child.platform)}</td>
                    <td className="ellipsis">{child.artifactType ?? child.mediaType}</td>
                    <td>{formatSize(child.size)}</td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
      {manifest.config && (
        <>
          <h2>Config</h2>
          <p><code>{manifest.config.mediaType}</code> · <code>{shortDigest(manifest.config.digest)}</code> · {formatSize(manifest.config.size)}</p>
          <ConfigView name={name} config={manifest.config} />
        </>
      )}
      {layers.length > 0 && (
        <>
          <h2>Layers</h2>
          <table>
            <thead><tr><th scope="col">#</th><th scope="col">Media type</th><th scope="col">Digest</th><th scope="col">Size</th><th scope="col">Title</th></tr></thead>
            <tbody>
              {layers.map((layer, i) => (
                <tr key={i}><td>{i + 1}</td><td className="ellipsis">{layer.mediaType}</td><td><code>{shortDigest(layer.digest)}</code></td><td>{formatSize(layer.size)}</td><td>{layer.annotations?.['org.opencontainers.image.title'] ?? ''}</td></tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h2>Annotations</h2>
      <Annotations values={manifest.annotations} />
      <h2>Referrers</h2>
      <ReferrerTree name={name} digest={digest} />
      <div className="columns">
        <div><h2>Uses</h2><GraphList name={name} digest={digest} direction="down" /></div>
        <div><h2>Used by</h2><GraphList name={name} digest={digest} direction="up" /></div>
      </div>
      <Owners digest={digest} />
      <details>
        <summary>Raw JSON</summary>
        <CopyButton text={text} label="Copy the raw JSON" />
        <pre className="raw" tabIndex={0}>{JSON.stringify(JSON.parse(text), null, 2)}</pre>
      </details>
    </section>
  );
}
