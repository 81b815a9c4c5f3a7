/**
 * The benchmark cannot rot: `pnpm bench --smoke` runs every section of it for a moment,
 * with tiny sizes, against the run's MongoDB and Redis (its own databases and queue
 * prefixes, dropped after). Nothing is asserted about speed: only that it ran every
 * section and exited 0.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, inject, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';

const SECTIONS = [
  'users',
  'users (cached set)',
  'p99 at half peak',
  'token endpoint',
  'end to end',
  'memory',
  'delivery (ours)',
  'delivery (bare BullMQ)',
  'delivery (bare BullMQ + same DB work)',
  'resync',
  'import',
  'growth',
  'metrics scrape',
];

/** Runs `bench/run.ts` with these arguments, as `pnpm bench` does, on the run's MongoDB and Redis. */
async function bench(args: string[], killAfterMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // What `pnpm bench ...` runs (package.json "bench": "tsx bench/run.ts"), without pnpm in between,
  // so a timeout stops the bench itself and its cleanup runs.
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'run.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, MONGO_URL: inject('mongoUrl'), REDIS_URL: inject('redisUrl') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-8_000)));
  const timer = setTimeout(() => child.kill('SIGINT'), killAfterMs);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

describe('pnpm bench --smoke', () => {
  it('runs every section of the benchmark and exits 0, writing no results', { timeout: 420_000 }, async () => {
    const latest = join(REPO_ROOT, 'bench', 'results', 'latest.md');
    const before = existsSync(latest) ? statSync(latest).mtimeMs : undefined;
    const { code, stdout, stderr } = await bench(['--smoke'], 400_000);

    expect(code, `bench --smoke exited ${code}; its stderr ended with:\n${stderr}`).toBe(0);
    expect(stdout).toContain('# Benchmark (smoke');
    const sectionsLine = stdout.split('\n').find((l) => l.startsWith('Sections run: '));
    expect(sectionsLine, stdout.slice(0, 2000)).toBeDefined();
    const ran = sectionsLine!.slice('Sections run: '.length).replace(/\.$/, '').split(', ');
    expect(ran).toEqual(SECTIONS);
    // Every ratio the issue sets a target for is computed, whatever its value.
    for (const figure of ['API / driver throughput', 'half the API peak', 'token endpoint / bare Fastify', 'end to end p99', 'CPU per update: API / driver', 'delivery throughput: ours / bare BullMQ', 'resync to one target: users/s / bare BullMQ deliveries/s', 'importer rows/s / POST /users creates/s', 'growth: update p50', '/metrics scrape time']) {
      expect(stdout).toContain(figure);
    }
    // And the figures shown beside them without a target: the bare worker doing our database work.
    for (const figure of ['delivery, ours / bare BullMQ + same DB work', 'delivery, bare BullMQ + same DB work / bare BullMQ', 'resync users/s / bare BullMQ + same DB work']) {
      expect(stdout).toContain(figure);
    }
    // A smoke run's figures are meaningless: they are never written where a result could be committed.
    expect(existsSync(latest) ? statSync(latest).mtimeMs : undefined).toBe(before);
  });

  it('runs a short soak (--soak with --smoke): a report per interval and the start/end table, nothing written', { timeout: 300_000 }, async () => {
    const soakMd = join(REPO_ROOT, 'bench', 'results', 'soak.md');
    const before = existsSync(soakMd) ? statSync(soakMd).mtimeMs : undefined;
    const { code, stdout, stderr } = await bench(['--soak', '0.2', '--every', '4', '--outage', '3', '--rate', '5', '--smoke'], 280_000);

    expect(code, `bench --soak exited ${code}; its stderr ended with:\n${stderr}`).toBe(0);
    expect(stdout).toContain('## Start and end');
    for (const figure of ['API RSS (MiB)', 'worker RSS (MiB)', 'Redis used_memory (MiB)', 'documents: provider_users', 'documents: deliveries', 'delivery lag p50 / p99 ms (callbacks), steady', 'delivery lag p50 / p99 ms (callbacks), flaky']) {
      expect(stdout).toContain(figure);
    }
    // One report at the start, at least one during the traffic, one at the end: each a JSON line on stderr.
    const reports = stderr.split('\n').filter((l) => l.startsWith('{"soak":'));
    expect(reports.length).toBeGreaterThanOrEqual(3);
    expect(existsSync(soakMd) ? statSync(soakMd).mtimeMs : undefined).toBe(before);
  });

  it('compares creates under EMAIL_UNIQUENESS=claims and index (--email-claims with --smoke): both modes ran, every create answered 201, the ratio printed', { timeout: 240_000 }, async () => {
    const { code, stdout, stderr } = await bench(['--email-claims', '--smoke'], 220_000);
    expect(code, `bench --email-claims exited ${code}; its stderr ended with:\n${stderr}`).toBe(0);
    expect(stdout).toContain('# Email claims: the cost of a create (smoke');
    expect(stdout).toMatch(/^\| index \| \d+ /m);
    expect(stdout).toMatch(/^\| claims \| \d+ /m);
    expect(stdout).toMatch(/^creates\/s, claims \/ index, per round: \d/m);
    // Creates only, each with a new id and email: anything but 201 would be a failure of the mode.
    for (const mode of ['index', 'claims']) expect(stderr).toMatch(new RegExp(`round 1/1 ${mode}: \\d+ creates/s \\(statuses \\{"201":\\d+\\}\\)`));
  });
});
