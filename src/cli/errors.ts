// Every error a `trellis` command ends with becomes one `trellis: …` line on stderr (what went
// wrong and what to do) and an exit code from docs/cli.md; never a stack trace, unless
// TRELLIS_DEBUG is set. Usage errors add a pointer to the command's --help.
import { CommanderError, type Command } from 'commander';
import { SettingsError } from '../config/settings.ts';
import { AuthConfigError } from '../auth/index.ts';
import { OciError } from '../oci/errors.ts';
import { CopyFailed, CredentialError, RegistryRequestFailed } from '../transfer/errors.ts';
import { DataDirectoryBusy } from '../content/registry.ts';
import { MetadataDamaged } from '../metadata/index.ts';

/** A command line that cannot work as given (exit 2). */
export class UsageError extends Error {}

/** The user answered no. */
export class Cancelled extends Error {}

/** `trellis layout` was given paths or names it cannot use. */
export class LayoutCommandError extends Error {}

/** Exit codes scripts can rely on (docs/cli.md lists them). */
export const EXIT = { ok: 0, failure: 1, usage: 2, notFound: 3, auth: 4, unreachable: 5 } as const;

export interface Failure {
  message: string;
  code: number;
  /** Whether to point at `--help` (bad arguments). */
  usage?: boolean;
}

type SystemError = Error & { code?: string; syscall?: string; path?: string; dest?: string; address?: string; port?: number };

const isSystemError = (err: unknown): err is SystemError => err instanceof Error && typeof (err as SystemError).code === 'string' && /^E[A-Z]+$/.test((err as SystemError).code!);

/** A file-system or socket error from Node, in words (the path it concerns first). */
function systemFailure(err: SystemError): Failure | undefined {
  const path = err.path ?? '';
  switch (err.code) {
    case 'EADDRINUSE':
      return { message: `${err.address ?? ''}:${err.port ?? ''} is already in use (is another registry running?); stop it or choose another address with --listen HOST:PORT`, code: EXIT.failure };
    case 'EADDRNOTAVAIL':
      return { message: `cannot listen on ${err.address ?? ''}:${err.port ?? ''}: no such address on this machine; use --listen 127.0.0.1:PORT`, code: EXIT.usage };
    case 'ENOENT':
      return { message: `${path || err.message}: no such file or directory${err.dest ? ` (writing ${err.dest})` : ''}`, code: EXIT.usage };
    case 'ENOTDIR':
      return { message: `${path}: a part of this path is a file, not a directory`, code: EXIT.usage };
    case 'EISDIR':
      return { message: `${path} is a directory; give a file`, code: EXIT.usage };
    case 'EEXIST':
      return { message: `${path} already exists`, code: EXIT.usage };
    case 'EACCES': case 'EPERM':
      return err.syscall === 'listen' || err.syscall === 'bind'
        ? { message: `no permission to listen on ${err.address ?? ''}:${err.port ?? ''} (ports below 1024 need privileges); choose a port above 1024 with --listen`, code: EXIT.failure }
        : { message: `${path}: permission denied; choose a folder you can write to`, code: EXIT.failure };
    case 'EROFS':
      return { message: `${path}: read-only file system; choose a writable folder`, code: EXIT.failure };
    case 'ENOSPC':
      return { message: `${path}: no space left on the device`, code: EXIT.failure };
    case 'ELOOP':
      return { message: `${path}: too many levels of symbolic links`, code: EXIT.usage };
    case 'EPIPE':
      return { message: 'the output was closed', code: EXIT.failure };
    default:
      return undefined;
  }
}

function registryFailure(err: RegistryRequestFailed): Failure {
  switch (err.kind) {
    case 'unauthorized': case 'denied': return { message: err.message, code: EXIT.auth };
    case 'not-found': return { message: err.message, code: EXIT.notFound };
    case 'network': case 'tls': return { message: err.message, code: EXIT.unreachable };
    case 'invalid': return { message: err.message, code: EXIT.usage };
    default: return { message: err.message, code: EXIT.failure };
  }
}

/** The message and exit code for anything a command threw. */
export function describeFailure(err: unknown): Failure {
  if (err instanceof CommanderError) return { message: err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim(), code: err.exitCode === 0 ? EXIT.ok : EXIT.usage, usage: true };
  if (err instanceof UsageError) return { message: err.message, code: EXIT.usage, usage: true };
  if (err instanceof Cancelled) return { message: err.message, code: EXIT.failure };
  if (err instanceof RegistryRequestFailed) return registryFailure(err);
  if (err instanceof CopyFailed || err instanceof CredentialError) return { message: err.message, code: EXIT.failure };
  if (err instanceof SettingsError || err instanceof AuthConfigError || err instanceof LayoutCommandError) return { message: err.message, code: EXIT.usage };
  if (err instanceof DataDirectoryBusy || err instanceof MetadataDamaged) return { message: err.message, code: EXIT.failure };
  if (err instanceof OciError) return { message: err.message, code: EXIT.failure };
  if (isSystemError(err)) {
    const known = systemFailure(err);
    if (known) return known;
  }
  const message = err instanceof Error ? err.message : String(err);
  return { message: `unexpected error: ${message} (run again with TRELLIS_DEBUG=1 to see where, and please report it)`, code: EXIT.failure };
}

/** `trellis push` for `trellis push --bad`: the command path named on the command line. */
export function commandPath(program: Command, argv: string[]): string {
  const names = ['trellis'];
  let current = program;
  for (const arg of argv) {
    if (arg.startsWith('-')) continue;
    const next = current.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    if (!next) break;
    names.push(next.name());
    current = next;
  }
  return names.join(' ');
}

/** Prints the failure and ends the process with its exit code. */
export function exitWith(err: unknown, program: Command, argv: string[]): never {
  // Help was printed (asked for, or a command group named without a subcommand): nothing to add.
  if (err instanceof CommanderError && (err.code === 'commander.helpDisplayed' || err.code === 'commander.help')) process.exit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
  const failure = describeFailure(err);
  const lines = [`trellis: ${failure.message}`];
  if (failure.usage) lines.push(`Run \`${commandPath(program, argv)} --help\` for usage.`);
  if (process.env.TRELLIS_DEBUG && err instanceof Error && err.stack) lines.push(err.stack);
  process.stderr.write(`${lines.join('\n')}\n`);
  process.exit(failure.code);
}
