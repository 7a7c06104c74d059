#!/usr/bin/env node
// The `trellis` executable.
import { statSync } from 'node:fs';
import { Command } from 'commander';
import { loadSettings, SettingsError, type Settings } from './config/settings.ts';
import type { CopyReport } from './transfer/copy.ts';
import { exitWith, UsageError } from './cli/errors.ts';
import { prepareFolder } from './cli/paths.ts';
import { versionText } from './cli/version.ts';
import { ROBOT_PREFIX, robotStore } from './auth/index.ts';

interface CommonFlags {
  config?: string;
  data?: string;
  logLevel?: string;
}

function settingsFrom(flags: CommonFlags & { listen?: string }): Settings {
  return loadSettings({ configFile: flags.config, overrides: { data: flags.data, listen: flags.listen, logLevel: flags.logLevel } });
}

/** Settings for a command that works on an existing data directory (never creates one from a typo). */
function existingData(flags: CommonFlags): Settings {
  const settings = settingsFrom(flags);
  const info = statSync(settings.data, { throwIfNoEntry: false });
  if (!info) throw new UsageError(`data directory ${settings.data} does not exist; give the one \`trellis serve\` uses (--data or TRELLIS_DATA)`);
  if (!info.isDirectory()) throw new UsageError(`${settings.data} is not a directory; give the data directory \`trellis serve\` uses (--data or TRELLIS_DATA)`);
  return settings;
}

const program = new Command('trellis')
  .description('An OCI registry that stores every repository as an OCI Image Layout and knows how artifacts relate.')
  .exitOverride()
  // Errors are printed once, by exitWith (src/cli/errors.ts), as one line and a pointer to --help.
  .configureOutput({ outputError: () => undefined })
  .option('-V, --version', 'print the version and the commit it was built from')
  .on('option:version', () => {
    console.log(versionText());
    process.exit(0);
  })
  .addHelpText('after', `
Client commands work against any OCI registry (Trellis, zot, olareg, distribution); server
commands (serve, fsck, reindex, gc, layout) work on a Trellis data directory.
Exit codes: 0 ok, 1 failed, 2 usage error, 3 not found, 4 authentication or permission, 5 unreachable (network or TLS).
Run \`trellis <command> --help\` for examples.`);

// Each command loads its own modules when it runs: `serve` starts without the client's transfer
// code, and the client commands without the server's. The client commands are only defined when
// the command line may name one (a server command's never does).
const SERVER_COMMANDS = new Set(['serve', 'fsck', 'reindex', 'gc', 'layout', 'robot']);
if (!SERVER_COMMANDS.has(process.argv[2] ?? '')) (await import('./cli/client.ts')).registerClientCommands(program);

program.command('serve')
  .description('serve the registry API')
  .option('--listen <host:port>', 'address to listen on (TRELLIS_LISTEN, default 127.0.0.1:5000)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA, default ./trellis-data)')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--log-level <level>', 'trace, debug, info, warn or error (TRELLIS_LOG_LEVEL)')
  .action(async (flags: CommonFlags & { listen?: string }) => {
    const settings = settingsFrom(flags);
    await prepareFolder(settings.data); // says what is wrong with a path before the registry opens it
    const { serve } = await import('./cli/serve.ts');
    await serve(settings);
  });

program.command('fsck')
  .description('check every layout and the metadata index; exits 1 on any problem')
  .option('--data <dir>', 'data directory (TRELLIS_DATA, default ./trellis-data)')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .action(async (flags: CommonFlags) => {
    const settings = existingData(flags);
    const { fsck } = await import('./cli/fsck.ts');
    const report = await fsck(settings.data, { maxManifestBytes: settings.maxManifestBytes, metadata: settings.metadata, storage: settings.storage });
    for (const problem of report.problems) console.log(`problem: ${problem}`);
    console.log(`checked ${report.repositories} repositories, ${report.manifests} manifests, ${report.blobs} blobs: ${report.problems.length} problems`);
    process.exitCode = report.problems.length ? 1 : 0;
  });

program.command('reindex')
  .description('rebuild the metadata index from the layouts (stop the server first)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA, default ./trellis-data)')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--log-level <level>', 'log level', 'warn')
  .option('--deep', 'also read every unreachable blob and adopt the referrers among them (orphans)')
  .action(async (flags: CommonFlags & { deep?: boolean }) => {
    const settings = existingData(flags);
    const [{ Registry }, { createLogger, registryOptions }] = await Promise.all([import('./content/registry.ts'), import('./cli/serve.ts')]);
    const { orphans } = await Registry.rebuildIndex(registryOptions(settings, createLogger(settings.logLevel)), flags.deep ?? false);
    console.log(`reindexed ${settings.data}${flags.deep ? `; adopted ${orphans} orphan referrers` : ''}`);
  });

