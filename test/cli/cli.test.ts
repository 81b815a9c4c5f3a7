import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, REPO_ROOT } from '@connect/local-services';
import { getUser, http, postUser, rsaKeyPair, signAssertion, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
// Not where the API listens: token_url must come from PUBLIC_BASE_URL, not from PORT.
const PUBLIC_BASE_URL = 'https://connect.example.test';
const emptyStackDir = mkdtempSync(join(tmpdir(), 'cli-no-stack-'));

interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

/**
 * Runs the CLI and parses its whole stdout as one JSON document (the test fails
 * if anything else is on stdout). `via: 'pnpm'` runs `pnpm cli ...` exactly as a
 * person types it, without -s; the default runs the same binary directly (faster).
 */
function cli(args: string[], o: { via?: 'pnpm'; env?: Record<string, string | undefined>; stdin?: string; parse?: false } = {}): Promise<CliRun> {
  const [cmd, argv] = o.via === 'pnpm' ? ['pnpm', ['cli', ...args]] : [process.execPath, ['packages/cli/bin/cli.js', ...args]];
  // STACK_DIR points at an empty folder so a developer's running `pnpm stack` never leaks in.
  const env: Record<string, string | undefined> = { ...process.env, ...api.env, STACK_DIR: emptyStackDir, ...o.env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd as string, argv as string[], { cwd: REPO_ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(o.stdin ?? '');
    child.once('error', reject);
    child.once('close', (code) => {
      try {
        resolve({ code: code ?? -1, stdout, stderr, json: o.parse === false ? undefined : JSON.parse(stdout) });
      } catch (err) {
        reject(new Error(`stdout is not one JSON document (exit ${code}): ${stdout}\nstderr: ${stderr}`, { cause: err }));
      }
    });
  });
}

function expectError(run: CliRun, kind: string, code: number, message?: RegExp): void {
  expect(run.json, run.stdout).toEqual({ error: expect.objectContaining({ kind, message: expect.any(String) }) });
  if (message) expect(run.json.error.message).toMatch(message);
  expect(run.code).toBe(code);
}

async function tokenFor(clientId: string, privateKey: Parameters<typeof signAssertion>[1]): Promise<string> {
  const res = await http(api.tokenUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await signAssertion(clientId, privateKey, api.audience),
    }),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.access_token;
}

