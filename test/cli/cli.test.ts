import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, REPO_ROOT } from '@connect/local-services';
import { getUser, http, postUser, registerTestClient, rsaKeyPair, signAssertion, startTestApi, type TestApi } from '../support/harness.ts';
import { registerClient } from '@connect/shared';
import { COMMANDS } from '@connect/cli/src/commands.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { silentServer } from '../support/silent-server.ts';
import { nodeArgsOf } from '../support/entry-points.ts';

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
 * person types it, without -s; the default runs the CLI's entry point directly (its bundle:
 * test/support/entry-points.ts), several times faster.
 */
function cli(args: string[], o: { via?: 'pnpm'; env?: Record<string, string | undefined>; stdin?: string; parse?: false } = {}): Promise<CliRun> {
  const [cmd, argv] = o.via === 'pnpm' ? ['pnpm', ['cli', ...args]] : [process.execPath, [...nodeArgsOf('cli'), ...args]];
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

/** The CLI run with how long it took, start-up included (milliseconds). */
async function timed(args: string[], env: Record<string, string | undefined> = {}): Promise<CliRun & { ms: number }> {
  const start = performance.now();
  const run = await cli(args, { env });
  return { ...run, ms: performance.now() - start };
}

function expectError(run: CliRun, kind: string, code: number, message?: RegExp): void {
  expect(run.json, run.stdout).toEqual({ error: expect.objectContaining({ kind, message: expect.any(String) }) });
  if (message) expect(run.json.error.message).toMatch(message);
  expect(run.code).toBe(code);
}

type CliArgs = Parameters<typeof cli>;

/** The run's Redis URL with some parts changed. */
function redisUrlWith(parts: Partial<Pick<URL, 'pathname' | 'username' | 'password'>>): string {
  return Object.assign(new URL(api.env.REDIS_URL!), parts).toString();
}

/**
 * Runs independent CLI invocations a few at a time (each is a process start, most of a
 * check's time) and answers in the order given.
 */
async function cliAll(runs: CliArgs[], inFlight = 4): Promise<CliRun[]> {
  const out: CliRun[] = new Array(runs.length);
  let next = 0;
  const lane = async () => {
    while (next < runs.length) {
      const i = next++;
      out[i] = await cli(...runs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, runs.length) }, lane));
  return out;
}

interface ErrorCase {
  args: string[];
  opts?: CliArgs[1];
  kind: string;
  code: number;
  message?: RegExp;
}

