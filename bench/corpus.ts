// Generates a realistic registry for the scale benchmarks: one plain OCI Image Layout per
// repository (what Trellis, oras and regctl read), then builds Trellis's index with `reindex`.
//
//   node bench/corpus.ts --out /work/corpus/full                       # 10,000 repos, 1,000,000 manifests
//   node bench/corpus.ts --out /tmp/c --repos 20 --manifests 2000 --hot-referrers 500
//
// Flags (env in brackets): --out DIR [CORPUS_OUT], --repos N [CORPUS_REPOS, 10000],
// --manifests N [CORPUS_MANIFESTS, 1000000], --seed S [CORPUS_SEED, "trellis"],
// --hot-referrers N [CORPUS_HOT_REFERRERS, min(10000, manifests/2)], --workers N [CORPUS_WORKERS, 2],
// --force (empty DIR first), --no-reindex, --reindex-only (an existing corpus: only run and time
// `trellis reindex`, e.g. after the index schema changed).
//
// Content (deterministic for a given seed, repos and manifests; file mtimes aside):
// - image repositories: OCI image manifests (1–4 layers from a small per-repository pool, a unique
//   config), multi-arch indexes with platform entries, tags (`1.2.3`, `1.2`, `latest`, prereleases,
//   a moving `edge` whose older builds stay as untagged entries), OCI annotations;
// - referrers (manifest `subject`): cosign and notation signatures, SPDX and CycloneDX SBOMs,
//   in-toto attestations, Sigstore bundles; some chained (a signature on an SBOM);
// - Helm chart repositories (`…/charts/<chart>`) and OCM component repositories
//   (`<prefix>/component-descriptors/<component name>`, descriptor layer = a small valid tar);
// - `bench/hot`: one image with exactly --hot-referrers referrers of mixed types.
// Every manifest's config, layers and subject exist; `index.json` lists tags with
// `org.opencontainers.image.ref.name` and referrers and untagged builds as untagged entries
// (annotated `io.containerd.manifest.subject`, as Trellis writes them). A summary (counts, the hot
// subject, timings, DB size) goes to `<out>/corpus.json`, a file Trellis ignores.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { gzipSync } from 'node:zlib';

const ROOT = resolve(import.meta.dirname, '..');

// ---- media types and annotation keys ------------------------------------------------------------

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
const LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
export const COSIGN_SIG = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const COSIGN_SIMPLESIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const NOTATION_SIG = 'application/vnd.cncf.notary.signature';
export const SPDX = 'application/spdx+json';
export const CYCLONEDX = 'application/vnd.cyclonedx+json';
export const IN_TOTO = 'application/vnd.in-toto+json';
export const SIGSTORE_BUNDLE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
export const HELM_CONFIG = 'application/vnd.cncf.helm.config.v1+json';
const HELM_CHART = 'application/vnd.cncf.helm.chart.content.v1.tar+gzip';
export const OCM_CONFIG = 'application/vnd.ocm.software.component.config.v1+json';
const OCM_DESCRIPTOR_TAR = 'application/vnd.ocm.software.component-descriptor.v2+yaml+tar';
export const OCM_ARTIFACT = 'application/vnd.ocm.software.component-descriptor.v2';

const A_CREATED = 'org.opencontainers.image.created';
const A_VERSION = 'org.opencontainers.image.version';
const A_SOURCE = 'org.opencontainers.image.source';
const A_REVISION = 'org.opencontainers.image.revision';
const A_VENDOR = 'org.opencontainers.image.vendor';
const A_TITLE = 'org.opencontainers.image.title';
const A_DESCRIPTION = 'org.opencontainers.image.description';
const A_LICENSES = 'org.opencontainers.image.licenses';
const A_BASE_NAME = 'org.opencontainers.image.base.name';
const REF_NAME = 'org.opencontainers.image.ref.name';
const CONTAINERD_SUBJECT = 'io.containerd.manifest.subject';
const NOTARY_THUMBPRINTS = 'io.cncf.notary.x509chain.thumbprint#S256';

// ---- deterministic randomness -------------------------------------------------------------------

/** sfc32 seeded from sha256(key): the same key always gives the same sequence. */
class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  constructor(key: string) {
    const h = createHash('sha256').update(key).digest();
    this.a = h.readUInt32LE(0);
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
    for (let i = 0; i < 12; i++) this.next();
  }
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  /** Picks by weight from [value, weight] pairs. */
  weighted<T>(items: readonly (readonly [T, number])[]): T {
    const total = items.reduce((s, [, w]) => s + w, 0);
    let x = this.next() * total;
    for (const [value, w] of items) if ((x -= w) < 0) return value;
    return items[items.length - 1]![0];
  }
  normal(): number {
    return Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next());
  }
  hex(bytes: number): string {
    let s = '';
    for (let i = 0; i < bytes; i++) s += Math.floor(this.next() * 256).toString(16).padStart(2, '0');
    return s;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) b.writeUInt32LE(Math.floor(this.next() * 4294967296), Math.min(i, n - 4));
    return b;
  }
  base64(bytes: number): string {
    return this.bytes(bytes).toString('base64');
  }
  uuid(): string {
    const h = this.hex(16);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }
}

// ---- word lists ---------------------------------------------------------------------------------

const ORGS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark', 'wayne', 'cyberdyne', 'tyrell', 'aperture', 'soylent', 'wonka', 'oscorp',
  'vandelay', 'dunder', 'pied-piper', 'gringotts', 'monarch', 'nakatomi', 'massive-dynamic', 'blue-sun', 'weyland', 'virtucon', 'sirius', 'rekall',
  'octan', 'contoso', 'fabrikam', 'northwind', 'tailspin', 'wingtip', 'adventure-works', 'litware', 'proseware', 'library', 'bitnami', 'cncf', 'ocm-demo'];
