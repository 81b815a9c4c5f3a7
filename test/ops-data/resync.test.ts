/**
 * `targets resync` against the real thing: the API and worker in this process,
 * FerretDB, Redis, receivers on real ports, and the CLI as a child process
 * exactly as `pnpm cli` runs it.
 */
import { spawn } from 'node:child_process';
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionOf, eventJobOf, resyncCursorId, syncStateIdOf, type ProviderUserDoc } from '@connect/shared';
import { getToken, postUser as postOnce, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { REPO_ROOT } from '@connect/local-services';
import { eventually, startReceiver, type ReceivedCallback, type Receiver } from '../worker/callback-receiver.ts';
import { eventsFannedOut, startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { nodeArgsOf } from '../support/entry-points.ts';

/**
 * POST /users as a well-behaved client does on this shared machine: a 503 (the
 * database did not answer in time, with Retry-After) is retried, a few times.
 */
async function postUser(...args: Parameters<typeof postOnce>): ReturnType<typeof postOnce> {
  for (let i = 0; ; i++) {
    const res = await postOnce(...args);
    if (res.status !== 503 || i === 5) return res;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const USERS = 500;
const LIVE_UPDATES = 50;
const LOCALES = ['ENGLISH_US', 'FRENCH_FR', 'GERMAN_DE', 'ITALIAN_IT'];

let api: TestApi;
let worker: TestWorker | undefined;
let fresh: Receiver; // the target added after the users exist
let wiped: Receiver; // the second one, for the interrupted run
let token: string;
const externalIds: string[] = [];

const targetsJson = (names: ('fresh' | 'wiped')[]) =>
  JSON.stringify(names.map((name) => ({ name, url: (name === 'fresh' ? fresh : wiped).url, secrets: [`${name}-secret`] })));

interface CliRun {
  code: number | null;
  json: any;
  stderr: string;
}

/** `pnpm cli ...` as a child; `onStart` gets the child (to interrupt it). */
function cli(args: string[], env: Record<string, string>, onStart?: (kill: (s: NodeJS.Signals) => void) => void): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...nodeArgsOf('cli'), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => {
      let json: any;
      try {
        json = JSON.parse(out);
      } catch {
        json = { unparsable: out };
      }
      resolve({ code, json, stderr: err });
    });
    onStart?.((s) => child.kill(s));
  });
}

function signatureVerifies(c: ReceivedCallback, secret: string): boolean {
  const expected = createHmac('sha256', secret).update(String(c.headers['x-nabla-connect-timestamp']) + c.raw).digest();
  return String(c.headers['x-nabla-connect-signature'])
    .split(',')
    .map((s) => Buffer.from(s.replace(/^sha256=/, ''), 'hex'))
    .some((sig) => sig.length === expected.length && timingSafeEqual(sig, expected));
}

async function allUsers(): Promise<ProviderUserDoc[]> {
  return collectionOf(api.models.ProviderUser).find({}).toArray() as Promise<ProviderUserDoc[]>;
}

/** Runs `n` calls of `task` with at most `width` at once. */
async function pool(n: number, width: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) await task(next++);
  }));
}

/** Every user's sync entry for `target` reads delivered at its current version. */
async function everyoneCurrent(target: string): Promise<boolean> {
  const users = await allUsers();
  const syncs = new Map((await collectionOf(api.models.SyncState).find({ target }).toArray()).map((s) => [s._id, s]));
  return users.every((u) => {
    const s = syncs.get(syncStateIdOf(u._id.toString(), target));
    return s?.status === 'delivered' && s.delivered_version === u.version && s.version === u.version;
  });
}

/** The receiver's accepted callbacks per user, in arrival order. */
function byUser(r: Receiver): Map<string, ReceivedCallback[]> {
  const map = new Map<string, ReceivedCallback[]>();
  for (const c of r.accepted().sort((a, b) => a.n - b.n)) {
    const id = c.body.data.user.external_provider_id as string;
    map.set(id, [...(map.get(id) ?? []), c]);
  }
  return map;
}

function expectNoVersionTwiceAndNeverBackwards(r: Receiver): void {
  for (const [id, calls] of byUser(r)) {
    const versions = calls.map((c) => c.body.data.version as number);
    for (let i = 1; i < versions.length; i++) expect(versions[i], `${id}: ${versions.join(',')}`).toBeGreaterThan(versions[i - 1]!);
  }
}

