#!/usr/bin/env node
/* global process, URL */
// `pnpm import-users ...` runs this binary, not a package.json script: pnpm prints
// its "> pkg@ script" banner on stdout for scripts, which would break the
// one-JSON-document-on-stdout rule; for a binary it prints nothing.
// The importer runs in a child Node with a small heap, so memory stays flat and a
// leak fails loudly instead of growing: the file is streamed, the live heap is ~10 MB,
// and without the caps V8 lets a dry run of 1,000,000 rows reach ~170 MB of RSS.
// The young generation is 8 MB, not smaller: at 2 MB the scavenges of a 32-wide import
// cost about 10 % of its rows/s (measured side by side: 702-769 vs 784-870 rows/s at 16 MB).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const built = fileURLToPath(new URL('../dist/main.js', import.meta.url));
// The flags are in a file of their own, so tests that start the importer's entry point directly give it the same.
const heap = JSON.parse(readFileSync(new URL('./node-flags.json', import.meta.url), 'utf8'));
const entry = existsSync(built) && !process.env.IMPORTER_FROM_SOURCE ? [built] : ['--import', 'tsx', source];
const child = spawn(process.execPath, [...heap, ...entry, ...process.argv.slice(2)], { stdio: 'inherit' });
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
