// The client commands of `trellis`: login, logout, push, pull, attach, discover, copy, tags, repos,
// inspect, tag, delete, query, components and completion. They work against any OCI registry;
// Trellis's extensions (queries, components) are used when the registry offers them.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { Command, Option } from 'commander';
import type { Descriptor } from '../oci/manifest.ts';
import { parseManifest } from '../oci/manifest.ts';
import { HttpRegistry } from '../transfer/http.ts';
import { RegistryRequestFailed } from '../transfer/errors.ts';
import { Cancelled, UsageError } from './errors.ts';
import { copyRepository, type CopyReport } from '../transfer/copy.ts';
import { eraseCredentials, storeCredentials } from '../transfer/auth.ts';
import {
  baseUrl, connect, openEndpoint, parseHost, parseReference, parseRegistryReference, type ConnectionFlags, type RegistryReference,
} from './target.ts';
import { humanBytes, note, printJson, progressBars, table, type OutputFlags } from './output.ts';
import { DEFAULT_ARTIFACT_TYPE, DEFAULT_LAYER_TYPE, parseAnnotations, parseFileSpec, pullArtifact, pushArtifact } from './artifacts.ts';
import { filterLocally, filterParams, parseFilters, unapplied, type Filter } from './filters.ts';

type Flags = ConnectionFlags & OutputFlags;

const collect = (value: string, previous: string[] = []) => [...previous, value];

function withCommon(command: Command, options: { output?: string[] } = {}): Command {
  command.option('--plain-http', 'use http:// instead of https:// (the default for localhost and 127.0.0.1)');
  command.option('--no-plain-http', 'use https:// even for localhost and 127.0.0.1');
  if (options.output) command.addOption(new Option('-o, --output <format>', 'output format').choices(options.output).default(options.output[0]));
  command.option('-q, --quiet', 'print only what scripts need (no progress, no notes)');
  return command;
}

function examples(command: Command, lines: string[]): Command {
  return command.addHelpText('after', `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`);
}

function notFound(what: string): never {
  throw new RegistryRequestFailed(`${what}: not found`, 'not-found', 404);
}

async function resolveDescriptor(reg: HttpRegistry, ref: RegistryReference): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
  const reference = ref.digest ?? ref.tag ?? 'latest';
  const manifest = await reg.manifest(ref.repository, reference);
  if (!manifest) notFound(`${ref.host}/${ref.repository}${ref.digest ? `@${ref.digest}` : `:${reference}`}`);
  return { descriptor: { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length }, bytes: manifest.bytes };
}

// ---- delete -------------------------------------------------------------------------------------

const SHOWN_TAGS = 100;

/** The tags (of the first SHOWN_TAGS) pointing at `digest`, to say what a delete takes with it. */
async function tagsOf(reg: HttpRegistry, repository: string, digest: string): Promise<{ tags: string[]; more: boolean }> {
  const all = (await reg.tagList(repository)) ?? [];
  const tags: string[] = [];
  for (const tag of all.slice(0, SHOWN_TAGS)) {
    if ((await reg.manifest(repository, tag))?.digest === digest) tags.push(tag);
  }
  return { tags, more: all.length > SHOWN_TAGS };
}

/**
 * Deleting a manifest named by its tag removes every tag on it: on a terminal ask (the manifest,
 * just the tag, or nothing); off one, only with --force. A digest names the manifest itself.
 */
async function confirmDelete(reg: HttpRegistry, ref: RegistryReference, digest: string, flags: { force?: boolean }): Promise<'manifest' | 'tag'> {
  if (flags.force) return 'manifest';
  const interactive = process.stdin.isTTY && process.stderr.isTTY;
  if (!interactive) {
    if (ref.digest) return 'manifest';
    throw new UsageError(`deleting ${ref.text} deletes the manifest ${digest} and every tag on it; add --force to do that, or --tag-only to remove just the tag ${ref.tag}`);
  }
  const { tags, more } = await tagsOf(reg, ref.repository, digest);
  const tagText = tags.length ? `its tags ${tags.join(', ')}${more ? ' (and maybe more)' : ''}` : 'no tags';
  const choices = ref.tag ? `Delete the manifest [y], only the tag ${ref.tag} [t], or nothing [N]? ` : 'Delete it [y/N]? ';
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = (await rl.question(`${ref.host}/${ref.repository}@${digest} has ${tagText}; deleting the manifest removes them all.\n${choices}`)).trim().toLowerCase();
    if (answer === 'y' || answer === 'yes') return 'manifest';
    if (ref.tag && (answer === 't' || answer === 'tag')) return 'tag';
  } finally {
    rl.close();
  }
  throw new Cancelled('nothing deleted');
}

// ---- discover -----------------------------------------------------------------------------------

export interface ReferrerNode extends Descriptor {
  referrers: ReferrerNode[];
}