beforeAll(async () => {
  [fresh, wiped] = await Promise.all([startReceiver(), startReceiver()]);
  api = await startTestApi({ label: 'resync', env: { DOWNSTREAM_TARGETS: targetsJson(['fresh', 'wiped']) } });
  // The users exist before either target does: the worker that sees their events has none.
  worker = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: '[]' });
  const clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
  for (let i = 0; i < USERS; i++) externalIds.push(`rs-${i}-${randomUUID().slice(0, 8)}`);
  await pool(USERS, 12, async (i) => {
    const id = externalIds[i]!;
    const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id });
    expect(res.status).toBe(201);
    // A third of them at version 2 or 3, so a newest user.updated exists.
    for (let v = 2; v <= 1 + (i % 3 === 0 ? 2 : i % 3 === 1 ? 1 : 0); v++) {
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: LOCALES[v]! } })).status).toBe(200);
    }
  });
  // Every event fanned out (to no target) before the targets appear.
  await eventsFannedOut(worker!, 120_000);
  await worker.close();
  worker = await startTestWorker(api.env);
}, 600_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await Promise.all([fresh?.close(), wiped?.close()]);
});

describe('targets resync: a target added after the users exist', () => {
  it('gets exactly one user.created per user (original id and body), then the newest user.updated, signed, sync delivered at the current version, while live updates go on and never go backwards', async () => {
    const before = await allUsers();
    const createdBody = new Map(before.map((u) => [u.external_provider_id, u.created_event]));
    const started = Date.now();
    let liveDone = 0;
    const live = (async () => {
      for (let i = 0; i < LIVE_UPDATES; i++) {
        const id = externalIds[(i * 37) % USERS]!;
        const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: LOCALES[i % 4]!, specialty: { kind: 'OTHER', other_specialty_name: `live-${i}` } } });
        expect(res.status).toBe(200);
        liveDone++;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const run = await cli(['targets', 'resync', 'fresh', '--batch-size', '100', '--max-waiting', '150'], api.env);
    await live;
    expect(run.code, run.stderr).toBe(0);
    expect(run.json).toMatchObject({ target: 'fresh', users_scanned: USERS });
    expect(run.json.enqueued + run.json.skipped).toBe(USERS);
    expect(run.json.enqueued).toBeGreaterThan(USERS - LIVE_UPDATES - 1);
    // Non-terminal stderr: JSON progress lines, the last one done.
    const lines = run.stderr.split('\n').filter((l) => l.startsWith('{"progress"'));
    expect(JSON.parse(lines.at(-1)!).progress).toMatchObject({ target: 'fresh', scanned: USERS, done: true });
    expect(liveDone).toBe(LIVE_UPDATES);

    await eventually(() => everyoneCurrent('fresh'), 240_000, 500);
    const seconds = (Date.now() - started) / 1000;
    console.log(`[resync] ${USERS} users to one target with ${LIVE_UPDATES} live updates: ${seconds.toFixed(1)} s, ${(USERS / seconds).toFixed(0)} users/s`);

    const users = new Map((await allUsers()).map((u) => [u.external_provider_id, u]));
    const calls = byUser(fresh);
    expect(calls.size).toBe(USERS);
    for (const [id, list] of calls) {
      const user = users.get(id)!;
      const created = list.filter((c) => c.body.type === 'user.created');
      expect(created, id).toHaveLength(1);
      // The original event: its id and its body as it was at creation.
      expect(created[0]!.body.request_uuid).toBe(createdBody.get(id)!.id);
      expect(created[0]!.body.data.user).toEqual(JSON.parse(JSON.stringify(createdBody.get(id)!.data)));
      expect(created[0]!.body.data.version).toBe(1);
      expect(list[0]!.body.type).toBe('user.created');
      const last = list.at(-1)!;
      expect(last.body.data.version).toBe(user.version);
      if (user.version > 1) expect(last.body).toMatchObject({ type: 'user.updated', request_uuid: user.last_event.id });
    }
    expectNoVersionTwiceAndNeverBackwards(fresh);
    expect(fresh.accepted().every((c) => signatureVerifies(c, 'fresh-secret'))).toBe(true);
  }, 600_000);
});

