/**
 * Bulk import (issue 15): the importer (apps/importer, `pnpm import-users`, which upserts
 * through the client SDK) run on an NDJSON file of new users against the bench's API.
 * Each round is a file of users of its own, in a temporary directory outside the tree,
 * and one run of the importer's binary as an operator runs it (its heap caps included).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from './bench-child.ts';
import { LOCALE_A, upsertBody } from './bench-users.ts';
import type { RoundStats } from './round-stats.ts';

export interface ImportRoundSpec {
  baseUrl: string;
  clientId: string;
  /** A PEM file of the client's private key. */
  privateKeyFile: string;
  /** Where the round's file is written (a temporary directory). */
  dir: string;
  /** The round's users: `upsertBody(prefix, i)` for i below `rows`, all new. */
  prefix: string;
  rows: number;
  concurrency: number;
}

/** The importer's one JSON document on stdout (apps/importer/src/main.ts). */
interface ImporterResult {
  total: number;
  created: number;
  updated: number;
  unchanged: number;
  failed: number;
  seconds: number;
}

/**
 * One round: rows/s = rows answered over the importer's own `seconds` (from before its
 * first row to its last answer, token request included, process start not), which it
 * prints to a tenth of a second. `errors` = rows it reports failed.
 */
export async function runImportRound(spec: ImportRoundSpec): Promise<{ round: RoundStats; result: ImporterResult; wallSec: number }> {
  const file = join(spec.dir, `${spec.prefix}.ndjson`);
  const lines: string[] = [];
  for (let i = 0; i < spec.rows; i++) lines.push(upsertBody(spec.prefix, i, LOCALE_A));
  await writeFile(file, `${lines.join('\n')}\n`);
  const args = ['--base-url', spec.baseUrl, '--client-id', spec.clientId, '--private-key-file', spec.privateKeyFile, '--file', file, '--concurrency', String(spec.concurrency)];
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(REPO_ROOT, 'apps', 'importer', 'bin', 'import-users.js'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const wallSec = (performance.now() - t0) / 1000;
  if (code !== 0) throw new Error(`import-users exited ${code}: ${out.slice(-1000)} ${err.slice(-2000)}`);
  const result = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as ImporterResult;
  const answered = result.created + result.updated + result.unchanged;
  return {
    round: { rps: answered / Math.max(0.05, result.seconds), p50: NaN, p99: NaN, p999: NaN, non2xx: 0, requests: result.total, errors: result.failed },
    result,
    wallSec,
  };
}