async function discoverTree(reg: HttpRegistry, repository: string, digest: string, options: { artifactType?: string | undefined; filters: Filter[]; depth: number }, state: { filteredBy: 'server' | 'client' | null; seen: Set<string> }): Promise<ReferrerNode[]> {
  if (options.depth <= 0 || state.seen.has(digest)) return [];
  state.seen.add(digest);
  const query = new URLSearchParams();
  if (options.artifactType) query.set('artifactType', options.artifactType);
  for (const f of options.filters) query.append(f.name, f.value);
  const { manifests, applied } = await reg.referrersFiltered(repository, digest, query);
  let list = manifests;
  if (options.artifactType && !applied.includes('artifactType')) list = list.filter((d) => d.artifactType === options.artifactType);
  const left = unapplied(options.filters, applied);
  if (options.filters.length) state.filteredBy = left.length ? 'client' : (state.filteredBy ?? 'server');
  list = await filterLocally(reg, repository, list, left);
  const nodes: ReferrerNode[] = [];
  for (const d of list) nodes.push({ ...d, referrers: await discoverTree(reg, repository, d.digest, { ...options, depth: options.depth - 1 }, state) });
  return nodes;
}

function renderTree(root: string, nodes: ReferrerNode[]): string {
  const lines = [root];
  const walk = (list: ReferrerNode[], prefix: string) => list.forEach((n, i) => {
    const last = i === list.length - 1;
    const annotations = n.annotations ? ` ${Object.entries(n.annotations).map(([k, v]) => `${k}=${v}`).join(' ')}` : '';
    lines.push(`${prefix}${last ? '└── ' : '├── '}${n.digest} ${n.artifactType ?? n.mediaType}${annotations}`);
    walk(n.referrers, `${prefix}${last ? '    ' : '│   '}`);
  });
  walk(nodes, '');
  return lines.join('\n');
}

function flatten(nodes: ReferrerNode[], subject: string, depth = 1): { depth: number; subject: string; node: ReferrerNode }[] {
  return nodes.flatMap((n) => [{ depth, subject, node: n }, ...flatten(n.referrers, n.digest, depth + 1)]);
}

// ---- commands -----------------------------------------------------------------------------------