describe('targets resync: interrupted half-way, then run again', () => {
  it('continues from its cursor: no (user, version) delivered twice, the final state complete; a second run without --force enqueues 0', async () => {
    const env = api.env;
    const cursorId = resyncCursorId('wiped', undefined, false);
    const Cursors = collectionOf(api.models.RelayCursor);
    // Small batches and a short queue, so the walk follows the worker and there is a middle to stop in.
    const first = await cli(['targets', 'resync', 'wiped', '--batch-size', '25', '--max-waiting', '25'], env, (kill) => {
      void eventually(async () => {
        const c = (await Cursors.findOne({ _id: cursorId })) as unknown as { scanned?: number } | null;
        return (c?.scanned ?? 0) >= USERS / 2;
      }, 240_000, 50).then(() => kill('SIGINT'));
    });
    expect(first.code, first.stderr).toBe(130);
    expect(first.json).toMatchObject({ target: 'wiped', interrupted: true });
    expect(first.json.users_scanned).toBeGreaterThanOrEqual(USERS / 2);
    expect(first.json.users_scanned).toBeLessThan(USERS);
    const saved = (await Cursors.findOne({ _id: cursorId })) as unknown as { scanned: number };
    expect(saved.scanned).toBe(first.json.users_scanned);

    const second = await cli(['targets', 'resync', 'wiped'], env);
    expect(second.code, second.stderr).toBe(0);
    // It continued after the cursor instead of starting again.
    expect(second.json.users_scanned).toBe(USERS - first.json.users_scanned);
    expect(await Cursors.findOne({ _id: cursorId })).toBeNull();

    await eventually(() => everyoneCurrent('wiped'), 240_000, 500);
    const calls = byUser(wiped);
    expect(calls.size).toBe(USERS);
    const users = new Map((await allUsers()).map((u) => [u.external_provider_id, u]));
    for (const [id, list] of calls) {
      expect(list.filter((c) => c.body.type === 'user.created'), id).toHaveLength(1);
      expect(list.at(-1)!.body.data.version).toBe(users.get(id)!.version);
    }
    expectNoVersionTwiceAndNeverBackwards(wiped);

    const third = await cli(['targets', 'resync', 'wiped'], env);
    expect(third.code, third.stderr).toBe(0);
    expect(third.json).toEqual({ target: 'wiped', users_scanned: USERS, enqueued: 0, skipped: USERS });

    // The receiver loses its data. --force sends every user again as to a new target: its
    // user.created (original id and body), then its newest event (same id) if past version 1.
    const acceptedBefore = wiped.accepted().length;
    const forced = await cli(['targets', 'resync', 'wiped', '--force', '--org', users.values().next().value!.organization_id], env);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.json).toMatchObject({ target: 'wiped', users_scanned: USERS, enqueued: USERS, skipped: 0 });
    const expected = [...users.values()].reduce((n, u) => n + (u.version > 1 ? 2 : 1), 0);
    expect(expected, 'some users are past version 1').toBeGreaterThan(USERS);
    await eventually(() => wiped.accepted().length >= acceptedBefore + expected, 240_000, 500);
    const resent = new Map<string, ReceivedCallback[]>();
    for (const c of wiped.accepted().sort((a, b) => a.n - b.n).slice(acceptedBefore)) {
      const id = c.body.data.user.external_provider_id as string;
      resent.set(id, [...(resent.get(id) ?? []), c]);
    }
    expect(resent.size).toBe(USERS);
    for (const [id, list] of resent) {
      const user = users.get(id)!;
      const { event, created } = eventJobOf(user);
      expect(list.map((c) => c.body.request_uuid), id).toEqual(user.version > 1 ? [created.id, event.id] : [event.id]);
      expect(list[0]!.body).toMatchObject({ type: 'user.created', data: { version: 1 } });
      expect(list.at(-1)!.body.data.version).toBe(user.version);
    }
  }, 600_000);

  it('names a target that is not configured as not_found, in JSON', async () => {
    const run = await cli(['targets', 'resync', 'nowhere'], api.env);
    expect(run.code).not.toBe(0);
    expect(run.json.error.kind).toBe('not_found');
  }, 60_000);
});