const TEAMS = ['platform', 'data', 'ml', 'infra', 'payments', 'identity', 'edge', 'observability', 'security', 'mobile-backend'];
const PROJECTS = ['api', 'web', 'worker', 'gateway', 'auth', 'billing', 'search', 'ingest', 'scheduler', 'notifier', 'frontend', 'backend', 'proxy',
  'cache', 'postgres', 'redis', 'nginx', 'envoy', 'kafka-connect', 'spark-job', 'model-server', 'feature-store', 'etl', 'exporter', 'operator',
  'controller', 'webhook', 'cli', 'agent', 'collector', 'dashboard', 'ledger', 'inventory', 'catalog', 'checkout', 'recommender', 'indexer',
  'mailer', 'pdf-render', 'thumbnailer', 'transcoder', 'sso', 'vault-sidecar', 'migrations', 'cron', 'backup', 'registry-mirror', 'dns', 'ntp'];
const VENDORS = ['ACME Corp.', 'Globex Corporation', 'Initech', 'Umbrella Corp.', 'Hooli', 'Stark Industries', 'Wayne Enterprises', 'Cyberdyne Systems',
  'Contoso Ltd.', 'Fabrikam, Inc.', 'Northwind Traders', 'Bitnami by VMware', 'The Linux Foundation'];
const LICENSES = ['Apache-2.0', 'MIT', 'BSD-3-Clause', 'GPL-2.0-only', 'MPL-2.0', 'Apache-2.0 AND MIT', 'proprietary'];
const BASES = ['docker.io/library/alpine:3.19', 'docker.io/library/alpine:3.20', 'docker.io/library/debian:bookworm-slim', 'gcr.io/distroless/static-debian12',
  'gcr.io/distroless/base-debian12', 'registry.access.redhat.com/ubi9/ubi-minimal', 'cgr.dev/chainguard/static', 'docker.io/library/ubuntu:24.04'];
const PLATFORMS: { architecture: string; os: string; variant?: string }[] = [
  { architecture: 'amd64', os: 'linux' }, { architecture: 'arm64', os: 'linux', variant: 'v8' }, { architecture: 'arm', os: 'linux', variant: 'v7' },
  { architecture: 's390x', os: 'linux' }, { architecture: 'ppc64le', os: 'linux' }, { architecture: 'riscv64', os: 'linux' },
];
const IN_TOTO_PREDICATES = ['https://slsa.dev/provenance/v1', 'https://slsa.dev/provenance/v0.2', 'https://spdx.dev/Document', 'https://cyclonedx.org/bom',
  'https://in-toto.io/attestation/vulns/v0.1'];
const SBOM_TOOLS = ['syft-1.4.1', 'syft-1.18.0', 'trivy-0.50.1', 'trivy-0.57.0', 'docker-sbom-0.6.0', 'cdxgen-10.2.1'];

/** Notation signers: each a certificate chain (leaf, intermediate, root) of SHA-256 thumbprints. */
function signers(seed: string): string[][] {
  const rng = new Rng(`${seed}:signers`);
  const roots = Array.from({ length: 3 }, () => rng.hex(32));
  const intermediates = Array.from({ length: 5 }, (_, i) => [rng.hex(32), roots[i % roots.length]!]);
  return Array.from({ length: 12 }, (_, i) => [rng.hex(32), ...intermediates[i % intermediates.length]!]);
}

// ---- the plan: names, kinds and manifest budgets of every repository -----------------------------

export type RepoKind = 'hot' | 'image' | 'helm' | 'ocm';

export interface RepoPlan {
  index: number;
  name: string;
  kind: RepoKind;
  budget: number;
}

export interface CorpusOptions {
  out: string;
  repos: number;
  manifests: number;
  seed: string;
  hotReferrers: number;
  workers: number;
}

export const HOT_REPOSITORY = 'bench/hot';

export function planCorpus(options: Omit<CorpusOptions, 'out' | 'workers'>): RepoPlan[] {
  const rng = new Rng(`${options.seed}:plan`);
  const hotTotal = options.hotReferrers + 1;
  const others = options.repos - 1;
  if (others < 1) throw new Error('need at least 2 repositories');
  const rest = options.manifests - hotTotal;
  if (rest < others) throw new Error(`${options.manifests} manifests are too few for ${options.repos} repositories and ${options.hotReferrers} hot referrers`);

  const names = new Set<string>([HOT_REPOSITORY]);
  const unique = (make: () => string) => {
    for (let attempt = 0; ; attempt++) {
      const base = make();
      const name = attempt < 3 ? base : `${base}-${attempt}`;
      if (!names.has(name) && !names.has(base.split('/').slice(0, -1).join('/'))) {
        names.add(name);
        return name;
      }
    }
  };
  const plans: RepoPlan[] = [{ index: 0, name: HOT_REPOSITORY, kind: 'hot', budget: hotTotal }];
  const weights: number[] = [];
  for (let i = 1; i <= others; i++) {
    const kind = rng.weighted<RepoKind>([['image', 91], ['helm', 5], ['ocm', 4]]);
    let name: string;
    if (kind === 'helm') name = unique(() => `${rng.pick(ORGS)}/charts/${rng.pick(PROJECTS)}`);
    else if (kind === 'ocm') {
      name = unique(() => {
        const component = rng.chance(0.7) ? `github.com/${rng.pick(ORGS)}/${rng.pick(PROJECTS)}` : `ocm.software/${rng.pick(TEAMS)}/${rng.pick(PROJECTS)}`;
        return `${rng.pick(['ocm', 'ocm-releases', 'ocm-dev'])}/component-descriptors/${component}`;
      });
    } else name = unique(() => (rng.chance(0.3) ? `${rng.pick(ORGS)}/${rng.pick(TEAMS)}/${rng.pick(PROJECTS)}` : `${rng.pick(ORGS)}/${rng.pick(PROJECTS)}`));
    plans.push({ index: i, name, kind, budget: 1 });
    // Log-normal sizes: most repositories are small, a few hold thousands of manifests.
    weights.push(Math.exp(1.1 * rng.normal()));
  }
  const sum = weights.reduce((a, b) => a + b, 0);
  const spare = rest - others;
  let given = 0;
  for (let i = 0; i < others; i++) {
    const extra = Math.floor((weights[i]! / sum) * spare);
    plans[i + 1]!.budget += extra;
    given += extra;
  }
  // Hand out what rounding left, largest repositories first.
  const order = plans.slice(1).sort((a, b) => b.budget - a.budget);
  for (let i = 0; given < spare; i = (i + 1) % order.length, given++) order[i]!.budget++;
  return plans;
}