export function registerClientCommands(program: Command): void {
  const login = withCommon(program.command('login'))
    .description('log in to a registry; credentials go to the Docker config (or its credential helper)')
    .argument('<registry>', 'registry host, e.g. registry.example.com or localhost:5000')
    .option('-u, --username <name>', 'user name')
    .option('-p, --password <secret>', 'password or token (prefer --password-stdin)')
    .option('--password-stdin', 'read the password from standard input')
    .action(async (registry: string, flags: Flags & { username?: string; password?: string; passwordStdin?: boolean }) => {
      const host = parseHost(registry);
      let password = flags.password;
      if (flags.passwordStdin) password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      if (!flags.username || password === undefined) throw new UsageError('login needs --username and --password-stdin (or --password)');
      const credentials = { username: flags.username, password };
      await new HttpRegistry(baseUrl(host, flags), { login: credentials }).ping();
      const where = await storeCredentials(host, credentials);
      note(flags, `Login succeeded; credentials for ${host} stored in ${where}`);
    });
  examples(login, ['echo "$TOKEN" | trellis login registry.example.com -u alice --password-stdin', 'trellis login localhost:5000 -u admin -p secret']);

  const logout = withCommon(program.command('logout'))
    .description('remove the stored credentials for a registry')
    .argument('<registry>', 'registry host')
    .action(async (registry: string, flags: Flags) => {
      const host = parseHost(registry);
      const found = await eraseCredentials(host);
      note(flags, found ? `Removed the credentials for ${host}` : `No credentials were stored for ${host}`);
    });
  examples(logout, ['trellis logout registry.example.com']);

  const push = withCommon(program.command('push'), { output: ['text', 'json'] })
    .description('push files as an artifact (an OCI image manifest with an artifactType, one layer per file)')
    .argument('<reference>', '<registry>/<repository>[:tag]')
    .argument('[file...]', 'files, each as path[:mediaType]')
    .option('--artifact-type <type>', 'the artifact type', DEFAULT_ARTIFACT_TYPE)
    .option('-a, --annotation <key=value>', 'manifest annotation (repeatable)', collect)
    .option('--layer-media-type <type>', 'media type of files given without one', DEFAULT_LAYER_TYPE)
    .action(async (text: string, files: string[], flags: Flags & { artifactType: string; annotation?: string[]; layerMediaType: string }) => {
      const ref = parseRegistryReference(text);
      if (ref.digest) throw new UsageError('push takes a tag, not a digest (the digest is computed)');
      const progress = progressBars(flags);
      try {
        const result = await pushArtifact(connect(ref.host, flags), ref.repository, {
          files: files.map((f) => parseFileSpec(f, flags.layerMediaType)), artifactType: flags.artifactType, annotations: parseAnnotations(flags.annotation), tag: ref.tag, progress,
        });
        progress?.stop();
        const out = { reference: `${ref.host}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}@${result.digest}`, ...result };
        if (flags.output === 'json') return printJson(out);
        console.log(flags.quiet ? result.digest : `Pushed ${out.reference}\nDigest: ${result.digest}`);
      } finally {
        progress?.stop();
      }
    });
  examples(push, [
    'trellis push localhost:5000/docs:v1 README.md guide.pdf:application/pdf --artifact-type application/vnd.example.docs',
    'trellis push registry.example.com/cfg:prod app.yaml -a org.opencontainers.image.source=https://git.example.com/cfg -o json',
  ]);

  const pull = withCommon(program.command('pull'), { output: ['text', 'json'] })
    .description('download the files of an artifact (layers with a title annotation), checking every digest')
    .argument('<reference>', '<registry>/<repository>:<tag>|@<digest>')
    .option('-d, --dir <dir>', 'folder to write the files to', '.')
    .action(async (text: string, flags: Flags & { dir: string }) => {
      const ref = parseRegistryReference(text);
      const progress = progressBars(flags);
      try {
        const result = await pullArtifact(connect(ref.host, flags), ref.repository, ref.digest ?? ref.tag ?? 'latest', flags.dir, progress);
        progress?.stop();
        if (flags.output === 'json') return printJson({ reference: text, digest: result.digest, files: result.files, skipped: result.skipped });
        if (!flags.quiet) for (const f of result.files) console.log(`${f.path}  ${f.digest}  ${humanBytes(f.size)}`);
        if (result.skipped.length) note(flags, `skipped ${result.skipped.length} layers without a file name (org.opencontainers.image.title)`);
        console.log(flags.quiet ? result.digest : `Pulled ${text}\nDigest: ${result.digest}`);
      } finally {
        progress?.stop();
      }
    });
  examples(pull, ['trellis pull localhost:5000/docs:v1 -d ./docs', 'trellis pull registry.example.com/cfg@sha256:… -o json']);

  const attach = withCommon(program.command('attach'), { output: ['text', 'json'] })
    .description('attach an artifact to a subject manifest (a referrer); on registries without the referrers API the fallback tag is kept up to date')
    .argument('<subject>', '<registry>/<repository>:<tag>|@<digest>')
    .argument('[file...]', 'files, each as path[:mediaType]')
    .requiredOption('--artifact-type <type>', 'the artifact type, e.g. application/vnd.example.sbom')
    .option('-a, --annotation <key=value>', 'manifest annotation (repeatable)', collect)
    .option('--layer-media-type <type>', 'media type of files given without one', 'application/octet-stream')
    .action(async (text: string, files: string[], flags: Flags & { artifactType: string; annotation?: string[]; layerMediaType: string }) => {
      const ref = parseRegistryReference(text);
      const reg = connect(ref.host, flags);
      const { descriptor } = await resolveDescriptor(reg, ref);
      const progress = progressBars(flags);
      try {
        const result = await pushArtifact(reg, ref.repository, {
          files: files.map((f) => parseFileSpec(f, flags.layerMediaType)), artifactType: flags.artifactType, annotations: parseAnnotations(flags.annotation), subject: descriptor, progress,
        });
        progress?.stop();
        const out = { reference: `${ref.host}/${ref.repository}@${result.digest}`, ...result };
        if (flags.output === 'json') return printJson(out);
        console.log(flags.quiet ? result.digest : `Attached to ${ref.host}/${ref.repository}@${descriptor.digest}\nDigest: ${result.digest}`);
      } finally {
        progress?.stop();
      }
    });
  examples(attach, [
    'trellis attach localhost:5000/app:v1 sbom.spdx.json --artifact-type application/spdx+json',
    'trellis attach localhost:5000/app@sha256:… --artifact-type application/vnd.example.review -a reviewed-by=alice',
  ]);

  const discover = withCommon(program.command('discover'), { output: ['tree', 'table', 'json'] })
    .description('list the referrers of a manifest, recursively (referrers of referrers too)')
    .argument('<subject>', '<registry>/<repository>:<tag>|@<digest>')
    .option('--artifact-type <type>', 'only referrers of this artifact type')
    .option('--filter <q_expr>', 'q_ filter, e.g. q_annotations__kind__eq=sbom (repeatable; applied by the registry when it can, here otherwise)', collect)
    .option('--depth <n>', 'how many levels of referrers to follow', (v) => Number.parseInt(v, 10), 16)
    .action(async (text: string, flags: Flags & { artifactType?: string; filter?: string[]; depth: number }) => {
      const ref = parseRegistryReference(text);
      const reg = connect(ref.host, flags);
      const { descriptor } = await resolveDescriptor(reg, ref);
      const state = { filteredBy: null as 'server' | 'client' | null, seen: new Set<string>() };
      const filters = parseFilters(flags.filter);
      const referrers = await discoverTree(reg, ref.repository, descriptor.digest, { artifactType: flags.artifactType, filters, depth: flags.depth }, state);
      if (state.filteredBy === 'client') note(flags, `note: ${ref.host} did not apply the q_ filters; they were applied here, to the full referrers list`);
      if (flags.output === 'json') {
        return printJson({ subject: { reference: `${ref.host}/${ref.repository}@${descriptor.digest}`, ...descriptor }, referrers, filteredBy: state.filteredBy });
      }
      if (flags.output === 'table') {
        return console.log(table(flatten(referrers, descriptor.digest).map((r) => [r.node.digest, r.node.artifactType ?? '', String(r.node.size), String(r.depth), r.subject]), ['DIGEST', 'ARTIFACT TYPE', 'SIZE', 'DEPTH', 'SUBJECT']));
      }
      console.log(renderTree(`${ref.host}/${ref.repository}@${descriptor.digest}`, referrers));
    });
  examples(discover, [
    'trellis discover localhost:5000/app:v1',
    'trellis discover localhost:5000/app:v1 --artifact-type application/spdx+json -o table',
    'trellis discover localhost:5000/app:v1 --filter q_annotations__kind__eq=sbom -o json',
  ]);

  const copy = withCommon(program.command('copy').alias('cp'), { output: ['text', 'json'] })
    .description('copy a manifest or a whole repository between registries, layout directories and layout tars, digests unchanged; -r adds referrers; resumable')
    .argument('<source>', 'registry reference, oci:<dir>[:tag], or a .tar file; without a tag or digest every tag is copied')
    .argument('<destination>', 'registry reference, oci:<dir>[:tag], or a .tar file')
    .option('-r, --recursive', 'also copy referrers, and their referrers')
    .option('--concurrency <n>', 'blobs transferred at once', (v) => Number.parseInt(v, 10), 6)
    .action(copyCommand);
  examples(copy, [
    'trellis copy -r localhost:5000/app:v1 registry.example.com/app:v1',
    'trellis copy -r localhost:5000/app registry.example.com/mirror/app      # every tag',
    'trellis copy -r localhost:5000/app:v1 oci:./app-layout                   # to a layout directory',
    'trellis copy -r ./app.tar localhost:5001/app                             # from a layout tar',
  ]);

  const tags = withCommon(program.command('tags'), { output: ['text', 'json'] })
    .description('list the tags of a repository (fallback tags sha256-… hidden unless --all)')
    .argument('<repository>', '<registry>/<repository>')
    .option('--all', 'include referrers fallback tags')
    .action(async (text: string, flags: Flags & { all?: boolean }) => {
      const ref = parseRegistryReference(text, 'repository');
      const reg = connect(ref.host, flags);
      let list = await reg.tagList(ref.repository);
      if (!list) notFound(`repository ${ref.host}/${ref.repository}`);
      if (!flags.all) list = list.filter((t) => !/^(sha256|sha512)-[0-9a-f]{64}$/.test(t));
      list.sort(); // registries differ in order; the output does not
      if (flags.output === 'json') return printJson({ repository: `${ref.host}/${ref.repository}`, tags: list });
      if (list.length) console.log(list.join('\n'));
    });
  examples(tags, ['trellis tags localhost:5000/app', 'trellis tags localhost:5000/app -o json']);

  const repos = withCommon(program.command('repos'), { output: ['text', 'json'] })
    .description('list the repositories of a registry (the _catalog API), optionally under a prefix')
    .argument('<registry>', 'registry host')
    .option('--prefix <namespace>', 'only repositories under this namespace (team/app lists team/app/x, not team/app itself or team/apps)')
    .action(async (text: string, flags: Flags & { prefix?: string }) => {
      const host = parseHost(text);
      const prefix = flags.prefix?.replace(/\/+$/, '');
      const list = (await connect(host, flags).repositories(prefix)).filter((r) => !prefix || r.startsWith(`${prefix}/`));
      if (flags.output === 'json') return printJson({ registry: host, repositories: list });
      if (list.length) console.log(list.join('\n'));
    });
  examples(repos, ['trellis repos localhost:5000', 'trellis repos localhost:5000 --prefix team -o json']);

  const inspect = withCommon(program.command('inspect'), { output: ['text', 'json'] })
    .description('show a manifest: its descriptor, content and (with --config) its config')
    .argument('<reference>', '<registry>/<repository>:<tag>|@<digest>')
    .option('--descriptor', 'print only the descriptor')
    .option('--config', 'also fetch and show the config blob')
    .action(async (text: string, flags: Flags & { descriptor?: boolean; config?: boolean }) => {
      const ref = parseRegistryReference(text);
      const reg = connect(ref.host, flags);
      const { descriptor, bytes } = await resolveDescriptor(reg, ref);
      const manifest = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
      const parsed = parseManifest(bytes, descriptor.mediaType);
      if (parsed.artifactType) descriptor.artifactType = parsed.artifactType;
      if (Object.keys(parsed.annotations).length) descriptor.annotations = parsed.annotations;
      let config: unknown;
      const configDigest = (manifest.config as Descriptor | undefined)?.digest;
      if (flags.config && configDigest) {
        const blob = await reg.blob(ref.repository, configDigest);
        if (!blob) notFound(`config ${configDigest}`);
        const chunks: Buffer[] = [];
        for await (const chunk of blob.stream) chunks.push(chunk as Buffer);
        const raw = Buffer.concat(chunks).toString('utf8');
        try {
          config = JSON.parse(raw);
        } catch {
          config = raw;
        }
      }
      if (flags.output === 'json') {
        if (flags.descriptor) return printJson(descriptor);
        const out: Record<string, unknown> = { reference: `${ref.host}/${ref.repository}@${descriptor.digest}`, descriptor, manifest };
        if (flags.config) out.config = config ?? null;
        return printJson(out);
      }
      if (flags.descriptor) return printJson(descriptor);
      console.log(`Reference:     ${ref.host}/${ref.repository}@${descriptor.digest}`);
      console.log(`Media type:    ${descriptor.mediaType}`);
      console.log(`Size:          ${descriptor.size}`);
      if (descriptor.artifactType) console.log(`Artifact type: ${descriptor.artifactType}`);
      if (parsed.subject) console.log(`Subject:       ${parsed.subject}`);
      for (const [k, v] of Object.entries(parsed.annotations)) console.log(`Annotation:    ${k}=${v}`);
      const rows = parsed.links.filter((l) => l.kind !== 'subject').map((l) => [l.kind, l.digest, String(l.size), l.mediaType, l.annotations?.['org.opencontainers.image.title'] ?? l.annotations?.['dev.trellis.repository'] ?? '']);
      if (rows.length) console.log(`\n${table(rows, ['KIND', 'DIGEST', 'SIZE', 'MEDIA TYPE', 'NAME'])}`);
      if (flags.config) console.log(`\nConfig:\n${JSON.stringify(config, null, 2)}`);
    });
  examples(inspect, ['trellis inspect localhost:5000/app:v1', 'trellis inspect localhost:5000/app:v1 --config -o json', 'trellis inspect localhost:5000/app@sha256:… --descriptor']);

  const tag = withCommon(program.command('tag'), { output: ['text', 'json'] })
    .description('give a manifest more tags in the same repository')
    .argument('<reference>', '<registry>/<repository>:<tag>|@<digest>')
    .argument('<tag...>', 'new tags')
    .action(async (text: string, newTags: string[], flags: Flags) => {
      const ref = parseRegistryReference(text);
      for (const t of newTags) parseRegistryReference(`${ref.host}/${ref.repository}:${t}`);
      const reg = connect(ref.host, flags);
      const manifest = await reg.manifest(ref.repository, ref.digest ?? ref.tag ?? 'latest');
      if (!manifest) notFound(text);
      for (const t of newTags) await reg.putManifest(ref.repository, t, manifest.bytes, manifest.mediaType);
      if (flags.output === 'json') return printJson({ repository: `${ref.host}/${ref.repository}`, digest: manifest.digest, tags: newTags });
      if (!flags.quiet) for (const t of newTags) console.log(`Tagged ${ref.host}/${ref.repository}:${t} -> ${manifest.digest}`);
    });
  examples(tag, ['trellis tag localhost:5000/app:v1 stable latest']);

  registerDelete(program);
  registerQueryCommands(program);

  const completion = program.command('completion')
    .description('print a shell completion script (bash, zsh or fish)')
    .argument('<shell>', 'bash, zsh or fish')
    .action((shell: string) => {
      const script = completionScript(program, shell);
      if (!script) throw new UsageError(`no completion for ${shell}; choose bash, zsh or fish`);
      process.stdout.write(script);
    });
  examples(completion, ['source <(trellis completion bash)', 'trellis completion zsh > "${fpath[1]}/_trellis"', 'trellis completion fish > ~/.config/fish/completions/trellis.fish']);
}

