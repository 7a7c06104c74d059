// src/cli/errors.ts: every error a command can end with maps to one line and a documented exit
// code; what it does not know is still one line, pointing at TRELLIS_DEBUG.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CommanderError } from 'commander';
import { EXIT, describeFailure } from '../../src/cli/errors.ts';
import { Cancelled, UsageError } from '../../src/cli/errors.ts';
import { RegistryRequestFailed } from '../../src/transfer/errors.ts';
import { SettingsError } from '../../src/config/settings.ts';

const systemError = (code: string, extra: Record<string, unknown>) => Object.assign(new Error(`${code}: something`), { code, ...extra });

test('registry failures keep their exit codes', () => {
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'unauthorized', 401)).code, EXIT.auth);
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'denied', 403)).code, EXIT.auth);
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'not-found', 404)).code, EXIT.notFound);
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'network')).code, EXIT.unreachable);
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'tls')).code, EXIT.unreachable);
  assert.equal(describeFailure(new RegistryRequestFailed('x', 'other', 500)).code, EXIT.failure);
});

test('usage, settings and cancelled', () => {
  assert.deepEqual(describeFailure(new UsageError('bad')), { message: 'bad', code: EXIT.usage, usage: true });
  assert.equal(describeFailure(new SettingsError('bad setting')).code, EXIT.usage);
  assert.deepEqual(describeFailure(new Cancelled('nothing deleted')), { message: 'nothing deleted', code: EXIT.failure });
  const commander = describeFailure(new CommanderError(1, 'commander.unknownCommand', "error: unknown command 'x'\n(Did you mean y?)"));
  assert.deepEqual(commander, { message: "unknown command 'x' (Did you mean y?)", code: EXIT.usage, usage: true });
});

test('Node system errors in words', () => {
  const busy = describeFailure(systemError('EADDRINUSE', { syscall: 'listen', address: '127.0.0.1', port: 5000 }));
  assert.equal(busy.code, EXIT.failure);
  assert.match(busy.message, /^127\.0\.0\.1:5000 is already in use .*--listen HOST:PORT/);
  assert.match(describeFailure(systemError('EACCES', { syscall: 'listen', address: '0.0.0.0', port: 80 })).message, /ports below 1024/);
  assert.match(describeFailure(systemError('EACCES', { syscall: 'open', path: '/etc/x' })).message, /^\/etc\/x: permission denied/);
  assert.deepEqual(describeFailure(systemError('ENOENT', { syscall: 'open', path: 'a.txt' })), { message: 'a.txt: no such file or directory', code: EXIT.usage });
  assert.match(describeFailure(systemError('ENOSPC', { path: '/data/x' })).message, /no space left/);
});

test('anything else: one line saying it is unexpected and how to see more', () => {
  const failure = describeFailure(new TypeError('Cannot read properties of undefined'));
  assert.equal(failure.code, EXIT.failure);
  assert.match(failure.message, /^unexpected error: Cannot read properties of undefined \(run again with TRELLIS_DEBUG=1/);
  assert.doesNotMatch(failure.message, /\n/);
});