// ---- writing one layout --------------------------------------------------------------------------

interface Desc {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: unknown;
}

export interface RepoStats {
  manifests: number;
  blobs: number;
  bytes: number;
  tags: number;
  referrers: number;
  byType: Record<string, number>;
  versions: Record<string, number>;
  hotSubject?: string;
  hotReferrersByType?: Record<string, number>;
}

const sha256hex = (bytes: Buffer | string) => createHash('sha256').update(bytes).digest('hex');
const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const EMPTY = Buffer.from('{}');

const START_MS = Date.UTC(2023, 0, 1);
const SPAN_MS = Date.UTC(2026, 0, 1) - START_MS;
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** A ustar archive holding one file (what OCM puts in a component-descriptor layer). */
function tarOne(name: string, content: Buffer, mtimeS: number): Buffer {
  const header = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) => header.write(value, offset, length, 'ascii');
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, '0');
  field(0, 100, name);
  field(100, 8, octal(0o644, 8));
  field(108, 8, octal(0, 8));
  field(116, 8, octal(0, 8));
  field(124, 12, octal(content.length, 12));
  field(136, 12, octal(mtimeS, 12));
  field(148, 8, '        ');
  field(156, 1, '0');
  field(257, 6, 'ustar');
  field(263, 2, '00');
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  const padded = Buffer.alloc(Math.ceil(content.length / 512) * 512);
  content.copy(padded);
  return Buffer.concat([header, padded, Buffer.alloc(1024)]);
}

class LayoutBuilder {
  readonly dir: string;
  private written = new Set<string>();
  readonly entries: Desc[] = [];
  stats: RepoStats = { manifests: 0, blobs: 0, bytes: 0, tags: 0, referrers: 0, byType: {}, versions: {} };

  readonly name: string;

  constructor(root: string, name: string) {
    this.name = name;
    this.dir = join(root, name);
    mkdirSync(join(this.dir, 'blobs/sha256'), { recursive: true });
  }

  blob(bytes: Buffer, mediaType: string, annotations?: Record<string, string>): Desc {
    const hex = sha256hex(bytes);
    if (!this.written.has(hex)) {
      this.written.add(hex);
      writeFileSync(join(this.dir, 'blobs/sha256', hex), bytes);
      this.stats.blobs++;
      this.stats.bytes += bytes.length;
    }
    const d: Desc = { mediaType, digest: `sha256:${hex}`, size: bytes.length };
    if (annotations) d.annotations = annotations;
    return d;
  }

  /** Writes a manifest; counts it; returns its descriptor (with artifactType as the referrers API reports it). */
  manifest(body: Record<string, unknown>): Desc {
    const d = this.blob(json(body), body.mediaType as string);
    this.stats.manifests++;
    const config = body.config as Desc | undefined;
    const type = (body.artifactType as string | undefined) ?? (config && config.mediaType !== OCI_EMPTY ? config.mediaType : undefined) ?? (body.mediaType as string);
    this.stats.byType[type] = (this.stats.byType[type] ?? 0) + 1;
    const version = (body.annotations as Record<string, string> | undefined)?.[A_VERSION];
    if (version !== undefined) this.stats.versions[version] = (this.stats.versions[version] ?? 0) + 1;
    if (body.subject) this.stats.referrers++;
    if (body.artifactType) d.artifactType = body.artifactType as string;
    else if (config && config.mediaType !== OCI_EMPTY && body.subject) d.artifactType = config.mediaType;
    return d;
  }

  tag(d: Desc, tag: string): void {
    this.entries.push({ mediaType: d.mediaType, digest: d.digest, size: d.size, annotations: { [REF_NAME]: tag } });
    this.stats.tags++;
  }

  /** An untagged `index.json` entry: a referrer (with its subject) or a build no tag leads to. */
  untagged(d: Desc, subject?: string): void {
    const entry: Desc = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    if (d.artifactType) entry.artifactType = d.artifactType;
    if (subject) entry.annotations = { [CONTAINERD_SUBJECT]: subject };
    this.entries.push(entry);
  }

  finish(): RepoStats {
    writeFileSync(join(this.dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: this.entries }));
    // oci-layout last: it is what makes the folder a layout.
    writeFileSync(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    return this.stats;
  }
}

// ---- versions -----------------------------------------------------------------------------------

interface Version {
  major: number;
  minor: number;
  patch: number;
  pre?: string;
}

const versionText = (v: Version) => `${v.major}.${v.minor}.${v.patch}${v.pre ? `-${v.pre}` : ''}`;

/** The next release after `v`: mostly patches, some minors, few majors. */
function bump(rng: Rng, v: Version): Version {
  const r = rng.next();
  if (r < 0.05) return { major: v.major + 1, minor: 0, patch: 0 };
  if (r < 0.3) return { major: v.major, minor: v.minor + 1, patch: 0 };
  return { major: v.major, minor: v.minor, patch: v.patch + 1 };
}