function registerDelete(program: Command): void {
  const del = withCommon(program.command('delete'), { output: ['text', 'json'] })
    .description('delete a manifest (by tag or digest: every tag pointing at it goes too), or with --tag-only just a tag; asks first on a terminal; referrers fallback tags are updated')
    .argument('<reference>', '<registry>/<repository>:<tag>|@<digest>')
    .option('-f, --force', 'do not ask (needed off a terminal to delete a manifest named by its tag)')
    .option('--tag-only', 'remove just the tag; the manifest and its other tags stay')
    .action(async (text: string, flags: Flags & { force?: boolean; tagOnly?: boolean }) => {
      const ref = parseRegistryReference(text);
      if (!ref.digest && !ref.tag) throw new UsageError('delete needs a tag or a digest');
      if (flags.tagOnly && (ref.digest || !ref.tag)) throw new UsageError('--tag-only needs a tag (repository:tag), not a digest');
      const reg = connect(ref.host, flags);
      const { descriptor } = await resolveDescriptor(reg, ref);
      const what = flags.tagOnly ? 'tag' : await confirmDelete(reg, ref, descriptor.digest, flags);
      if (what === 'tag') {
        await reg.deleteTag(ref.repository, ref.tag!);
        if (flags.output === 'json') return printJson({ untagged: `${ref.host}/${ref.repository}:${ref.tag}`, digest: descriptor.digest });
        if (!flags.quiet) console.log(`Untagged ${ref.host}/${ref.repository}:${ref.tag} (the manifest ${descriptor.digest} stays)`);
        return;
      }
      await reg.deleteManifest(ref.repository, descriptor.digest);
      if (flags.output === 'json') return printJson({ deleted: `${ref.host}/${ref.repository}@${descriptor.digest}`, digest: descriptor.digest });
      if (!flags.quiet) console.log(`Deleted ${ref.host}/${ref.repository}@${descriptor.digest}`);
    });
  examples(del, ['trellis delete localhost:5000/app:old --tag-only        # just the tag', 'trellis delete localhost:5000/app:old --force           # the manifest and all its tags, no question', 'trellis delete localhost:5000/app@sha256:…']);
}