beforeAll(async () => {
  receiver = await startReceiver();
  api = await startTestApi({
    label: 'cli',
    clientCacheTtlMs: 200,
    env: { PUBLIC_BASE_URL, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s3cret'] }]) },
  });
  worker = await startTestWorker(api.env);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('pnpm cli: one JSON document on stdout per command', () => {
  it('pnpm cli (without -s) prints only JSON: org create and list, client create from stdin with token_url from PUBLIC_BASE_URL, client list, disable and enable', async () => {
    const org = await cli(['org', 'create', '--name', 'St. Elsewhere', '--api-version', '2026-03-23'], { via: 'pnpm' });
    expect(org.code).toBe(0);
    expect(org.json).toEqual({ id: expect.any(String), name: 'St. Elsewhere', api_version: '2026-03-23', created_at: expect.any(String) });
    expect((await cli(['org', 'list'])).json.organizations).toContainEqual(org.json);

    // `--public-key-file -`: the key comes on stdin, as through `docker compose run -T`.
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const client = await cli(['client', 'create', '--org', org.json.id, '--public-key-file', '-'], { via: 'pnpm', stdin: publicKeyPem });
    expect(client.code).toBe(0);
    expect(client.json).toEqual({
      client_id: expect.any(String),
      organization_id: org.json.id,
      key: { public_key: 'pem' },
      enabled: true,
      token_url: `${PUBLIC_BASE_URL}/v1/connect/server/oauth/token`,
      created_at: expect.any(String),
      disabled_at: null,
    });
    const clientId = client.json.client_id as string;

    const list = await cli(['client', 'list', '--org', org.json.id]);
    expect(list.code).toBe(0);
    expect(list.json).toEqual({ clients: [{ client_id: clientId, organization_id: org.json.id, key: { public_key: 'pem' }, enabled: true, created_at: client.json.created_at, disabled_at: null }] });
    expect(list.stdout).not.toContain('BEGIN PUBLIC KEY');

    const token = await tokenFor(clientId, privateKey);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: 'cli@example.com', external_provider_id: id })).status).toBe(201);

    const disabled = await cli(['client', 'disable', clientId]);
    expect(disabled.code).toBe(0);
    expect(disabled.json).toEqual({ client_id: clientId, enabled: false, disabled_at: expect.any(String) });
    await eventually(async () => (await getUser(api, token, id)).status === 401, 10_000);
    expect((await cli(['client', 'list', '--org', org.json.id])).json.clients[0]).toMatchObject({ enabled: false, disabled_at: disabled.json.disabled_at });

    const enabled = await cli(['client', 'enable', clientId]);
    expect(enabled.code).toBe(0);
    expect(enabled.json).toEqual({ client_id: clientId, enabled: true, disabled_at: null });
    await eventually(async () => (await getUser(api, token, id)).status === 200, 10_000);
  }, 120_000);

  it('user get and GET /users/{id} answer the same document, sync included, once the callback was delivered', async () => {
    const org = await cli(['org', 'create', '--name', 'Sync clinic']);
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const dir = mkdtempSync(join(tmpdir(), 'cli-'));
    writeFileSync(join(dir, 'public.pem'), publicKeyPem);
    const client = await cli(['client', 'create', '--org', org.json.id, '--public-key-file', join(dir, 'public.pem')]);
    const token = await tokenFor(client.json.client_id, privateKey);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const fromApi = (await eventually(async () => {
      const res = await getUser(api, token, id);
      return res.body.sync?.[0]?.status === 'delivered' ? res.body : false;
    }, 30_000))!;
    expect(fromApi.sync).toEqual([expect.objectContaining({ target: 'dictation', status: 'delivered', version: 1 })]);

    const fromCli = await cli(['user', 'get', '--org', org.json.id, '--external-provider-id', id]);
    expect(fromCli.code).toBe(0);
    expect(fromCli.json).toEqual(fromApi);
  }, 120_000);

  it('each error is {"error": {"kind", "message"}} on stdout with its exit code: usage, configuration, unavailable, not_found, conflict', async () => {
    // usage (exit 2): unknown command, missing option, unknown option, bad value, stray argument
    expectError(await cli(['frobnicate'], { via: 'pnpm' }), 'usage', 2, /unknown command "frobnicate"/);
    expectError(await cli([]), 'usage', 2, /no command/);
    expectError(await cli(['org', 'create']), 'usage', 2, /--name is required/);
    expectError(await cli(['org', 'list', '--bogus']), 'usage', 2, /--bogus/);
    expectError(await cli(['org', 'create', '--name', 'x', '--api-version', '1999-01-01']), 'usage', 2, /api_version/);
    expectError(await cli(['client', 'disable']), 'usage', 2, /client id is required/);
    expectError(await cli(['client', 'disable', 'a', 'b']), 'usage', 2, /unexpected argument "b"/);
    expectError(await cli(['client', 'create', '--org', 'x', '--public-key-file', '/no/such/file.pem']), 'usage', 2, /cannot read --public-key-file/);

    // configuration (exit 2): no MONGO_URL and no stack file; a malformed value
    const noUrl = await cli(['org', 'list'], { env: { MONGO_URL: undefined } });
    expectError(noUrl, 'configuration', 2, /^MONGO_URL: is required/);
    expect(noUrl.json.error.variable).toBe('MONGO_URL');
    expectError(await cli(['org', 'list'], { env: { MONGO_URL: 'http://nope' } }), 'configuration', 2, /MONGO_URL/);

    // unavailable (exit 1): nothing listens where MONGO_URL / REDIS_URL point; bounded by the CLI's own timeout
    const closed = await freePort();
    const mongoDown = await cli(['org', 'list'], { env: { MONGO_URL: `mongodb://127.0.0.1:${closed}/connect` } });
    expectError(mongoDown, 'unavailable', 1, new RegExp(`MongoDB at mongodb://127.0.0.1:${closed}/connect did not answer within 3 s`));
    expect(mongoDown.stderr).not.toMatch(/MongooseServerSelectionError|\n\s+at /);
    expectError(await cli(['deliveries', 'replay', '--all-failed'], { env: { REDIS_URL: `redis://127.0.0.1:${closed}` } }), 'unavailable', 1, /Redis at redis:\/\/127.0.0.1:\d+ did not answer|Redis at/);

    // not_found (exit 1)
    expectError(await cli(['client', 'create', '--org', 'nope', '--jwks-url', 'https://ehr.example.com/jwks']), 'not_found', 1, /No organization nope/);
    expectError(await cli(['client', 'list', '--org', 'nope']), 'not_found', 1, /No organization nope/);
    expectError(await cli(['client', 'enable', 'nope']), 'not_found', 1, /No OAuth client nope/);
    expectError(await cli(['user', 'get', '--org', 'nope', '--external-provider-id', 'x']), 'not_found', 1);

    // conflict (exit 1): a delivered delivery cannot be replayed
    const delivered = await api.models.Delivery.findOne({ status: 'delivered' }).lean();
    expect(delivered, 'the previous test delivered a callback').toBeTruthy();
    expectError(await cli(['deliveries', 'replay', String(delivered!._id)]), 'conflict', 1, /is delivered; only failed deliveries are replayed/);
  }, 120_000);

  it('--help, global and per command, is plain text with exit 0 (pnpm cli --help, without -s)', async () => {
    const global = await cli(['--help'], { via: 'pnpm', parse: false });
    expect(global.code).toBe(0);
    expect(global.stdout).toMatch(/^Connect Provisioning operator commands\.\n/);
    for (const c of ['org create', 'org list', 'client create', 'client list', 'client enable ID', 'client disable ID', 'user get', 'deliveries list', 'deliveries replay']) {
      expect(global.stdout).toContain(`pnpm cli ${c}`);
    }
    expect(() => JSON.parse(global.stdout)).toThrow();
    expect(global.stdout).not.toContain('\\n');

    const one = await cli(['client', 'create', '--help'], { parse: false });
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(/^usage: pnpm cli client create --org ID \(--public-key-file F \| --jwks-url U\)\n\n/);
    expect(one.stdout).toContain('- reads it from stdin');
    const noun = await cli(['help', 'client'], { parse: false });
    expect(noun.code).toBe(0);
    expect(noun.stdout).toContain('usage: pnpm cli client enable ID');
    expect(noun.stdout).toContain('usage: pnpm cli client list [--org ID]');
  }, 60_000);

  it('without MONGO_URL it reads the settings `pnpm stack` wrote to $STACK_DIR/env, and says so on stderr', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cli-stack-'));
    writeFileSync(join(dir, 'env'), `MONGO_URL='${api.env.MONGO_URL}'\nPUBLIC_BASE_URL='http://localhost:9999'\nQUEUE_PREFIX='${api.env.QUEUE_PREFIX}'\n`);
    const org = await cli(['org', 'create', '--name', 'Stack clinic'], { env: { MONGO_URL: undefined, PUBLIC_BASE_URL: undefined, STACK_DIR: dir } });
    expect(org.code).toBe(0);
    expect(org.stderr).toContain(`MONGO_URL is not set; using MONGO_URL, PUBLIC_BASE_URL from ${join(dir, 'env')}`);
    const client = await cli(['client', 'create', '--org', org.json.id, '--jwks-url', 'https://ehr.example.com/jwks'], { env: { MONGO_URL: undefined, PUBLIC_BASE_URL: undefined, STACK_DIR: dir } });
    expect(client.json.token_url).toBe('http://localhost:9999/v1/connect/server/oauth/token');
    // An explicit MONGO_URL wins and the file is not read at all.
    const explicit = await cli(['org', 'list'], { env: { STACK_DIR: dir } });
    expect(explicit.code).toBe(0);
    expect(explicit.stderr).not.toContain('stack');
  }, 60_000);
});