function firstVersion(rng: Rng): Version {
  return rng.weighted<Version>([
    [{ major: 0, minor: rng.int(1, 9), patch: 0 }, 3],
    [{ major: 1, minor: rng.int(0, 3), patch: rng.int(0, 3) }, 4],
    [{ major: rng.int(2, 5), minor: rng.int(0, 12), patch: 0 }, 2],
    [{ major: rng.int(10, 25), minor: rng.int(0, 4), patch: 0 }, 1],
  ]);
}

/** Release times for `count` pushes: a random window inside the three years, sorted. */
function timeline(rng: Rng, count: number): number[] {
  const start = START_MS + rng.next() * SPAN_MS * 0.7;
  const end = start + (START_MS + SPAN_MS - start) * (0.3 + 0.7 * rng.next());
  const times = Array.from({ length: count }, () => start + rng.next() * (end - start));
  return times.sort((a, b) => a - b).map((t) => Math.floor(t / 1000) * 1000);
}

// ---- repository generators ----------------------------------------------------------------------

type ReferrerKind = 'cosign' | 'notation' | 'spdx' | 'cyclonedx' | 'intoto' | 'bundle';

class RepoGenerator {
  readonly b: LayoutBuilder;
  readonly rng: Rng;
  private remaining: number;
  private layerPools = new Map<string, Desc[]>();
  private empty: Desc;
  private repoSigners: string[][];
  private project: string;
  private org: string;
  private vendor: string;
  private license: string;
  private base: string;

  readonly plan: RepoPlan;

  constructor(root: string, plan: RepoPlan, seed: string, allSigners: string[][]) {
    this.plan = plan;
    this.b = new LayoutBuilder(root, plan.name);
    this.rng = new Rng(`${seed}:repo:${plan.index}`);
    this.remaining = plan.budget;
    this.empty = this.b.blob(EMPTY, OCI_EMPTY);
    const parts = plan.name.split('/');
    this.org = parts[0]!;
    this.project = parts[parts.length - 1]!;
    this.vendor = this.rng.pick(VENDORS);
    this.license = this.rng.pick(LICENSES);
    this.base = this.rng.pick(BASES);
    const first = this.rng.int(0, allSigners.length - 1);
    this.repoSigners = this.rng.chance(0.3) ? [allSigners[first]!, allSigners[(first + 1) % allSigners.length]!] : [allSigners[first]!];
  }

  private take(n: number): boolean {
    if (this.remaining < n) return false;
    this.remaining -= n;
    return true;
  }

  private layers(platform: string): Desc[] {
    let pool = this.layerPools.get(platform);
    if (!pool) {
      const zstd = this.rng.chance(0.1);
      pool = Array.from({ length: 6 }, () => this.b.blob(this.rng.bytes(this.rng.int(400, 6000)), zstd ? LAYER_ZSTD : LAYER_GZIP));
      this.layerPools.set(platform, pool);
    }
    const count = this.rng.weighted([[1, 2], [2, 4], [3, 3], [4, 2]] as const);
    const start = this.rng.int(0, pool.length - count);
    return [pool[0]!, ...pool.slice(Math.max(1, start), Math.max(1, start) + count - 1)].slice(0, count);
  }

  private imageAnnotations(created: string, version: string, revision: string): Record<string, string> {
    const a: Record<string, string> = {
      [A_CREATED]: created,
      [A_VERSION]: version,
      [A_SOURCE]: `https://github.com/${this.org}/${this.project}`,
      [A_REVISION]: revision,
      [A_TITLE]: this.project,
      [A_VENDOR]: this.vendor,
      [A_LICENSES]: this.license,
    };
    if (this.rng.chance(0.5)) a[A_DESCRIPTION] = `${this.project} service of ${this.vendor}`;
    if (this.rng.chance(0.4)) a[A_BASE_NAME] = this.base;
    return a;
  }