// ---- query and components -----------------------------------------------------------------------

async function extensions(reg: HttpRegistry): Promise<Set<string>> {
  const found = new Set<string>();
  try {
    const answer = await reg.getJson<{ extensions?: ({ name?: string; url?: string; endpoints?: string[] } | string)[] }>('/v2/_oci/ext/discover');
    for (const e of answer?.body.extensions ?? []) {
      if (typeof e === 'string') found.add(e);
      else {
        if (e.name) found.add(e.name);
        for (const endpoint of e.endpoints ?? []) found.add(endpoint);
      }
    }
  } catch (err) {
    if (!(err instanceof RegistryRequestFailed) || err.kind === 'network' || err.kind === 'tls') throw err;
  }
  return found;
}

/** Whether the discovery answer lists an endpoint (given as `_trellis/search`, with or without /v2/). */
function offers(found: Set<string>, endpoint: string): boolean {
  return [...found].some((e) => e.replace(/^\/?(v2\/)?/, '') === endpoint);
}

async function pagedJson<T>(reg: HttpRegistry, path: string, pick: (body: T) => unknown[]): Promise<unknown[]> {
  const items: unknown[] = [];
  for await (const res of reg.pages(path)) {
    if (!res.ok) await reg.fail(res, `GET ${path}`);
    items.push(...pick((await res.json()) as T));
  }
  return items;
}

