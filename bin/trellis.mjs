#!/usr/bin/env node
// Runs the TypeScript entry point directly (Node.js 24+ strips types natively).
import '../src/main.ts';