  /** One image manifest (config + 1–4 layers). */
  private image(platform: { architecture: string; os: string; variant?: string }, created: string, annotations: Record<string, string>): Desc {
    const key = `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ''}`;
    const layers = this.layers(key);
    const config = this.b.blob(json({
      created, architecture: platform.architecture, os: platform.os, ...(platform.variant ? { variant: platform.variant } : {}),
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `APP_VERSION=${annotations[A_VERSION] ?? 'dev'}`],
        Entrypoint: [`/usr/local/bin/${this.project}`], WorkingDir: '/app', User: '65532:65532',
        Labels: { [A_SOURCE]: `https://github.com/${this.org}/${this.project}`, [A_REVISION]: annotations[A_REVISION] ?? '' },
      },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${sha256hex(l.digest)}`) },
      history: layers.map((_, i) => ({ created, created_by: i === 0 ? `ADD rootfs.tar / # ${this.base}` : `COPY app /app # buildkit step ${i}` })),
    }), OCI_CONFIG);
    return this.b.manifest({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers, annotations });
  }

  private referrer(kind: ReferrerKind, subject: Desc, createdMs: number): Desc {
    const rng = this.rng;
    const created = rfc3339(createdMs);
    const sub = { mediaType: subject.mediaType, digest: subject.digest, size: subject.size };
    const artifact = (artifactType: string, layers: Desc[], annotations: Record<string, string>, config = this.empty) =>
      this.b.manifest({ schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType, config, layers, subject: sub, annotations });
    switch (kind) {
      case 'cosign': {
        const payload = json({
          critical: { identity: { 'docker-reference': `registry.example.com/${this.b.name}` }, image: { 'docker-manifest-digest': subject.digest }, type: 'cosign container image signature' },
          optional: rng.chance(0.5) ? null : { 'sigstore.dev/timestamp': created },
        });
        const layer = this.b.blob(payload, COSIGN_SIMPLESIGNING, { 'dev.cosignproject.cosign/signature': rng.base64(rng.pick([64, 71, 72])) });
        return artifact(COSIGN_SIG, [layer], { [A_CREATED]: created });
      }
      case 'notation': {
        const signer = rng.pick(this.repoSigners);
        const cose = rng.chance(0.2);
        const envelope = cose ? rng.bytes(rng.int(1500, 2600)) : json({ payload: rng.base64(180), protected: rng.base64(240), header: { x5c: signer.map(() => rng.base64(300)) }, signature: rng.base64(256) });
        const layer = this.b.blob(envelope, cose ? 'application/cose' : 'application/jose+json');
        return artifact(NOTATION_SIG, [layer], { [NOTARY_THUMBPRINTS]: JSON.stringify(signer), [A_CREATED]: created });
      }
      case 'spdx': {
        const doc = json({
          spdxVersion: 'SPDX-2.3', dataLicense: 'CC0-1.0', SPDXID: 'SPDXRef-DOCUMENT', name: `${this.b.name}@${subject.digest}`,
          documentNamespace: `https://anchore.com/syft/image/${this.project}-${rng.uuid()}`,
          creationInfo: { created, creators: [`Tool: ${rng.pick(SBOM_TOOLS)}`, 'Organization: Anchore, Inc'] },
          packages: Array.from({ length: rng.int(3, 12) }, (_, i) => ({ name: `pkg-${rng.hex(3)}`, SPDXID: `SPDXRef-Package-${i}`, versionInfo: `${rng.int(0, 9)}.${rng.int(0, 30)}.${rng.int(0, 9)}`, licenseConcluded: rng.pick(LICENSES) })),
        });
        return artifact(SPDX, [this.b.blob(doc, SPDX)], { [A_CREATED]: created });
      }
      case 'cyclonedx': {
        const doc = json({
          bomFormat: 'CycloneDX', specVersion: rng.pick(['1.4', '1.5', '1.6']), serialNumber: `urn:uuid:${rng.uuid()}`, version: 1,
          metadata: { timestamp: created, tools: [{ name: rng.pick(SBOM_TOOLS) }], component: { type: 'container', name: this.b.name } },
          components: Array.from({ length: rng.int(3, 12) }, () => ({ type: 'library', name: `lib${rng.hex(3)}`, version: `${rng.int(0, 9)}.${rng.int(0, 30)}.${rng.int(0, 9)}` })),
        });
        return artifact(CYCLONEDX, [this.b.blob(doc, CYCLONEDX)], { [A_CREATED]: created });
      }
      case 'intoto': {
        const predicateType = rng.pick(IN_TOTO_PREDICATES);
        const statement = json({
          _type: 'https://in-toto.io/Statement/v1', subject: [{ name: this.b.name, digest: { sha256: subject.digest.slice(7) } }], predicateType,
          predicate: { buildDefinition: { buildType: 'https://actions.github.io/buildtypes/workflow/v1', externalParameters: { workflow: { ref: 'refs/heads/main', repository: `https://github.com/${this.org}/${this.project}` } } }, runDetails: { builder: { id: 'https://github.com/actions/runner' }, metadata: { invocationId: rng.uuid(), startedOn: created } } },
        });
        const layer = this.b.blob(statement, IN_TOTO, { 'in-toto.io/predicate-type': predicateType });
        return artifact(IN_TOTO, [layer], { [A_CREATED]: created, 'in-toto.io/predicate-type': predicateType });
      }
      case 'bundle': {
        const predicateType = rng.pick(['https://slsa.dev/provenance/v1', 'https://sigstore.dev/cosign/sign/v1']);
        const bundle = json({ mediaType: SIGSTORE_BUNDLE, verificationMaterial: { certificate: { rawBytes: rng.base64(600) }, tlogEntries: [{ logIndex: String(rng.int(1e7, 2e8)) }] }, dsseEnvelope: { payload: rng.base64(300), payloadType: 'application/vnd.in-toto+json', signatures: [{ sig: rng.base64(71) }] } });
        const annotations = { 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': predicateType, [A_CREATED]: created };
        return artifact(SIGSTORE_BUNDLE, [this.b.blob(bundle, SIGSTORE_BUNDLE)], annotations);
      }
    }
  }

  /** Referrers of one subject pushed after it, as many as the budget allows; some chained. */
  private attach(subject: Desc, atMs: number, kinds: ReferrerKind[]): void {
    for (const kind of kinds) {
      if (!this.take(1)) return;
      const at = atMs + this.rng.int(1, 600) * 1000;
      const r = this.referrer(kind, subject, at);
      this.b.untagged(r, subject.digest);
      // A signature on the SBOM itself (chained referrers).
      if ((kind === 'spdx' || kind === 'cyclonedx') && this.rng.chance(0.25) && this.take(1)) {
        this.b.untagged(this.referrer(this.rng.chance(0.7) ? 'cosign' : 'notation', r, at + 5000), r.digest);
      }
    }
  }

  private referrerKinds(): ReferrerKind[] {
    const kinds: ReferrerKind[] = [];
    const rng = this.rng;
    if (rng.chance(0.6)) kinds.push('cosign');
    if (rng.chance(0.25)) kinds.push('notation');
    if (rng.chance(0.3)) kinds.push('spdx');
    if (rng.chance(0.2)) kinds.push('cyclonedx');
    if (rng.chance(0.25)) kinds.push('intoto');
    if (rng.chance(0.08)) kinds.push('bundle');
    return kinds;
  }

  generate(): RepoStats {
    if (this.plan.kind === 'hot') this.hot();
    else if (this.plan.kind === 'helm') this.helm();
    else if (this.plan.kind === 'ocm') this.ocm();
    else this.images();
    if (this.remaining !== 0) throw new Error(`${this.plan.name}: ${this.remaining} manifests left over`);
    return this.b.finish();
  }

  private images(): void {
    const rng = this.rng;
    // Roughly 2.4 manifests per release on average (referrers, multi-arch children).
    const releases = Math.max(1, Math.ceil(this.remaining / 2.4));
    const times = timeline(rng, releases);
    const multiArch = rng.chance(0.3);
    const vPrefix = rng.chance(0.15);
    const prereleases = rng.chance(0.4);
    let version = firstVersion(rng);
    let edge: Desc | undefined;
    const minorTags = new Map<string, Desc>();
    let latest: Desc | undefined;
    for (let i = 0; this.remaining > 0; i++) {
      const ms = times[Math.min(i, times.length - 1)]! + (i >= times.length ? (i - times.length + 1) * 3600_000 : 0);
      const created = rfc3339(ms);
      const revision = rng.hex(20);
      const kind = rng.weighted([['release', 7], ['pre', prereleases ? 1.5 : 0], ['edge', 1.5]] as const);
      let v: Version;
      if (kind === 'release') v = version = bump(rng, version);
      else if (kind === 'pre') v = { ...bump(rng, version), pre: `${rng.pick(['rc', 'beta', 'alpha'])}.${rng.int(1, 4)}` };
      else v = { ...version, patch: version.patch + 1, pre: `dev.${rng.int(1, 400)}` };
      const text = `${vPrefix && rng.chance(0.8) ? 'v' : ''}${versionText(v)}`;
      const annotations = this.imageAnnotations(created, text, revision);
      const arches = multiArch && this.remaining >= 3 ? rng.int(2, Math.min(4, this.remaining - 1)) : 0;
      let top: Desc;
      let children: Desc[] = [];
      if (arches) {
        this.take(1 + arches);
        const platforms = [PLATFORMS[0]!, PLATFORMS[1]!, ...PLATFORMS.slice(2).sort(() => rng.next() - 0.5)].slice(0, arches);
        children = platforms.map((p) => ({ ...this.image(p, created, { [A_CREATED]: created, [A_REVISION]: revision }), platform: p }));
        top = this.b.manifest({
          schemaVersion: 2, mediaType: OCI_INDEX,
          manifests: children.map((c) => ({ mediaType: c.mediaType, digest: c.digest, size: c.size, platform: c.platform })), annotations,
        });
      } else {
        this.take(1);
        top = this.image(PLATFORMS[0]!, created, annotations);
      }
      if (kind === 'edge') {
        // A moving tag: the build it leaves behind stays as an untagged entry.
        if (edge) this.b.untagged(edge);
        edge = top;
      } else {
        this.b.tag(top, text);
        if (kind === 'release') {
          const minor = `${vPrefix ? 'v' : ''}${v.major}.${v.minor}`;
          minorTags.set(minor, top);
          latest = top;
        }
      }
      this.attach(top, ms, this.referrerKinds());
      // Some multi-arch builds also carry an SBOM per platform.
      for (const child of children) if (rng.chance(0.2)) this.attach(child, ms, [rng.chance(0.5) ? 'spdx' : 'intoto']);
    }
    if (edge) this.b.tag(edge, 'edge');
    for (const [tag, d] of minorTags) this.b.tag(d, tag);
    if (latest) this.b.tag(latest, 'latest');
  }

  private helm(): void {
    const rng = this.rng;
    const chart = this.project;
    const times = timeline(rng, this.remaining);
    let version = firstVersion(rng);
    let latest: Desc | undefined;
    for (let i = 0; this.remaining > 0; i++) {
      this.take(1);
      const ms = times[Math.min(i, times.length - 1)]!;
      version = bump(rng, version);
      const build = rng.chance(0.15) ? `+build.${rng.int(1, 99)}` : '';
      const text = `${versionText(version)}${build}`;
      const appVersion = `${rng.int(1, 4)}.${rng.int(0, 20)}.${rng.int(0, 9)}`;
      const chartYaml = Buffer.from(`apiVersion: v2\nname: ${chart}\nversion: ${text}\nappVersion: "${appVersion}"\ndescription: A Helm chart for ${chart}\ntype: application\n`);
      const content = this.b.blob(gzipSync(tarOne(`${chart}/Chart.yaml`, chartYaml, Math.floor(ms / 1000))), HELM_CHART);
      const config = this.b.blob(json({ name: chart, version: text, description: `A Helm chart for ${chart}`, apiVersion: 'v2', appVersion, type: 'application' }), HELM_CONFIG);
      const d = this.b.manifest({
        schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [content],
        annotations: { [A_CREATED]: rfc3339(ms), [A_DESCRIPTION]: `A Helm chart for ${chart}`, [A_TITLE]: chart, [A_VERSION]: text },
      });
      // Helm writes `+` as `_` in tags.
      this.b.tag(d, text.replace('+', '_'));
      latest = d;
      if (rng.chance(0.3)) this.attach(d, ms, ['cosign']);
    }
    void latest;
  }

  private ocm(): void {
    const rng = this.rng;
    const parts = this.plan.name.split('/');
    const component = parts.slice(parts.indexOf('component-descriptors') + 1).join('/');
    const times = timeline(rng, this.remaining);
    let version = firstVersion(rng);
    const creator = rng.pick(['OCM Go Library 0.20.0', 'OCM Go Library v0.18.0', 'ocm-cli/v2.0.0']);
    for (let i = 0; this.remaining > 0; i++) {
      this.take(1);
      const ms = times[Math.min(i, times.length - 1)]!;
      version = bump(rng, version);
      const build = rng.chance(0.2) ? `+${rng.pick(['build', 'ci', 'sha'])}.${rng.hex(3)}` : '';
      const text = `${versionText(version)}${build}`;
      const yaml = [
        'meta:', '  schemaVersion: v2', 'component:', `  name: ${component}`, `  version: ${text}`, `  provider: ${this.org}`, '  repositoryContexts: []',
        '  resources:', '  - name: image', '    type: ociImage', `    version: ${text}`, '    relation: external', '    access:', '      type: ociArtifact',
        `      imageReference: ghcr.io/${component.split('/').slice(1).join('/')}:${text.replace('+', '.build-')}`, '  sources: []', '  componentReferences: []', '',
      ].join('\n');
      const layer = this.b.blob(tarOne('component-descriptor.yaml', Buffer.from(yaml), Math.floor(ms / 1000)), OCM_DESCRIPTOR_TAR);
      const config = this.b.blob(json({ componentDescriptorLayer: { mediaType: layer.mediaType, digest: layer.digest, size: layer.size } }), OCM_CONFIG);
      const d = this.b.manifest({
        schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: OCM_ARTIFACT, config, layers: [layer],
        annotations: { 'software.ocm.componentversion': `component-descriptors/${component}:${text}`, 'software.ocm.creator': creator },
      });
      this.b.tag(d, text.replace('+', '.build-'));
    }
  }

  private hot(): void {
    const rng = this.rng;
    this.take(1);
    const created = '2024-06-01T12:00:00Z';
    const subject = this.image(PLATFORMS[0]!, created, this.imageAnnotations(created, '1.0.0', rng.hex(20)));
    this.b.tag(subject, '1.0.0');
    this.b.tag(subject, 'latest');
    this.b.stats.hotSubject = subject.digest;
    const byType: Record<string, number> = {};
    const kinds: [ReferrerKind, number][] = [['cosign', 30], ['notation', 20], ['spdx', 15], ['cyclonedx', 15], ['intoto', 15], ['bundle', 5]];
    const start = Date.parse(created);
    while (this.remaining > 0) {
      this.take(1);
      const kind = rng.weighted(kinds);
      const r = this.referrer(kind, subject, start + rng.next() * (START_MS + SPAN_MS - start));
      byType[r.artifactType!] = (byType[r.artifactType!] ?? 0) + 1;
      this.b.untagged(r, subject.digest);
    }
    this.b.stats.hotReferrersByType = byType;
  }
}