function registerQueryCommands(program: Command): void {
  const query = withCommon(program.command('query'), { output: ['table', 'json'] })
    .description('find manifests with q_ filters: registry-wide on Trellis, or among the referrers of a subject on any registry (filtered here when the registry cannot)')
    .argument('<target>', 'a registry host (search everything), or a subject reference (search its referrers)')
    .argument('[filter...]', 'q_<attribute>[__<key>]__<cmp>=<value>; cmp is contains, notcontains, eq, ne, gt, lt, gte, lte or exists')
    .option('--referrers', 'registry-wide: search referrers only (/v2/_oci/references) instead of every manifest')
    .option('--sort <field>', 'registry-wide: sort by an attribute path, or created, version, pushed')
    .option('--order <order>', 'registry-wide: asc or desc')
    .option('-n, --limit <n>', 'stop after this many results', (v) => Number.parseInt(v, 10))
    .action(async (target: string, filterText: string[], flags: Flags & { sort?: string; order?: string; limit?: number; referrers?: boolean }) => {
      const filters = parseFilters(filterText);
      const params = filterParams(filters);
      if (!target.includes('/')) {
        const host = parseHost(target);
        const reg = connect(host, flags);
        const endpoint = flags.referrers ? '_oci/references' : '_trellis/search';
        if (!offers(await extensions(reg), endpoint)) {
          throw new UsageError(`${host} has no registry-wide search (${endpoint}); give a subject (e.g. ${host}/<repository>:<tag>) to filter its referrers instead`);
        }
        if (flags.sort) params.set('sort', flags.sort);
        if (flags.order) params.set('order', flags.order);
        let results = flags.referrers
          ? await pagedJson<{ manifests?: unknown[] }>(reg, `/v2/_oci/references?${params}`, (b) => b.manifests ?? [])
          : await pagedJson<{ results?: unknown[] }>(reg, `/v2/_trellis/search?${params}`, (b) => b.results ?? []);
        if (flags.limit) results = results.slice(0, flags.limit);
        if (flags.output === 'json') return printJson({ registry: host, results, filteredBy: 'server' });
        const rows = (results as { repository: string; digest: string; artifactType?: string; tags?: string[] }[]).map((r) => [r.repository, r.digest, r.artifactType ?? '', (r.tags ?? []).join(',')]);
        return console.log(table(rows, ['REPOSITORY', 'DIGEST', 'ARTIFACT TYPE', 'TAGS']));
      }
      const ref = parseRegistryReference(target);
      const reg = connect(ref.host, flags);
      const { descriptor } = await resolveDescriptor(reg, ref);
      const { manifests, applied } = await reg.referrersFiltered(ref.repository, descriptor.digest, params);
      const left = unapplied(filters, applied);
      let results = await filterLocally(reg, ref.repository, manifests, left);
      const filteredBy = filters.length === 0 ? null : left.length ? 'client' : 'server';
      if (filteredBy === 'client') note(flags, `note: ${ref.host} did not apply the q_ filters; they were applied here, to the full referrers list`);
      if (flags.limit) results = results.slice(0, flags.limit);
      if (flags.output === 'json') return printJson({ subject: { reference: `${ref.host}/${ref.repository}@${descriptor.digest}`, ...descriptor }, results, filteredBy });
      console.log(table(results.map((r) => [r.digest, r.artifactType ?? '', String(r.size), Object.entries(r.annotations ?? {}).map(([k, v]) => `${k}=${v}`).join(' ')]), ['DIGEST', 'ARTIFACT TYPE', 'SIZE', 'ANNOTATIONS']));
    });
  examples(query, [
    'trellis query localhost:5000 q_annotations__org.opencontainers.image.version__gt=2.3 --sort version',
    'trellis query localhost:5000 --referrers q_artifacttype__eq=application/spdx+json -o json',
    'trellis query localhost:5000/app:v1 q_annotations__kind__eq=sbom -o json      # referrers of app:v1',
  ]);

  const components = program.command('components').description('software components a Trellis registry knows (list, versions, show, owners)');
  examples(components, ['trellis components list localhost:5000', 'trellis components versions localhost:5000 libfoo --latest']);
  const needComponents = async (host: string, flags: Flags) => {
    const reg = connect(host, flags);
    if (!offers(await extensions(reg), '_trellis/components')) throw new UsageError(`${host} does not offer the components extension (Trellis only)`);
    return reg;
  };
  const list = withCommon(components.command('list'), { output: ['table', 'json'] })
    .description('list components, optionally filtered with q_ expressions')
    .argument('<registry>', 'registry host')
    .argument('[filter...]', 'q_ filters')
    .action(async (text: string, filterText: string[], flags: Flags) => {
      const host = parseHost(text);
      const params = filterParams(parseFilters(filterText));
      const items = await pagedJson<{ components?: unknown[] }>(await needComponents(host, flags), `/v2/_trellis/components?${params}`, (b) => b.components ?? []);
      if (flags.output === 'json') return printJson({ registry: host, components: items });
      const rows = (items as { name: string; kind?: string; repository?: string; latest?: string; versionCount?: number }[]).map((c) => [c.name, c.kind ?? '', c.repository ?? '', c.latest ?? '', String(c.versionCount ?? '')]);
      console.log(table(rows, ['NAME', 'KIND', 'REPOSITORY', 'LATEST', 'VERSIONS']));
    });
  examples(list, ['trellis components list localhost:5000', 'trellis components list localhost:5000 q_provider__eq=acme.org -o json']);

  const versions = withCommon(components.command('versions'), { output: ['table', 'json'] })
    .description('list the versions of a component, optionally within a constraint')
    .argument('<registry>', 'registry host').argument('<component>', 'component name')
    .option('--constraint <range>', 'version constraint, e.g. ">=1.2 <2"')
    .option('--latest', 'only the newest version matching')
    .option('--repository <name>', 'only versions stored in this repository')
    .option('--order <order>', 'asc or desc (default: highest version first)')
    .action(async (text: string, component: string, flags: Flags & { constraint?: string; latest?: boolean; repository?: string; order?: string }) => {
      const host = parseHost(text);
      const params = new URLSearchParams({ component });
      if (flags.constraint) params.set('constraint', flags.constraint);
      if (flags.latest) params.set('latest', 'true');
      if (flags.repository) params.set('repository', flags.repository);
      if (flags.order) params.set('order', flags.order);
      const items = await pagedJson<{ versions?: unknown[] }>(await needComponents(host, flags), `/v2/_trellis/components/versions?${params}`, (b) => b.versions ?? []);
      if (flags.output === 'json') return printJson({ registry: host, component, versions: items });
      const rows = (items as { version: string; repository?: string; digest?: string; tag?: string }[]).map((v) => [v.version, v.repository ?? '', v.tag ?? '', v.digest ?? '']);
      console.log(table(rows, ['VERSION', 'REPOSITORY', 'TAG', 'DIGEST']));
    });
  examples(versions, ['trellis components versions localhost:5000 github.com/acme.org/helloworld --constraint ">=1.0.0 <2.0.0"', 'trellis components versions localhost:5000 libfoo --latest -o json']);

  const show = withCommon(components.command('show'), { output: ['json'] })
    .description('show one version of a component')
    .argument('<registry>', 'registry host').argument('<component>', 'component name').argument('<version>', 'version')
    .option('--repository <name>', 'the repository, when the version is stored in several')
    .action(async (text: string, component: string, version: string, flags: Flags & { repository?: string }) => {
      const host = parseHost(text);
      const reg = await needComponents(host, flags);
      const params = new URLSearchParams({ component, version });
      if (flags.repository) params.set('repository', flags.repository);
      const answer = await reg.getJson<unknown>(`/v2/_trellis/components/version?${params}`);
      if (!answer) notFound(`${component} ${version}`);
      printJson(answer.body);
    });
  examples(show, ['trellis components show localhost:5000 github.com/acme.org/helloworld 1.0.0', 'trellis components show localhost:5000 libfoo 1.4.2 --repository ocm/component-descriptors/libfoo']);

  const owners = withCommon(components.command('owners'), { output: ['table', 'json'] })
    .description('which component versions ship an artifact (by digest)')
    .argument('<registry>', 'registry host').argument('<digest>', 'artifact digest')
    .action(async (text: string, digest: string, flags: Flags) => {
      const host = parseHost(text);
      const reg = await needComponents(host, flags);
      const answer = await reg.getJson<{ digest: string; owners: { name: string; version: string; repository: string | null; via: string }[] }>(`/v2/_trellis/components/owners?${new URLSearchParams({ digest })}`);
      if (!answer) notFound(digest);
      if (flags.output === 'json') return printJson(answer.body);
      console.log(table(answer.body.owners.map((o) => [o.name, o.version, o.repository ?? '', o.via]), ['COMPONENT', 'VERSION', 'REPOSITORY', 'VIA']));
    });
  examples(owners, ['trellis components owners localhost:5000 sha256:…']);
}

