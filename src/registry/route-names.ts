// A bounded set of names for what a request asked for, for metrics labels and logs: never a raw
// path or repository name, so the number of series stays fixed however many repositories exist.

export type RouteName =
  | 'base' | 'catalog' | 'manifest' | 'blob' | 'blob_upload' | 'tags' | 'referrers' | 'graph' | 'references' | 'search'
  | 'components' | 'gc' | 'token' | 'discover' | 'metrics' | 'healthz' | 'readyz' | 'other';

export function routeName(path: string): RouteName {
  if (!path.startsWith('/v2')) {
    if (path === '/metrics') return 'metrics';
    if (path === '/healthz') return 'healthz';
    if (path === '/readyz') return 'readyz';
    return 'other';
  }
  if (path === '/v2' || path === '/v2/') return 'base';
  if (path === '/v2/_catalog') return 'catalog';
  if (path.startsWith('/v2/_trellis/')) {
    if (path === '/v2/_trellis/token') return 'token';
    if (path === '/v2/_trellis/gc') return 'gc';
    if (path === '/v2/_trellis/search') return 'search';
    if (path.startsWith('/v2/_trellis/components')) return 'components';
  }
  if (path === '/v2/_oci/references') return 'references';
  if (path === '/v2/_oci/ext/discover') return 'discover';
  // Repository routes end in a fixed segment after the name (see ROUTES in server.ts).
  if (path.includes('/manifests/')) return 'manifest';
  if (path.includes('/blobs/uploads')) return 'blob_upload';
  if (path.includes('/blobs/')) return 'blob';
  if (/\/tags\/list\/?$/.test(path)) return 'tags';
  if (path.includes('/referrers/')) return 'referrers';
  if (path.includes('/_trellis/graph/')) return 'graph';
  return 'other';
}
