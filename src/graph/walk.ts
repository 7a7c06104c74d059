// Walks the artifact graph from one manifest: down (what it references: config, layers, index
// children, artifact blobs, its subject) or up (what references it: parent indexes here or in
// ancestor repositories, referrers, manifests using a blob). Bounded by depth and edge count.
import type { MetadataStore, ManifestRecord } from '../metadata/store.ts';
import type { LinkKind } from '../oci/manifest.ts';

export type Direction = 'down' | 'up';

export interface GraphNode {
  repository: string;
  digest: string;
  mediaType?: string;
  size?: number;
  artifactType?: string;
}

/** A node in a repository the caller may not pull: reported as there, never named. */
export interface ForbiddenNode {
  forbidden: true;
}

export interface GraphEdge {
  from: GraphNode | ForbiddenNode;
  to: GraphNode | ForbiddenNode;
  kind: LinkKind;
  /** Hops from the starting manifest. */
  depth: number;
}

export interface WalkOptions {
  direction: Direction;
  maxDepth: number;
  /** Stop after this many edges; the answer then says it was truncated. */
  maxEdges: number;
  /** Repositories the caller may see; the walk reports nodes elsewhere as forbidden and stops there. */
  canPull?: (repository: string) => boolean;
}

const FORBIDDEN: ForbiddenNode = { forbidden: true };
/** Edges walked between two turns of the event loop: a walk of 100,000 edges takes seconds. */
const EDGES_PER_TURN = 500;

async function node(metadata: MetadataStore, repository: string, digest: string, mediaType?: string): Promise<GraphNode> {
  const repo = await metadata.repository(repository);
  const manifest: ManifestRecord | undefined = repo ? await metadata.manifest(repo.id, digest) : undefined;
  const result: GraphNode = { repository, digest };
  if (manifest) {
    result.mediaType = manifest.mediaType;
    result.size = manifest.size;
    if (manifest.artifactType) result.artifactType = manifest.artifactType;
  } else if (mediaType) {
    result.mediaType = mediaType;
  }
  return result;
}

export async function walkGraph(metadata: MetadataStore, start: { repository: string; digest: string }, options: WalkOptions): Promise<{ edges: GraphEdge[]; truncated: boolean }> {
  const edges: GraphEdge[] = [];
  const seen = new Set<string>([`${start.repository}@${start.digest}`]);
  let frontier = [start];
  for (let depth = 1; depth <= options.maxDepth && frontier.length; depth++) {
    const next: { repository: string; digest: string }[] = [];
    for (const current of frontier) {
      const repo = await metadata.repository(current.repository);
      const links = options.direction === 'down'
        ? (repo ? await metadata.edgesFrom(repo.id, current.digest) : [])
        : await metadata.edgesTo(current.repository, current.digest);
      for (const link of links) {
        if (edges.length >= options.maxEdges) return { edges, truncated: true };
        // Each metadata read resolves at once (SQLite): without a turn now and then, other
        // requests would wait for the whole walk.
        if (edges.length % EDGES_PER_TURN === EDGES_PER_TURN - 1) await new Promise((resolve) => setImmediate(resolve));
        const from = await node(metadata, link.parentRepository, link.parent);
        const to = await node(metadata, link.childRepository, link.child, link.mediaType);
        const visible = (n: GraphNode) => !options.canPull || options.canPull(n.repository);
        edges.push({ from: visible(from) ? from : FORBIDDEN, to: visible(to) ? to : FORBIDDEN, kind: link.kind, depth });
        // Down, a subject is recorded but not followed: it is what the manifest refers to, not part of it.
        const far = options.direction === 'down' ? to : from;
        if (options.direction === 'down' && link.kind === 'subject') continue;
        if (!visible(far)) continue;
        const key = `${far.repository}@${far.digest}`;
        if (!seen.has(key) && (options.direction === 'up' || far.size !== undefined)) {
          seen.add(key);
          next.push({ repository: far.repository, digest: far.digest });
        }
      }
    }
    frontier = next;
  }
  return { edges, truncated: false };
}