// ---- completion ---------------------------------------------------------------------------------

function completionScript(program: Command, shell: string): string | undefined {
  const commands = program.commands.map((c) => ({ name: c.name(), options: c.options.map((o) => o.long).filter(Boolean) as string[], subs: c.commands.map((s) => s.name()) }));
  const names = commands.map((c) => c.name).join(' ');
  if (shell === 'bash') {
    const cases = commands.map((c) => `    ${c.name}) words="${[...c.subs, ...c.options].join(' ')}" ;;`).join('\n');
    return `# trellis bash completion\n_trellis() {\n  local cur=\${COMP_WORDS[COMP_CWORD]} words\n  if [ "$COMP_CWORD" -eq 1 ]; then\n    words="${names} help"\n  else\n    case "\${COMP_WORDS[1]}" in\n${cases}\n    esac\n  fi\n  COMPREPLY=($(compgen -W "$words" -- "$cur"))\n}\ncomplete -o default -F _trellis trellis\n`;
  }
  if (shell === 'zsh') {
    const cases = commands.map((c) => `    ${c.name}) compadd -- ${[...c.subs, ...c.options].join(' ')} ;;`).join('\n');
    return `#compdef trellis\n_trellis() {\n  if (( CURRENT == 2 )); then\n    compadd -- ${names} help\n  else\n    case $words[2] in\n${cases}\n    esac\n    _files\n  fi\n}\ncompdef _trellis trellis\n`;
  }
  if (shell === 'fish') {
    const lines = commands.map((c) => `complete -c trellis -n '__fish_use_subcommand' -a ${c.name} -d ${JSON.stringify(program.commands.find((x) => x.name() === c.name)!.description().slice(0, 60))}`);
    for (const c of commands) for (const o of c.options) lines.push(`complete -c trellis -n '__fish_seen_subcommand_from ${c.name}' -l ${o.slice(2)}`);
    return `${lines.join('\n')}\n`;
  }
  return undefined;
}

