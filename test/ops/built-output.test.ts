import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { waitFor } from '../support/child-process.ts';
import { databaseUrl, http, rsaKeyPair, signAssertion, uniquePrefix } from '../support/harness.ts';
import { freePort, imageNodeOptions, REPO_ROOT, stopChild } from '@connect/local-services';

const run = promisify(execFile);
const children: ChildProcess[] = [];
const stages: string[] = [];
afterAll(async () => {
  for (const c of children.reverse()) await stopChild(c, 'SIGTERM', 10_000);
  // The staged folder is about 70 MB: a CI machine that runs the suite often should not keep them.
  for (const dir of stages) rmSync(dir, { recursive: true, force: true });
});

/** Runs `node FILE` from the staged folder, as the image's CMD does: no tsx there to fall back on. */
function startNode(stage: string, file: string, env: Record<string, string>, args: string[] = []): { proc: ChildProcess; output: () => string } {
  const proc = spawn(process.execPath, [file, ...args], {
    cwd: stage,
    // Only what the image sets: no NODE_OPTIONS=--import tsx, no loader from the repository.
    env: { PATH: process.env.PATH!, NODE_ENV: 'production', NODE_OPTIONS: imageNodeOptions().join(' '), ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  children.push(proc);
  return { proc, output: () => out };
}

function cli(stage: string, args: string[], env: Record<string, string>, stdin = ''): Promise<any> {
  return new Promise((resolve, reject) => {
    const c = startNode(stage, 'packages/cli/bin/cli.js', env, args);
    c.proc.stdin!.end(stdin);
    let stdout = '';
    c.proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    c.proc.once('close', (code) => (code === 0 ? resolve(JSON.parse(stdout)) : reject(new Error(`cli ${args.join(' ')} exited ${code}: ${c.output()}`))));
  });
}

describe('pnpm build: the production build runs with plain node, from the folder the image is made of', () => {
  it('builds, stages without tsx, TypeScript sources or dev dependencies, and the API, worker and CLI from it pass a smoke test (token, create, verified callback)', async () => {
    await run('pnpm', ['-s', 'build'], { cwd: REPO_ROOT, maxBuffer: 1 << 24 });
    const stage = mkdtempSync(join(tmpdir(), 'image-stage-'));
    stages.push(stage);
    await run(join(REPO_ROOT, 'scripts', 'stage-image.sh'), [stage], { cwd: REPO_ROOT, maxBuffer: 1 << 24 });

    const installed = readdirSync(join(stage, 'node_modules', '.pnpm'));
    for (const dev of ['tsx@', 'vitest@', 'typescript@', 'testcontainers@', 'esbuild@', 'fast-check@', 'playwright-core@']) {
      expect(installed.filter((p) => p.startsWith(dev)), dev).toEqual([]);
    }
    expect(existsSync(join(stage, 'test'))).toBe(false);
    // The image runs BullMQ and the MongoDB driver with the repository's fixes (patches/):
    // without them, a worker stopped while its connections open exits 1
    // (test/worker/shutdown-at-start.test.ts), and a client whose monitor met a closing socket
    // never finds its database again (test/faults/mongo-driver-closing-socket.test.ts).
    expect(installed.filter((p) => p.startsWith('bullmq@')), 'bullmq in the image').toEqual([expect.stringMatching(/^bullmq@[\d.]+_patch_hash=/)]);
    expect(installed.filter((p) => /^mongodb@\d/.test(p)), 'mongodb in the image').toEqual([expect.stringMatching(/^mongodb@[\d.]+_patch_hash=/)]);
    const sources = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.name === 'node_modules' ? [] : e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : []));
    expect(sources(stage)).toEqual([]);

    const receiverPort = await freePort();
    const apiPort = await freePort();
    const healthPort = await freePort();
    const secret = randomUUID();
    const receiver = startNode(stage, 'scripts/demo-receiver.js', { PORT: String(receiverPort), HOST: '127.0.0.1', DEMO_RECEIVER_SECRET: secret });
    const env = {
      MONGO_URL: databaseUrl('built'),
      REDIS_URL: inject('redisUrl'),
      QUEUE_PREFIX: uniquePrefix('built'),
      PORT: String(apiPort),
      HOST: '127.0.0.1',
      PUBLIC_BASE_URL: `http://127.0.0.1:${apiPort}`,
      LOG_LEVEL: 'info',
      DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'demo-receiver', url: `http://127.0.0.1:${receiverPort}/callbacks`, secrets: [secret] }]),
    };
    const api = startNode(stage, 'apps/api/dist/main.js', env);
    const worker = startNode(stage, 'apps/worker/dist/main.js', { ...env, WORKER_HEALTH_PORT: String(healthPort) });
    await waitFor(() => fetch(`http://127.0.0.1:${apiPort}/readyz`).then((r) => r.ok, () => false), 60_000, `the built API to be ready: ${api.output()}`);
    await waitFor(() => fetch(`http://127.0.0.1:${healthPort}/healthz`).then((r) => r.ok, () => false), 60_000, `the built worker to be healthy: ${worker.output()}`);

    // The CLI's binary finds no tsx in the staged folder and runs its build.
    const org = await cli(stage, ['org', 'create', '--name', 'Built clinic'], env);
    // Without MONGO_URL it says so, and does not point at `pnpm stack`, which the image does not have.
    const { MONGO_URL: _unset, ...withoutMongo } = env;
    const unconfigured = await cli(stage, ['org', 'list'], withoutMongo).then(
      () => undefined,
      (err: Error) => err.message,
    );
    expect(unconfigured).toContain('"kind": "configuration"');
    expect(unconfigured).toContain('MONGO_URL: is required');
    expect(unconfigured).not.toContain('pnpm stack');
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const client = await cli(stage, ['client', 'create', '--org', org.id, '--public-key-file', '-'], env, publicKeyPem);
    expect(client.token_url).toBe(`http://127.0.0.1:${apiPort}/v1/connect/server/oauth/token`);

    const token = await http(client.token_url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await signAssertion(client.client_id, privateKey, client.token_url),
      }),
    });
    expect(token.status).toBe(200);
    const id = `built-${randomUUID()}`;
    const created = await http(`http://127.0.0.1:${apiPort}/v1/connect/server/users`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token.body.access_token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' },
      body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } }),
    });
    expect(created.status).toBe(201);
    await waitFor(() => receiver.output().split('\n').some((l) => l.includes('"verified callback"') && l.includes(`"external_provider_id":"${id}"`)), 30_000, `the verified callback: ${receiver.output()}`);
  }, 600_000);
});
