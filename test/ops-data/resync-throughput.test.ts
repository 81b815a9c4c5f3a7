/**
 * Resync throughput: users per second brought up to date on one new target,
 * with live updates going on. A measurement, not an assertion on speed: it runs
 * only when RESYNC_THROUGHPUT_USERS is set (e.g. 5000), and prints the figure.
 *   RESYNC_THROUGHPUT_USERS=5000 pnpm vitest run test/ops-data/resync-throughput.test.ts
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { collectionOf, syncStateIdOf } from '@connect/shared';
import { getToken, postUser as postOnce, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { REPO_ROOT } from '@connect/local-services';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
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

const USERS = Number(process.env.RESYNC_THROUGHPUT_USERS ?? 0);
if (!USERS) console.log('[resync throughput] not measured: set RESYNC_THROUGHPUT_USERS=<users> to run it (it takes minutes)');

let api: TestApi | undefined;
let worker: TestWorker | undefined;
let receiver: Receiver | undefined;
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe.runIf(USERS > 0)('targets resync throughput', () => {
  it(`${USERS} users to one new target with live updates on`, async () => {
    receiver = await startReceiver();
    api = await startTestApi({ label: 'resync-tp', env: { RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0', DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'fresh', url: receiver.url, secrets: ['s'] }]) } });
    worker = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: '[]' });
    const token = await getToken(api, await registerTestClient(api.models));
    const ids = Array.from({ length: USERS }, (_, i) => `tp-${i}-${randomUUID().slice(0, 6)}`);
    const seedStart = Date.now();
    let next = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < USERS) {
        const id = ids[next++]!;
        const half = next % 2 === 0;
        expect((await postUser(api!, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
        // Half of them updated once: version 2, so the target gets user.created then user.updated.
        if (half) expect((await postUser(api!, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
      }
    }));
    console.log(`[resync throughput] seeded ${USERS} users in ${((Date.now() - seedStart) / 1000).toFixed(0)} s`);
    await eventually(async () => Object.values(await worker!.deps.eventsQueue.getJobCounts('waiting', 'active', 'delayed')).every((n) => n === 0), 600_000, 1000);
    await worker.close();
    worker = await startTestWorker(api.env);

    // Live traffic: about 5 updates a second for as long as the resync runs.
    let live = true;
    let liveCount = 0;
    const liveLoop = (async () => {
      while (live) {
        const id = ids[Math.floor(Math.random() * USERS)]!;
        await postUser(api!, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'GERMAN_DE', specialty: { kind: 'OTHER', other_specialty_name: `l${liveCount}` } } });
        liveCount++;
        await new Promise((r) => setTimeout(r, 200));
      }
    })();

    const started = Date.now();
    const cli = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [...nodeArgsOf('cli'), 'targets', 'resync', 'fresh'], { cwd: REPO_ROOT, env: { ...process.env, ...api!.env }, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => resolve({ code, out }));
    });
    expect(cli.code).toBe(0);
    const enqueuedAfter = (Date.now() - started) / 1000;
    const Sync = collectionOf(api.models.SyncState);
    await eventually(async () => (await Sync.countDocuments({ target: 'fresh', status: 'delivered' })) >= USERS, 3_600_000, 2000);
    live = false;
    await liveLoop;
    // Everyone at the current version (live updates included) before the clock stops.
    await eventually(async () => {
      const users = await collectionOf(api!.models.ProviderUser).find({}, { projection: { version: 1 } }).toArray();
      const syncs = new Map((await Sync.find({ target: 'fresh' }).toArray()).map((s) => [s._id, s.delivered_version]));
      return users.every((u) => syncs.get(syncStateIdOf(u._id.toString(), 'fresh')) === u.version);
    }, 600_000, 2000);
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `[resync throughput] ${USERS} users (half at version 2) to one target, ${liveCount} live updates meanwhile: ` +
        `enqueued in ${enqueuedAfter.toFixed(0)} s, all delivered in ${seconds.toFixed(0)} s = ${(USERS / seconds).toFixed(1)} users/s; ` +
        `${receiver.accepted().length} callbacks accepted; CLI said ${cli.out.replace(/\s+/g, ' ')}`,
    );
  }, 3_600_000);
});
