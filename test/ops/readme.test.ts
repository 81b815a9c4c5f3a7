import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/child-process.ts';
import { freePort, REPO_ROOT } from '@connect/local-services';

const run = promisify(execFile);
const database = `readme_test_${Date.now().toString(36)}`;
// The README writes its keys to .local/readme/ in the repository, as it would for a
// reader; a reader's own files there are put back afterwards.
const readmeDir = join(REPO_ROOT, '.local', 'readme');
const backup = existsSync(readmeDir) ? mkdtempSync(join(tmpdir(), 'readme-backup-')) : undefined;
if (backup) cpSync(readmeDir, backup, { recursive: true });
let stack: ReturnType<typeof spawn> | undefined;

afterAll(async () => {
  if (stack?.pid) process.kill(-stack.pid, 'SIGINT');
  await new Promise((r) => (stack && stack.exitCode === null ? stack.once('exit', r) : r(null)));
  rmSync(readmeDir, { recursive: true, force: true });
  if (backup) cpSync(backup, readmeDir, { recursive: true });
  await run('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-qc', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`]).catch(() => undefined);
});

/** The ```bash blocks of README.md that follow a `<!-- readme-test: run -->` line, in order. */
function readmeBlocks(): string[] {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  return [...readme.matchAll(/<!-- readme-test: run -->\n```bash\n([\s\S]*?)\n```/g)].map((m) => m[1]!);
}

/** The JSON documents printed one after another (compact or indented) in `text`. */
function jsonDocuments(text: string): any[] {
  const docs: any[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"' && depth > 0) inString = true;
    else if (ch === '{') {
      if (depth++ === 0) start = i;
    } else if (ch === '}' && depth > 0 && --depth === 0) docs.push(JSON.parse(text.slice(start, i + 1)));
  }
  return docs;
}

describe("README.md: the 'Try it' blocks run as printed against a running `pnpm stack`", () => {
  it('token, create, read back (API and CLI agree), and a verified callback from this run', async () => {
    const began = Date.now();
    const blocks = readmeBlocks();
    expect(blocks.length).toBeGreaterThanOrEqual(7);

    const dir = mkdtempSync(join(tmpdir(), 'readme-stack-'));
    const port = await freePort();
    stack = spawn('pnpm', ['-s', 'stack'], {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: String(port), STACK_DIR: dir, STACK_DATABASE: database },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let stackOut = '';
    stack.stdout!.on('data', (d: Buffer) => (stackOut += d.toString()));
    stack.stderr!.on('data', (d: Buffer) => (stackOut += d.toString()));
    await waitFor(() => stackOut.includes('ready in'), 180_000, 'the stack to be ready');
    const ready = Date.now();

    // One bash session, as a reader's terminal: variables carry from block to block.
    // Nothing of this test's own environment names a datastore: the blocks must find the stack by themselves.
    const env: Record<string, string | undefined> = { ...process.env, STACK_DIR: dir };
    for (const name of ['MONGO_URL', 'REDIS_URL', 'QUEUE_PREFIX', 'PUBLIC_BASE_URL', 'DOWNSTREAM_TARGETS', 'DOWNSTREAM_TARGETS_FILE', 'PORT']) delete env[name];
    const script = ['set -euo pipefail', ...blocks.flatMap((b, i) => [`echo "@@block ${i + 1}@@"`, b])].join('\n');
    const { stdout, stderr } = await run('bash', ['-c', script], { cwd: REPO_ROOT, env, timeout: 120_000, maxBuffer: 1 << 24 }).catch((err) => {
      throw new Error(`the README's blocks failed: ${err.message}\nstdout: ${err.stdout}\nstderr: ${err.stderr}\nstack: ${stackOut}`);
    });
    const out = Object.fromEntries(stdout.split(/^@@block (\d+)@@\n/m).slice(1).reduce<[number, string][]>((acc, v, i, a) => (i % 2 === 0 ? [...acc, [Number(v), a[i + 1]!]] : acc), []));

    // 2: the CLI found the stack through .local/stack/env and said so on stderr.
    const notice = stderr.split('\n').find((l) => l.startsWith('cli: MONGO_URL is not set; using '));
    expect(notice, stderr).toContain(`from ${join(dir, 'env')}`);
    for (const name of ['MONGO_URL', 'REDIS_URL', 'QUEUE_PREFIX', 'PUBLIC_BASE_URL', 'DOWNSTREAM_TARGETS']) expect(notice).toContain(name);
    const [org, client] = jsonDocuments(out[2]!);
    expect(org).toMatchObject({ id: expect.any(String), name: 'Demo clinic' });
    expect(client).toMatchObject({ organization_id: org.id, enabled: true, token_url: `http://localhost:${port}/v1/connect/server/oauth/token` });

    // 4: the token worked (created with it) and the user is new.
    const created = jsonDocuments(out[4]!)[0];
    expect(out[4]).toMatch(/\nHTTP 201\n$/);
    const ehrId = created.external_provider_id as string;
    expect(ehrId).toMatch(/^ehr-\d+$/);

    // 5: GET /users/{id} and `pnpm cli user get` name the same user and the stack's target.
    const [fromApi, fromCli] = jsonDocuments(out[5]!);
    expect(fromApi).toMatchObject({ external_provider_id: ehrId, provider_email: `${ehrId}@example.com`, sync: [expect.objectContaining({ target: 'demo-receiver' })] });
    // The same user; `sync` may have moved from pending to delivered between the two reads.
    const { sync: _apiSync, ...apiUser } = fromApi;
    expect(fromCli).toMatchObject({ ...apiUser, sync: [expect.objectContaining({ target: 'demo-receiver' })] });

    // 6: this run's callback: this user, this organization, signature verified by the receiver.
    const { callbacks } = jsonDocuments(out[6]!)[0];
    expect(callbacks).toEqual([expect.objectContaining({ msg: 'verified callback', type: 'user.created', external_provider_id: ehrId, organization_id: org.id, version: 1 })]);

    // 7 (the bulk import section): one user, created through the client SDK.
    expect(jsonDocuments(out[7]!)[0]).toMatchObject({ total: 1, created: 1, updated: 0, unchanged: 0, failed: 0, seconds: expect.any(Number) });

    const seconds = (ms: number) => (ms / 1000).toFixed(1);
    console.log(`[readme test] stack ready in ${seconds(ready - began)} s; README blocks ran in ${seconds(Date.now() - ready)} s; total ${seconds(Date.now() - began)} s`);
  }, 400_000);
});