/** `expectError` for each case, the commands run side by side (they share no state). */
async function expectErrors(cases: ErrorCase[]): Promise<CliRun[]> {
  const runs = await cliAll(cases.map((c) => [c.args, c.opts ?? {}]));
  cases.forEach((c, i) => {
    const run = runs[i]!;
    const label = `pnpm cli ${c.args.join(' ')} printed ${run.stdout.trim()} (exit ${run.code})`;
    expect(run.json, label).toEqual({ error: expect.objectContaining({ kind: c.kind, message: expect.any(String) }) });
    if (c.message) expect(run.json.error.message, label).toMatch(c.message);
    expect(run.code, label).toBe(c.code);
  });
  return runs;
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

/** The commands SPEC §3 names: the CLI's table must hold at least these. */
const SPEC_COMMANDS = [
  'org create', 'org list', 'client create', 'client list', 'client enable', 'client disable', 'user get',
  'deliveries list', 'deliveries show', 'deliveries replay', 'deliveries recover',
  'targets list', 'targets pause', 'targets resume', 'targets resync',
];

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
    // Disabling again changes nothing: disabled_at stays the first time, and the answer says so.
    const again = await cli(['client', 'disable', clientId]);
    expect(again.code).toBe(0);
    expect(again.json).toEqual({ client_id: clientId, enabled: false, disabled_at: disabled.json.disabled_at, already_disabled: true });
    const stored = await api.models.OAuthClient.findById(clientId).lean();
    expect(stored!.disabled_at!.toISOString()).toBe(disabled.json.disabled_at);

    const enabled = await cli(['client', 'enable', clientId]);
    expect(enabled.code).toBe(0);
    expect(enabled.json).toEqual({ client_id: clientId, enabled: true, disabled_at: null });
    // As disable: a second enable changes nothing and says so.
    expect((await cli(['client', 'enable', clientId])).json).toEqual({ client_id: clientId, enabled: true, disabled_at: null, already_enabled: true });
    await eventually(async () => (await getUser(api, token, id)).status === 200, 10_000);
  }, 120_000);

  it('org create --api-version pins the organization (its POST /users then answers as that version: 404 under 2026-02-13), without it the latest dated version; client list without --org lists every organization\'s clients; client create wants exactly one key option', async () => {
    const pinned = await cli(['org', 'create', '--name', 'Pinned clinic', '--api-version', '2026-02-13']);
    expect(pinned.json).toMatchObject({ name: 'Pinned clinic', api_version: '2026-02-13' });
    const plain = await cli(['org', 'create', '--name', 'Plain clinic']);
    expect(plain.json).toMatchObject({ name: 'Plain clinic', api_version: '2026-03-23' });
    const clientIds: string[] = [];
    for (const org of [pinned.json, plain.json]) {
      const { privateKey, publicKeyPem } = rsaKeyPair();
      const client = await cli(['client', 'create', '--org', org.id, '--public-key-file', '-'], { stdin: publicKeyPem });
      clientIds.push(client.json.client_id);
      const token = await tokenFor(client.json.client_id, privateKey);
      const id = randomUUID();
      // No version asked: the organization's pinned one applies.
      const res = await http(`${api.baseUrl}/users`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id }) });
      expect(res.status, org.name).toBe(org.api_version === '2026-02-13' ? 404 : 201);
      expect(res.headers.get('x-nabla-api-version')).toBe(org.api_version);
    }
    const all = await cli(['client', 'list']);
    expect(all.code).toBe(0);
    expect(all.json.clients.map((c: { client_id: string }) => c.client_id)).toEqual(expect.arrayContaining(clientIds));
    expect(all.json.clients.filter((c: { client_id: string }) => clientIds.includes(c.client_id)).map((c: { organization_id: string }) => c.organization_id).sort()).toEqual([pinned.json.id, plain.json.id].sort());
    for (const args of [['--org', plain.json.id], ['--org', plain.json.id, '--public-key-file', '-', '--jwks-url', 'https://keys.example.com/jwks.json']]) {
      const refused = await cli(['client', 'create', ...args], { stdin: rsaKeyPair().publicKeyPem });
      expect(refused.code, args.join(' ')).toBe(2);
      expect(refused.json.error.kind).toBe('usage');
    }
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
    // The organization is pinned to a dated version: the API's document, plus status and deactivated_at.
    expect(fromCli.json).toEqual({ ...fromApi, status: 'active', deactivated_at: null });
  }, 120_000);

  it('user get shows status and deactivated_at of a deactivated user, though the organization is pinned to a dated version that leaves them out', async () => {
    const clinic = await registerTestClient(api.models, { apiVersion: '2026-03-23' });
    const token = await tokenFor(clinic.client._id, clinic.privateKey);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const deactivated = await http(`${api.baseUrl}/users/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, 'x-nabla-api-version': 'x-nabla-next' } });
    expect(deactivated.status, deactivated.text).toBe(200);
    const fromApi = await http(`${api.baseUrl}/users/${id}`, { headers: { authorization: `Bearer ${token}` } });
    expect(fromApi.body).not.toHaveProperty('status');

    const fromCli = await cli(['user', 'get', '--org', clinic.organization._id, '--external-provider-id', id]);
    expect(fromCli.code).toBe(0);
    expect(fromCli.json).toMatchObject({ external_provider_id: id, status: 'deactivated', deactivated_at: expect.any(String) });
    expect(Date.parse(fromCli.json.deactivated_at)).toBeGreaterThan(0);
    const { status: _status, deactivated_at: _at, sync: _cliSync, ...rest } = fromCli.json;
    const { sync: _apiSync, ...apiRest } = fromApi.body;
    expect(rest).toEqual(apiRest);
    const help = await cli(['user', 'get', '--help'], { parse: false });
    expect(help.stdout).toMatch(/status and deactivated_at/);
  }, 120_000);

  it('each error is {"error": {"kind", "message"}} on stdout with its exit code: usage, configuration, unavailable, not_found, conflict', async () => {
    // usage (exit 2): unknown command, missing option, unknown option, bad value, stray argument
    expectError(await cli(['frobnicate'], { via: 'pnpm' }), 'usage', 2, /unknown command "frobnicate"/);
    const closed = await freePort();
    const [noUrl, badUrl, mongoDown] = (
      await expectErrors([
        // configuration (exit 2): no MONGO_URL and no stack file; a malformed value
        { args: ['org', 'list'], opts: { env: { MONGO_URL: undefined } }, kind: 'configuration', code: 2, message: /^MONGO_URL: is required/ },
        // An explicit MONGO_URL that is wrong: the hint about `pnpm stack` would be beside the point.
        { args: ['org', 'list'], opts: { env: { MONGO_URL: 'http://nope' } }, kind: 'configuration', code: 2, message: /MONGO_URL/ },
        // unavailable (exit 1): nothing listens where MONGO_URL / REDIS_URL point; bounded by the CLI's own timeout
        {
          args: ['org', 'list'],
          opts: { env: { MONGO_URL: `mongodb://127.0.0.1:${closed}/connect` } },
          kind: 'unavailable',
          code: 1,
          message: new RegExp(`MongoDB at mongodb://127.0.0.1:${closed}/connect is unavailable: connect ECONNREFUSED`),
        },
        { args: ['deliveries', 'replay', '--all-failed'], opts: { env: { REDIS_URL: `redis://127.0.0.1:${closed}` } }, kind: 'unavailable', code: 1, message: /Redis at redis:\/\/127.0.0.1:\d+ did not answer|Redis at/ },
        // A secret in the connection string's query is not quoted (a security audit read a TLS key's password there).
        {
          args: ['org', 'list'],
          opts: { env: { MONGO_URL: `mongodb://127.0.0.1:${closed}/connect?tls=true&tlsCertificateKeyFilePassword=KEYPW421` } },
          kind: 'unavailable',
          code: 1,
          message: new RegExp(`^MongoDB at mongodb://127\\.0\\.0\\.1:${closed}/connect is unavailable: (?!.*KEYPW)`),
        },
        // A flag is not part of the command's name.
        { args: ['bogus', '--help'], kind: 'usage', code: 2, message: /^unknown command "bogus"; / },
        { args: ['bogus', '--status', 'failed'], kind: 'usage', code: 2, message: /^unknown command "bogus"; / },
        { args: [], kind: 'usage', code: 2, message: /no command/ },
        { args: ['org', 'create'], kind: 'usage', code: 2, message: /--name is required/ },
        { args: ['org', 'create', '--name='], kind: 'usage', code: 2, message: /^--name is empty: give it a value$/ },
        { args: ['org', 'create', '--name', '  '], kind: 'usage', code: 2, message: /^--name is empty: give it a value$/ },
        { args: ['org', 'list', '--bogus'], kind: 'usage', code: 2, message: /--bogus/ },
        { args: ['org', 'create', '--name', 'x', '--api-version', '1999-01-01'], kind: 'usage', code: 2, message: /--api-version must be one of 2026-02-13, 2026-03-23, x-nabla-next, got "1999-01-01"/ },
        { args: ['client', 'disable'], kind: 'usage', code: 2, message: /client id is required/ },
        { args: ['client', 'disable', 'a', 'b'], kind: 'usage', code: 2, message: /unexpected argument "b"/ },
        { args: ['client', 'create', '--org', 'x', '--public-key-file', '/no/such/file.pem'], kind: 'usage', code: 2, message: /cannot read --public-key-file/ },
        // not_found (exit 1)
        { args: ['client', 'create', '--org', 'nope', '--jwks-url', 'https://ehr.example.com/jwks'], kind: 'not_found', code: 1, message: /No organization nope/ },
        { args: ['client', 'list', '--org', 'nope'], kind: 'not_found', code: 1, message: /No organization nope/ },
        { args: ['client', 'enable', 'nope'], kind: 'not_found', code: 1, message: /No OAuth client nope/ },
        { args: ['user', 'get', '--org', 'nope', '--external-provider-id', 'x'], kind: 'not_found', code: 1 },
        { args: ['targets', 'resync', 'dictation', '--org', 'nope'], kind: 'not_found', code: 1, message: /No organization nope/ },
        // configuration (exit 2): Redis answers, but refuses what REDIS_URL asks: a database it lacks, a user it does not know.
        { args: ['targets', 'list'], opts: { env: { REDIS_URL: redisUrlWith({ pathname: '/99' }) } }, kind: 'configuration', code: 2, message: /^REDIS_URL: Redis at .* has no database of that number/ },
        { args: ['targets', 'list'], opts: { env: { REDIS_URL: redisUrlWith({ username: 'nobody', password: 'wrong' }) } }, kind: 'configuration', code: 2, message: /^REDIS_URL: Redis at .* refused the credentials: WRONGPASS/ },
      ])
    ).slice(0, 3);
    expect(noUrl!.json.error.variable).toBe('MONGO_URL');
    expect(noUrl!.json.error.message).toContain('(or start `pnpm stack`');
    expect(badUrl!.json.error.message).not.toContain('pnpm stack');
    expect(mongoDown!.stderr).not.toMatch(/MongooseServerSelectionError|\n\s+at /);

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

  it('--help of EVERY command in the CLI\'s table (targets *, deliveries show and recover included) is plain text naming its usage, exit 0, and the global --help names each', async () => {
    expect(COMMANDS.map((c) => c.name)).toEqual(expect.arrayContaining(SPEC_COMMANDS));
    const usage = (c: { name: string; synopsis: string }) => `pnpm cli ${c.name}${c.synopsis ? ` ${c.synopsis}` : ''}`;

    const global = await cli(['--help'], { parse: false });
    expect(global.code).toBe(0);
    expect(() => JSON.parse(global.stdout)).toThrow();
    for (const c of COMMANDS) expect(global.stdout, c.name).toContain(`\n  ${usage(c)}\n`);

    // Help needs no settings: no MONGO_URL, no REDIS_URL.
    const none = { MONGO_URL: undefined, REDIS_URL: undefined };
    const helps = await cliAll(COMMANDS.map((c) => [[...c.name.split(' '), '--help'], { parse: false, env: none }]));
    for (const [i, c] of COMMANDS.entries()) {
      const help = helps[i]!;
      expect(help.code, `${c.name} --help: ${help.stdout}`).toBe(0);
      expect(help.stdout.startsWith(`usage: ${usage(c)}\n\n`), `${c.name} --help printed: ${help.stdout}`).toBe(true);
      expect(help.stdout.trim().length).toBeGreaterThan(`usage: ${usage(c)}`.length);
      expect(() => JSON.parse(help.stdout), `${c.name} --help is JSON`).toThrow();
      expect(help.stdout).not.toContain('"error"');
      expect(help.stderr, c.name).toBe('');
    }
  }, 300_000);

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
    // A REDIS_URL from the environment beside the file's MONGO_URL: its error does not blame the stack's file.
    const closed = await freePort();
    const redisDown = await cli(['targets', 'list'], { env: { MONGO_URL: undefined, REDIS_URL: `redis://127.0.0.1:${closed}`, STACK_DIR: dir } });
    expect(redisDown.json.error.kind).toBe('unavailable');
    expect(redisDown.json.error.message).not.toContain('pnpm stack');
  }, 60_000);

  it('client create refuses a private key, anything but a PEM public key, a plain-http JWKS URL off loopback and one with credentials; nothing is stored', async () => {
    const org = await cli(['org', 'create', '--name', 'Key checks']);
    const orgId = org.json.id as string;
    const dir = mkdtempSync(join(tmpdir(), 'cli-keys-'));
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const privateKeys = {
      'pkcs8.pem': rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
      'pkcs1.pem': rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
      'ec.pem': ec.privateKey.export({ type: 'sec1', format: 'pem' }).toString(),
      // A file with both halves: the private one would be stored with the public one.
      'both.pem': `${rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString()}${rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()}`,
    };
    for (const [name, pem] of Object.entries(privateKeys)) writeFileSync(join(dir, name), pem);
    // Not a public key PEM: said in words, not OpenSSL's decoder error.
    writeFileSync(join(dir, 'notes.txt'), 'hello, this is not a key\n');
    writeFileSync(join(dir, 'mangled.pem'), '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n');
    // Public keys no assertion could ever be verified with (RS256 needs 2048 bits, ES256 P-256).
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const create = ['client', 'create', '--org', orgId];
    const refusals = await expectErrors([
      ...Object.keys(privateKeys).map((name) => ({ args: [...create, '--public-key-file', join(dir, name)], kind: 'usage', code: 2, message: /is a private key; give the public key instead \(the EHR keeps its private key to itself\)/ })),
      // The same from stdin, and with no configuration at all: the file is an argument, checked first.
      { args: [...create, '--public-key-file', '-'], opts: { stdin: privateKeys['pkcs8.pem'] }, kind: 'usage', code: 2, message: /--public-key-file - is a private key/ },
      { args: [...create, '--public-key-file', join(dir, 'pkcs8.pem')], opts: { env: { MONGO_URL: undefined } }, kind: 'usage', code: 2, message: /is a private key/ },
      { args: [...create, '--public-key-file', join(dir, 'notes.txt')], kind: 'usage', code: 2, message: /is not a PEM public key; expected text starting with -----BEGIN PUBLIC KEY-----/ },
      { args: [...create, '--public-key-file', join(dir, 'mangled.pem')], kind: 'usage', code: 2, message: /is not a valid PEM public key/ },
      { args: [...create, '--public-key-file', '-'], opts: { stdin: weak }, kind: 'usage', code: 2, message: /--public-key-file - is an RSA key of 1024 bits; assertions need one of at least 2048 bits/ },
      { args: [...create, '--public-key-file', '-'], opts: { stdin: p384 }, kind: 'usage', code: 2, message: /is an EC key on secp384r1; assertions are verified with ES256/ },
      // JWKS URLs: https, or plain http on loopback only; never user:password@ (and the credential is not echoed).
      { args: [...create, '--jwks-url', 'http://ehr.example.com/jwks.json'], kind: 'usage', code: 2, message: /--jwks-url must be an https URL \(plain http only for localhost, 127\.0\.0\.1 or \[::1\]\)/ },
      { args: [...create, '--jwks-url', 'https://ehr:s3cr3t-pw@ehr.example.com/jwks.json'], kind: 'usage', code: 2, message: /--jwks-url must not carry credentials/ },
    ]);
    Object.values(privateKeys).forEach((pem, i) => expect(refusals[i]!.stdout).not.toContain(pem.split('\n')[1]!));
    const [notPem, withCredentials] = [refusals.at(-6)!, refusals.at(-1)!];
    expect(notPem.json.error.message).not.toMatch(/DECODER|error:/);
    expect(withCredentials.stdout + withCredentials.stderr).not.toContain('s3cr3t-pw');
    expect(await api.models.OAuthClient.countDocuments({ organization_id: orgId })).toBe(0);

    const jwksUrls = ['http://127.0.0.1:9/jwks.json', 'http://localhost:9/jwks.json', 'http://[::1]:9/jwks.json', 'https://ehr.example.com/jwks.json'];
    const publicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const pkcs1Public = rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString();
    const accepted = await cliAll([
      ...jwksUrls.map((url): CliArgs => [[...create, '--jwks-url', url]]),
      ...[publicPem, pkcs1Public].map((pem): CliArgs => [[...create, '--public-key-file', '-'], { stdin: pem }]),
    ]);
    for (const ok of accepted) expect(ok.code, ok.stdout).toBe(0);
    jwksUrls.forEach((url, i) => expect(accepted[i]!.json.key).toEqual({ jwks_url: url }));
    const stored = await api.models.OAuthClient.find({ organization_id: orgId }).lean();
    expect(stored).toHaveLength(6);
    expect(stored.map((c) => c.public_key_pem ?? '').join('')).not.toContain('PRIVATE KEY');

    // The same rules hold for every caller of registerClient, not only the CLI.
    await expect(registerClient(api.models, { organizationId: orgId, publicKeyPem: privateKeys['pkcs8.pem'] })).rejects.toThrow(/private key/);
    await expect(registerClient(api.models, { organizationId: orgId, jwksUrl: 'http://ehr.example.com/jwks.json' })).rejects.toThrow(/https/);
    await expect(registerClient(api.models, { organizationId: orgId, jwksUrl: 'https://u:p@ehr.example.com/jwks.json' })).rejects.toThrow(/credentials/);
    expect(await api.models.OAuthClient.countDocuments({ organization_id: orgId })).toBe(6);

    // A client stored with a credential in its URL before these rules: listed without it.
    await api.models.OAuthClient.collection.insertOne({ _id: randomUUID() as never, organization_id: orgId, public_key_pem: null, jwks_url: 'https://ehr:s3cr3t-pw@legacy.example.com/jwks.json', enabled: true, created_at: new Date(), disabled_at: null });
    const listed = await cli(['client', 'list', '--org', orgId]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).not.toContain('s3cr3t-pw');
    expect(listed.json.clients.map((c: { key: unknown }) => c.key)).toContainEqual({ jwks_url: 'https://***@legacy.example.com/jwks.json' });
    // Nor with a token in its query (it was printed whole).
    const withToken = await cli(['client', 'create', '--org', orgId, '--jwks-url', 'https://ehr.example.com/jwks?token=abc123secret']);
    expect(withToken.code).toBe(0);
    expect(withToken.stdout).not.toContain('abc123secret');
    expect(withToken.json.key).toEqual({ jwks_url: 'https://ehr.example.com/jwks' });
    expect((await cli(['client', 'list', '--org', orgId])).stdout).not.toContain('abc123secret');
  }, 120_000);

  it('arguments are checked before anything else: an empty value, an option given twice, a date that does not exist, a value past 4096 characters, a name with a control character; a usage error comes before a missing configuration', async () => {
    const none = { MONGO_URL: undefined, REDIS_URL: undefined };
    await expectErrors([
      { args: ['org', 'create', '--name', 'x', '--api-version', ''], kind: 'usage', code: 2, message: /--api-version must be one of 2026-02-13, 2026-03-23, x-nabla-next, got ""/ },
      { args: ['client', 'list', '--org', ''], kind: 'usage', code: 2, message: /--org needs a value/ },
      { args: ['deliveries', 'list', '--status', 'failed', '--status', 'pending'], kind: 'usage', code: 2, message: /--status is given twice/ },
      { args: ['deliveries', 'list', '--status=failed', '--status', 'failed'], kind: 'usage', code: 2, message: /--status is given twice/ },
      { args: ['targets', 'resync', 'dictation', '--force', '--force'], kind: 'usage', code: 2, message: /--force is given twice/ },
      // Neither stored nor echoed whole in a not_found message.
      { args: ['client', 'list', '--org', 'o'.repeat(120_000)], kind: 'usage', code: 2, message: /^--org is 120000 characters long; at most 4096 are accepted$/ },
      { args: ['org', 'create', '--name', 'a\tb\u0001c'], kind: 'usage', code: 2, message: /^--name must not contain control characters/ },
      { args: ['deliveries', 'recover', '--target', 'dictation', '--since', '2026-02-30T00:00:00Z'], kind: 'usage', code: 2, message: /--since: there is no such date \(2026-02 has 28 days\)/ },
      { args: ['deliveries', 'recover', '--target', 'dictation', '--since', '2026-13-01T00:00:00Z'], kind: 'usage', code: 2, message: /--since: there is no month 13/ },
      { args: ['deliveries', 'recover', '--target', 'dictation', '--since', '2026-03-01T00:00:00Z', '--until', '2026-03-01T24:00:00Z'], kind: 'usage', code: 2, message: /--until: there is no such time of day/ },
      // No MONGO_URL and no stack file: still the usage error, not `configuration`.
      { args: ['org', 'create'], opts: { env: none }, kind: 'usage', code: 2, message: /--name is required/ },
      { args: ['deliveries', 'list', '--status', 'exploded'], opts: { env: none }, kind: 'usage', code: 2, message: /--status must be one of/ },
      { args: ['deliveries', 'replay'], opts: { env: none }, kind: 'usage', code: 2, message: /give a delivery id or --all-failed/ },
      { args: ['org', 'create', '--name', 'x'], opts: { env: none }, kind: 'configuration', code: 2, message: /^MONGO_URL: is required/ },
    ]);
    // A leap day exists; the window is one day (an offset is applied), and holds no dead letter.
    expect((await cli(['deliveries', 'recover', '--target', 'dictation', '--since', '2024-02-29T00:00:00+01:00', '--until', '2024-02-29T23:00:00Z'])).json).toEqual({ recovered: 0 });
  }, 120_000);

  it('unavailable without waiting out a fixed timeout: a refused connection is the answer at once, a silent host is told by the early probe or the drivers\' timeout, whichever ends first (the times are printed, not asserted)', async () => {
    // Which failure ended the wait is in the message: the refusal itself ("is unavailable: connect
    // ECONNREFUSED"), not the end of the datastore timeout ("did not answer within 2 s"), which the
    // old CLI waited out (3 s) even when the connection was refused. Seconds are the benchmark's to
    // measure, not a test's (a shared machine); they are printed for the reader.
    const startup = (await timed(['org', 'list', '--bogus'])).ms;
    const closed = await freePort();
    const refused = await timed(['org', 'list'], { MONGO_URL: `mongodb://127.0.0.1:${closed}/connect` });
    expectError(refused, 'unavailable', 1, /MongoDB at .* is unavailable: connect ECONNREFUSED/);
    const redisRefused = await timed(['targets', 'list'], { REDIS_URL: `redis://127.0.0.1:${closed}` });
    expectError(redisRefused, 'unavailable', 1, /Redis at redis:\/\/127\.0\.0\.1:\d+ is unavailable: connect ECONNREFUSED/);

    // A host that accepts and stays silent: the early probe's budget (2.5 s from the command's start,
    // datastore-probe.ts) or the drivers' own bound after they load (MongoDB's connect timeout, Redis's
    // PING bound), whichever ends first; which one depends on how long the drivers took to load.
    const silent = await silentServer();
    try {
      const mongoSilent = await timed(['org', 'list'], { MONGO_URL: `mongodb://127.0.0.1:${silent.port}/connect` });
      expectError(mongoSilent, 'unavailable', 1, /MongoDB at .* is unavailable: (it accepted a connection but did not answer a hello within 2\.5 s \(timed out\)|.*timed out)/);
      const redisSilent = await timed(['targets', 'list'], { REDIS_URL: `redis://127.0.0.1:${silent.port}` });
      expectError(redisSilent, 'unavailable', 1, /Redis at redis:\/\/127\.0\.0\.1:\d+ (is unavailable: it accepted a connection but did not answer a PING within 2\.5 s \(timed out\)|did not answer within 2 s)/);
      const ms = (r: { ms: number }) => `${Math.round(r.ms)} ms`;
      console.log(
        `[cli unavailable] start-up ${ms({ ms: startup })}; MongoDB refused ${ms(refused)}, silent ${ms(mongoSilent)}; Redis refused ${ms(redisRefused)}, silent ${ms(redisSilent)} (contract: within 5 s)`,
      );
    } finally {
      await silent.close();
    }
  }, 120_000);
});