// ---- workers ------------------------------------------------------------------------------------

interface WorkerInput {
  out: string;
  seed: string;
  plans: RepoPlan[];
}

function generateRepos(input: WorkerInput, onRepo?: () => void): RepoStats {
  const total: RepoStats = { manifests: 0, blobs: 0, bytes: 0, tags: 0, referrers: 0, byType: {}, versions: {} };
  const allSigners = signers(input.seed);
  for (const plan of input.plans) {
    const s = new RepoGenerator(input.out, plan, input.seed, allSigners).generate();
    mergeStats(total, s);
    onRepo?.();
  }
  return total;
}

function mergeStats(into: RepoStats, s: RepoStats): void {
  into.manifests += s.manifests;
  into.blobs += s.blobs;
  into.bytes += s.bytes;
  into.tags += s.tags;
  into.referrers += s.referrers;
  for (const [k, v] of Object.entries(s.byType)) into.byType[k] = (into.byType[k] ?? 0) + v;
  for (const [k, v] of Object.entries(s.versions)) into.versions[k] = (into.versions[k] ?? 0) + v;
  if (s.hotSubject) into.hotSubject = s.hotSubject;
  if (s.hotReferrersByType) into.hotReferrersByType = s.hotReferrersByType;
}

if (!isMainThread && (workerData as { corpusWorker?: boolean } | null)?.corpusWorker) {
  const input = (workerData as { input: WorkerInput }).input;
  const stats = generateRepos(input, () => parentPort!.postMessage({ repoDone: true }));
  parentPort!.postMessage({ stats });
}

