/**
 * `pnpm cli targets resync NAME` stopped by a signal (README, docs/operations.md: it stops after the
 * batch in progress and prints this run's counts with `"interrupted": true`, exit 130): SIGTERM as
 * well as SIGINT (pnpm forwards Ctrl-C to the child as SIGINT and then SIGTERM), a second signal
 * while stopping, and a signal during start-up, before the walk began. Always one JSON document
 * on stdout. The CLI as a child process over FerretDB and Redis; no worker runs, so the resync
 * jobs stay waiting and `--max-waiting 1` holds the walk after its first batch until it is stopped.
 */
import { spawn } from 'node:child_process';
import { createServer, Socket, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { collectionOf, resyncCursorId } from '@connect/shared';
import { REPO_ROOT } from '@connect/local-services';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { nodeArgsOf } from '../support/entry-points.ts';

vi.setConfig({ testTimeout: 120_000 });

const TARGET = 'late';
let api: TestApi;
let receiver: Receiver;

interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * The CLI as its own process; `stderrShows` resolves once its stderr matches (or the process ended).
 * `viaPnpm`: `pnpm cli ...` as an operator types it, pnpm leading a process group of its own, so
 * `killGroup` is a terminal's Ctrl-C (the group gets it, and pnpm forwards it to the CLI).
 */
function startCli(args: string[], env: Record<string, string> = {}, viaPnpm = false) {
  const [command, argv] = viaPnpm ? ['pnpm', ['cli', ...args]] : [process.execPath, [...nodeArgsOf('cli'), ...args]];
  const child = spawn(command as string, argv as string[], { cwd: REPO_ROOT, env: { ...process.env, ...api.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: viaPnpm });
  let stdout = '';
  let stderr = '';
  const watchers: { re: RegExp; resolve: () => void }[] = [];
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of watchers) if (w.re.test(stderr)) w.resolve();
  });
  const finished = new Promise<Finished>((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return {
    finished,
    kill: (signal: NodeJS.Signals) => child.kill(signal),
    killGroup: (signal: NodeJS.Signals) => process.kill(-child.pid!, signal),
    stderrShows: (re: RegExp) => Promise.race([new Promise<void>((resolve) => (re.test(stderr) ? resolve() : watchers.push({ re, resolve }))), finished.then(() => undefined)]),
  };
}

/** The one JSON document of a finished run (the assertion fails with what was printed otherwise). */
function documentOf(run: Finished): unknown {
  expect(run.signal, `ended by ${run.signal}; stdout: ${JSON.stringify(run.stdout)}; stderr: ${run.stderr}`).toBeNull();
  expect(() => JSON.parse(run.stdout), `stdout: ${JSON.stringify(run.stdout)}`).not.toThrow();
  return JSON.parse(run.stdout);
}

/** An organization of its own with `n` users: each test has its own resync cursor. */
async function orgWithUsers(n: number): Promise<string> {
  const clinic = await registerTestClient(api.models);
  const token = await getToken(api, clinic);
  for (let i = 0; i < n; i++) {
    const id = `resync-signal-${clinic.organization._id.slice(0, 8)}-${i}`;
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  }
  return clinic.organization._id;
}

const resyncArgs = (org: string) => ['targets', 'resync', TARGET, '--org', org, '--batch-size', '1', '--max-waiting', '1'];
const cursorOf = (org: string) => collectionOf(api.models.RelayCursor).findOne({ _id: resyncCursorId(TARGET, org, false) });

/**
 * A TCP gate in front of Redis (listen(0)): it accepts connections and holds their bytes until
 * `open()`, then passes everything both ways. `connected` resolves at the first connection: the
 * CLI is then inside the command, waiting for Redis, before the walk began.
 */
async function redisGate(redisUrl: string) {
  const upstreamPort = Number(new URL(redisUrl).port);
  const held: Socket[] = [];
  const all = new Set<Socket>();
  let isOpen = false;
  let seen: () => void = () => undefined;
  const connected = new Promise<void>((resolve) => (seen = resolve));
  const pass = (client: Socket) => {
    const upstream = new Socket();
    all.add(upstream);
    upstream.on('error', () => client.destroy());
    upstream.connect(upstreamPort, '127.0.0.1', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  };
  const server = createServer((client) => {
    all.add(client);
    client.on('error', () => undefined);
    client.pause();
    seen();
    if (isOpen) pass(client);
    else held.push(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(redisUrl);
  url.port = String((server.address() as AddressInfo).port);
  return {
    url: url.toString(),
    connected,
    open: () => {
      isOpen = true;
      for (const c of held.splice(0)) pass(c);
    },
    close: async () => {
      for (const s of all) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

beforeAll(async () => {
  receiver = await startReceiver();
  api = await startTestApi({ label: 'cli-resync-signals', env: { DOWNSTREAM_TARGETS: JSON.stringify([{ name: TARGET, url: receiver.url, secrets: ['late-secret'] }]) } });
});
afterAll(async () => {
  await api?.close();
  await receiver?.close();
});

describe('targets resync stopped by a signal: the counts with "interrupted": true, exit 130, one JSON document', () => {
  it('SIGTERM after the first batch (what pnpm sends after forwarding Ctrl-C)', async () => {
    const org = await orgWithUsers(3);
    const run = startCli(resyncArgs(org));
    await run.stderrShows(/"progress"/);
    run.kill('SIGTERM');
    const done = await run.finished;
    expect(documentOf(done)).toEqual({ target: TARGET, users_scanned: 1, enqueued: 1, skipped: 0, interrupted: true });
    expect(done.code).toBe(130);
    expect(done.stderr).toContain('interrupted: stopping after the batch in progress');
    // The position of the batch it finished is stored: the same command continues after it.
    expect(await cursorOf(org)).toMatchObject({ scanned: 1 });
  });

  it('SIGINT followed at once by SIGTERM: the second signal is the same request, not a kill', async () => {
    const org = await orgWithUsers(3);
    const run = startCli(resyncArgs(org));
    await run.stderrShows(/"progress"/);
    run.kill('SIGINT');
    run.kill('SIGTERM');
    const done = await run.finished;
    expect(documentOf(done)).toEqual({ target: TARGET, users_scanned: 1, enqueued: 1, skipped: 0, interrupted: true });
    expect(done.code).toBe(130);
  });

  it('Ctrl-C on `pnpm cli` (SIGINT to the process group): the same document on stdout', async () => {
    const org = await orgWithUsers(3);
    const run = startCli(resyncArgs(org), {}, true);
    await run.stderrShows(/"progress"/);
    run.killGroup('SIGINT');
    const done = await run.finished;
    // pnpm, itself interrupted, ends by SIGINT once the CLI has: a shell's $? reads 130 either way.
    expect(done.code === 130 || done.signal === 'SIGINT', `code ${done.code}, signal ${done.signal}`).toBe(true);
    expect(JSON.parse(done.stdout), `stdout: ${JSON.stringify(done.stdout)}; stderr: ${done.stderr}`).toEqual({ target: TARGET, users_scanned: 1, enqueued: 1, skipped: 0, interrupted: true });
  });

  it('a signal during start-up (still connecting to Redis): nothing enqueued, zero counts, interrupted', async () => {
    const org = await orgWithUsers(2);
    const gate = await redisGate(api.env.REDIS_URL!);
    try {
      const run = startCli(resyncArgs(org), { REDIS_URL: gate.url });
      await gate.connected;
      run.kill('SIGINT');
      // Redis answers once the CLI has taken the signal in (or has ended): within its 2 s connect bound.
      await run.stderrShows(/interrupted/);
      gate.open();
      const done = await run.finished;
      expect(documentOf(done)).toEqual({ target: TARGET, users_scanned: 0, enqueued: 0, skipped: 0, interrupted: true });
      expect(done.code).toBe(130);
      expect(await cursorOf(org)).toBeNull();
    } finally {
      await gate.close();
    }
  });
});