program.command('gc')
  .description('remove unreachable manifests and unused blobs (stop the server first, or let it collect online; on PostgreSQL it may run beside replicas)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA, default ./trellis-data)')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--dry-run', 'report what would be removed and why, remove nothing')
  .option('--json', 'print the report as JSON')
  .action(async (flags: CommonFlags & { dryRun?: boolean; json?: boolean }) => {
    const { runGc } = await import('./cli/gc.ts');
    const report = await runGc(existingData(flags), flags.dryRun ?? false);
    if (flags.json) return console.log(JSON.stringify(report, null, 2));
    for (const item of report.removed) console.log(`${report.dryRun ? 'would remove' : 'removed'} ${item.kind} ${item.repository}@${item.digest}: ${item.reason}`);
    console.log(`${report.removed.length} items, ${report.bytes} bytes ${report.dryRun ? 'would be freed' : 'freed'} in ${report.repositories} repositories (${Math.round(report.durationMs)} ms)`);
  });

const layout = program.command('layout').description('copy a repository between a registry and an OCI layout directory or .tar');
const registryOption = '--registry <url>';
const registryHelp = 'registry base URL (default: http:// + the listen setting)';
const registryUrl = (flags: CommonFlags & { registry?: string }) => flags.registry ?? `http://${settingsFrom(flags).listen}`;
const printCopy = (what: string, report: CopyReport) => console.log(`${what}: ${report.tags} tags, ${report.manifests} manifests, ${report.blobs} blobs`);

layout.command('export')
  .description('write <repository> (tags, referrers, nested namespaces) to a layout directory, or a tar if <target> ends in .tar')
  .argument('<repository>').argument('<target>')
  .option(registryOption, registryHelp)
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--no-referrers', 'leave referrers out')
  .action(async (repository: string, target: string, flags: CommonFlags & { registry?: string; referrers: boolean }) => {
    const { exportLayout } = await import('./cli/layout.ts');
    printCopy(`exported ${repository} to ${target}`, await exportLayout(registryUrl(flags), repository, target, { referrers: flags.referrers }));
  });

layout.command('import')
  .description('push a layout directory or .tar (any tool\'s referrer style) into <repository>')
  .argument('<source>').argument('<repository>')
  .option(registryOption, registryHelp)
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--no-referrers', 'leave referrers out')
  .action(async (source: string, repository: string, flags: CommonFlags & { registry?: string; referrers: boolean }) => {
    const { importLayout } = await import('./cli/layout.ts');
    printCopy(`imported ${source} into ${repository}`, await importLayout(registryUrl(flags), source, repository, { referrers: flags.referrers }));
  });

const robot = program.command('robot').description('robot accounts for CI (sign in as robot$<name>); a running registry sees changes at once');
robot.command('create')
  .description('add a robot and print its secret (shown only this once)')
  .argument('<name>')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA)')
  .option('--group <group...>', 'groups the robot belongs to (policies grant groups rights)')
  .option('--expires-days <days>', 'refuse the robot after this many days')
  .option('--description <text>', 'what the robot is for')
  .action(async (name: string, flags: CommonFlags & { group?: string[]; expiresDays?: string; description?: string }) => {
    const store = await robotStore(settingsFrom(flags));
    const options: { groups?: string[]; expiresDays?: number; description?: string } = {};
    if (flags.group) options.groups = flags.group;
    if (flags.expiresDays) options.expiresDays = Number(flags.expiresDays);
    if (flags.description) options.description = flags.description;
    const created = await store.create(name, options).catch((err: Error) => { throw new SettingsError(err.message); });
    console.log(JSON.stringify({ username: created.username, secret: created.secret, groups: created.robot.groups, expires: created.robot.expires ?? null }));
  });
robot.command('revoke')
  .description('remove a robot; its password and tokens stop working immediately')
  .argument('<name>')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA)')
  .action(async (name: string, flags: CommonFlags) => {
    if (!(await (await robotStore(settingsFrom(flags))).revoke(name))) throw new SettingsError(`no robot named ${name}`);
    console.log(`revoked ${name.startsWith(ROBOT_PREFIX) ? name : ROBOT_PREFIX + name}`);
  });
robot.command('list')
  .description('list robots (never their secrets)')
  .option('--config <file>', 'JSON settings file (TRELLIS_CONFIG)')
  .option('--data <dir>', 'data directory (TRELLIS_DATA)')
  .action(async (flags: CommonFlags) => {
    for (const r of await (await robotStore(settingsFrom(flags))).list()) {
      console.log(`${ROBOT_PREFIX}${r.name}\tgroups=${r.groups.join(',') || '-'}\tcreated=${r.created}\texpires=${r.expires ?? 'never'}${r.description ? `\t${r.description}` : ''}`);
    }
  });

program.parseAsync().catch((err: unknown) => exitWith(err, program, process.argv.slice(2)));