/** `trellis copy`: both ends opened, the copy run, both closed whatever happens (Ctrl-C included). */
async function copyCommand(srcText: string, dstText: string, flags: Flags & { recursive?: boolean; concurrency: number }): Promise<void> {
  const src = parseReference(srcText);
  const dst = parseReference(dstText);
  if (dst.digest && dst.digest !== src.digest) throw new UsageError('the destination cannot name a different digest (digests do not change in a copy)');
  if (!src.tag && !src.digest && dst.tag) throw new UsageError('copy every tag of a repository to a repository, not to a tag (or name a source tag)');
  const started = performance.now();
  const from = await openEndpoint(src, flags, 'source');
  let to;
  try {
    to = await openEndpoint(dst, flags, 'destination');
  } catch (err) {
    await from.close(false);
    throw err;
  }
  const progress = progressBars(flags);
  const abort = process.env.TRELLIS_COPY_ABORT_AFTER_BLOBS;
  let report: CopyReport | undefined;
  // A partly copied layout directory is kept (a rerun resumes from it); a tar only when complete.
  let closing: Promise<void> | undefined;
  const closeEnds = () => (closing ??= (async () => {
    progress?.stop();
    try {
      await from.close(false);
    } finally {
      await to.close(report !== undefined || (dst.kind === 'layout' && !dst.tar));
    }
  })());
  // Ctrl-C (or a kill) mid-copy: the same as a failure, so the scratch data directories are
  // removed and a layout directory keeps what was copied, instead of the process just dying.
  const interrupted = (signal: NodeJS.Signals) => {
    void closeEnds().catch(() => undefined).then(() => {
      process.stderr.write(`trellis: copy interrupted (${signal}); run the same command again to resume\n`);
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const options: Parameters<typeof copyRepository>[4] = { referrers: flags.recursive ?? false, concurrency: flags.concurrency };
    if (progress) options.progress = progress;
    if (from.reference) options.references = [from.reference];
    if (dst.tag) options.destinationTag = dst.tag;
    if (abort) options.abortAfterBlobs = Number(abort);
    report = await copyRepository(from.store, to.store, from.repository, to.repository, options);
  } finally {
    await closeEnds();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
  const seconds = (performance.now() - started) / 1000;
  const out = { source: srcText, destination: dstText, ...report, seconds: Math.round(seconds * 1000) / 1000 };
  if (flags.output === 'json') return printJson(out);
  if (!flags.quiet) {
    console.log(`Copied ${srcText} to ${dstText}: ${report.tags} tags, ${report.manifests} manifests, ${report.blobs} blobs (${humanBytes(report.bytes)}) in ${seconds.toFixed(1)} s`
      + (report.skippedBlobs ? `; ${report.skippedBlobs} blobs were already there` : ''));
  }
}
