#!/usr/bin/env node
// Runs the TypeScript entry point directly (Node.js 24+ strips types natively). The compile cache
// keeps the stripped and compiled modules between runs: a client command starts in a third of
// the CPU time.
import { enableCompileCache } from 'node:module';

enableCompileCache?.();
await import('../src/main.ts');