// ---- main ---------------------------------------------------------------------------------------

export interface CorpusSummary {
  options: Omit<CorpusOptions, 'out'>;
  out: string;
  hot: { repository: string; subject: string; referrers: number; byType: Record<string, number> };
  repositories: Record<RepoKind, number>;
  largestRepository: { name: string; manifests: number };
  manifests: number;
  referrers: number;
  tags: number;
  blobs: number;
  blobBytes: number;
  byType: Record<string, number>;
  /** How many manifests carry each of the most common `org.opencontainers.image.version` values. */
  topVersions: [string, number][];
  distinctVersions: number;
  generationS: number;
  reindexS?: number;
  reindexedAt?: string;
  dbBytes?: number;
  dbWalBytes?: number;
  generatedAt: string;
}

function flag(args: string[], name: string, env: string, fallback?: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(`--${name}=`));
  if (eq) return eq.slice(name.length + 3);
  return process.env[env] || fallback;
}

function positive(value: string | undefined, name: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, not ${JSON.stringify(value)}`);
  return n;
}

function log(message: string): void {
  process.stderr.write(`[corpus ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export function dbSize(out: string): { db: number; wal: number } {
  const size = (f: string) => (existsSync(f) ? statSync(f).size : 0);
  const base = join(out, '_trellis/metadata.sqlite');
  return { db: size(base), wal: size(`${base}-wal`) };
}

/** Runs `trellis reindex` on the corpus; returns seconds. */
export function reindex(out: string, env: NodeJS.ProcessEnv = process.env): number {
  const started = performance.now();
  const result = spawnSync(join(ROOT, 'node_modules/.bin/node'), [join(ROOT, 'src/main.ts'), 'reindex', '--data', out], { cwd: ROOT, env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) throw new Error(`reindex exited with ${result.status}`);
  return (performance.now() - started) / 1000;
}

export async function generateCorpus(options: CorpusOptions, force = false): Promise<CorpusSummary> {
  if (existsSync(options.out) && readdirSync(options.out).length) {
    if (!force) throw new Error(`${options.out} is not empty (use --force to replace it)`);
    rmSync(options.out, { recursive: true, force: true });
  }
  mkdirSync(options.out, { recursive: true });
  const plans = planCorpus(options);
  const started = performance.now();
  // Largest repositories first, dealt round-robin, so the workers finish together.
  const sorted = [...plans].sort((a, b) => b.budget - a.budget);
  const shares: RepoPlan[][] = Array.from({ length: Math.max(1, options.workers) }, () => []);
  sorted.forEach((p, i) => shares[i % shares.length]!.push(p));
  const total: RepoStats = { manifests: 0, blobs: 0, bytes: 0, tags: 0, referrers: 0, byType: {}, versions: {} };
  let done = 0;
  let lastLog = performance.now();
  const tick = () => {
    done++;
    if (performance.now() - lastLog > 10_000) {
      lastLog = performance.now();
      log(`${done}/${plans.length} repositories written (${Math.round((performance.now() - started) / 1000)} s)`);
    }
  };
  if (options.workers <= 1) mergeStats(total, generateRepos({ out: options.out, seed: options.seed, plans: shares[0]! }, tick));
  else {
    await Promise.all(shares.map((share) => new Promise<void>((resolvePromise, reject) => {
      const worker = new Worker(new URL(import.meta.url), { workerData: { corpusWorker: true, input: { out: options.out, seed: options.seed, plans: share } } });
      worker.on('message', (m: { repoDone?: boolean; stats?: RepoStats }) => {
        if (m.repoDone) tick();
        if (m.stats) mergeStats(total, m.stats);
      });
      worker.once('error', reject);
      worker.once('exit', (code) => (code === 0 ? resolvePromise() : reject(new Error(`worker exited with ${code}`))));
    })));
  }
  const generationS = (performance.now() - started) / 1000;
  if (total.manifests !== options.manifests) throw new Error(`wrote ${total.manifests} manifests, expected ${options.manifests}`);
  const count = (kind: RepoKind) => plans.filter((p) => p.kind === kind).length;
  const largest = sorted[0]!.kind === 'hot' ? sorted[1]! : sorted[0]!;
  const versions = Object.entries(total.versions).sort((a, b) => b[1] - a[1]);
  const summary: CorpusSummary = {
    options: { repos: options.repos, manifests: options.manifests, seed: options.seed, hotReferrers: options.hotReferrers, workers: options.workers },
    out: options.out,
    hot: { repository: HOT_REPOSITORY, subject: total.hotSubject!, referrers: options.hotReferrers, byType: total.hotReferrersByType ?? {} },
    repositories: { hot: count('hot'), image: count('image'), helm: count('helm'), ocm: count('ocm') },
    largestRepository: { name: largest.name, manifests: largest.budget },
    manifests: total.manifests, referrers: total.referrers, tags: total.tags, blobs: total.blobs, blobBytes: total.bytes,
    byType: Object.fromEntries(Object.entries(total.byType).sort((a, b) => b[1] - a[1])),
    topVersions: versions.slice(0, 20), distinctVersions: versions.length,
    generationS: Math.round(generationS * 10) / 10, generatedAt: new Date().toISOString(),
  };
  writeFileSync(join(options.out, 'corpus.json'), JSON.stringify(summary, null, 2) + '\n');
  return summary;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    console.log('usage: node bench/corpus.ts --out DIR [--repos 10000] [--manifests 1000000] [--seed trellis] [--hot-referrers N] [--workers 2] [--force] [--no-reindex | --reindex-only]');
    return;
  }
  const out = flag(args, 'out', 'CORPUS_OUT');
  if (!out) throw new Error('--out DIR (or CORPUS_OUT) is required');
  const manifests = positive(flag(args, 'manifests', 'CORPUS_MANIFESTS', '1000000'), '--manifests');
  const options: CorpusOptions = {
    out: resolve(out),
    repos: positive(flag(args, 'repos', 'CORPUS_REPOS', '10000'), '--repos'),
    manifests,
    seed: flag(args, 'seed', 'CORPUS_SEED', 'trellis')!,
    hotReferrers: positive(flag(args, 'hot-referrers', 'CORPUS_HOT_REFERRERS', String(Math.min(10_000, Math.floor(manifests / 2)))), '--hot-referrers'),
    workers: Math.max(1, positive(flag(args, 'workers', 'CORPUS_WORKERS', '2'), '--workers')),
  };
  let summary: CorpusSummary;
  if (args.includes('--reindex-only')) {
    // An existing corpus, e.g. after the index schema changed: only `trellis reindex`, timed.
    summary = JSON.parse(readFileSync(join(options.out, 'corpus.json'), 'utf8')) as CorpusSummary;
  } else {
    log(`generating ${options.repos} repositories, ${options.manifests} manifests (hot subject: ${options.hotReferrers} referrers) into ${options.out}`);
    summary = await generateCorpus(options, args.includes('--force'));
    log(`generated in ${summary.generationS} s: ${summary.manifests} manifests (${summary.referrers} referrers), ${summary.blobs} blobs, ${(summary.blobBytes / 1e9).toFixed(2)} GB`);
  }
  if (!args.includes('--no-reindex')) {
    log('running trellis reindex');
    summary.reindexS = Math.round(reindex(options.out) * 10) / 10;
    const size = dbSize(options.out);
    summary.dbBytes = size.db;
    summary.dbWalBytes = size.wal;
    summary.reindexedAt = new Date().toISOString();
    log(`reindex took ${summary.reindexS} s; metadata.sqlite ${(size.db / 1048576).toFixed(1)} MiB (+ WAL ${(size.wal / 1048576).toFixed(1)} MiB)`);
    // A new file, not a rewrite in place: a copy of the corpus made with hard links keeps its own.
    const file = join(options.out, 'corpus.json');
    rmSync(file, { force: true });
    writeFileSync(file, JSON.stringify(summary, null, 2) + '\n');
  }
  console.log(JSON.stringify(summary, null, 2));
}

if (isMainThread && process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  main().catch((err: unknown) => {
    console.error((err as Error).stack ?? err);
    process.exit(1);
  });
}
