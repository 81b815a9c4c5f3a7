/**
 * `targets resync` in two cases resync.test.ts (one organization, 500 users)
 * does not tell apart: `--org` with a second organization present, and a user a
 * live update brought to the new target before the resync ran. Small: a few
 * users in two organizations, the API and worker in this process, the CLI as a
 * child process exactly as `pnpm cli` runs it.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getToken, getUser, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from '../worker/callback-receiver.ts';
import { eventsFannedOut, startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { runCli } from '../support/cli-child.ts';

vi.setConfig({ testTimeout: 180_000 });

let api: TestApi;
let worker: TestWorker | undefined;
/** Resynced for organization A only. */
let scoped: Receiver;
/** Resynced for everyone, after a live update reached it first. */
let fresh: Receiver;
const orgs: Record<'A' | 'B', { id: string; token: string; users: string[] }> = {} as never;

const cli = (...args: string[]) => runCli(api.env, args);

const got = (r: Receiver, id: string) => r.accepted().filter((c) => userOf(c) === id);

beforeAll(async () => {
  [scoped, fresh] = await Promise.all([startReceiver(), startReceiver()]);
  const targets = [
    { name: 'scoped', url: scoped.url, secrets: ['scoped-secret'] },
    { name: 'fresh', url: fresh.url, secrets: ['fresh-secret'] },
  ];
  api = await startTestApi({ label: 'resync_scope', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  // The users exist before either target does: the worker that sees their events has none.
  worker = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: '[]' });
  for (const [name, count] of [['A', 3], ['B', 2]] as const) {
    const clinic = await registerTestClient(api.models, { name: `Clinic ${name}` });
    const token = await getToken(api, clinic);
    const users = Array.from({ length: count }, (_, i) => `${name}-${i}-${randomUUID().slice(0, 8)}`);
    for (const id of users) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    orgs[name] = { id: clinic.organization._id, token, users };
  }
  // Every event fanned out (to no target) before the targets appear.
  await eventsFannedOut(worker!, 60_000);
  await worker.close();
  worker = await startTestWorker(api.env);
}, 300_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await Promise.all([scoped?.close(), fresh?.close()]);
});

describe('targets resync NAME --org ID', () => {
  it("with two organizations, scans only the one named: users_scanned is A's count and B's users get nothing at the target", async () => {
    const { A, B } = orgs;
    const res = await cli('targets', 'resync', 'scoped', '--org', A.id);
    expect(res.code, res.stderr).toBe(0);
    expect(res.json).toEqual({ target: 'scoped', users_scanned: A.users.length, enqueued: A.users.length, skipped: 0 });

    // The positive signal: each of A's users got its user.created, and nothing is left to send to the target.
    await eventually(() => A.users.every((id) => got(scoped, id).length === 1), 60_000);
    await eventually(async () => (await worker!.deps.deliveries.backlog('scoped')) === 0, 30_000);
    for (const id of A.users) expect(got(scoped, id).map((c) => c.body.type)).toEqual(['user.created']);
    for (const id of B.users) expect(scoped.received.filter((c) => userOf(c) === id), id).toEqual([]);
    expect(await api.models.Delivery.countDocuments({ target: 'scoped', organization_id: B.id })).toBe(0);
  });
});

describe('targets resync: a live update that reaches the new target first', () => {
  it('goes out creation first, and resync then finds that user current: counted skipped, one user.created at the target', async () => {
    const { A, B } = orgs;
    const x = B.users[0]!;
    // The target is configured and nobody has resynced it; X's update goes out live.
    const update = await postUser(api, B.token, { provider_email: `${x}@example.com`, external_provider_id: x, settings: { speech_locale: 'FRENCH_FR' } });
    expect(update.status).toBe(200);
    expect(update.body.version).toBe(2);
    await eventually(async () => {
      const sync = (await getUser(api, B.token, x)).body.sync?.find((s: { target: string }) => s.target === 'fresh');
      return sync?.status === 'delivered' && sync.version === 2;
    }, 60_000);
    expect(got(fresh, x).map((c) => [c.body.type, c.body.data.version])).toEqual([['user.created', 1], ['user.updated', 2]]);

    const everyone = [...A.users, ...B.users];
    const res = await cli('targets', 'resync', 'fresh');
    expect(res.code, res.stderr).toBe(0);
    expect(res.json).toEqual({ target: 'fresh', users_scanned: everyone.length, enqueued: everyone.length - 1, skipped: 1 });

    // The positive signal: everyone else got their user.created, and nothing is left to send to the target.
    await eventually(() => everyone.every((id) => got(fresh, id).length > 0), 60_000);
    await eventually(async () => (await worker!.deps.deliveries.backlog('fresh')) === 0, 30_000);
    const created = await api.models.ProviderUser.findOne({ organization_id: B.id, external_provider_id: x }).lean();
    const toX = fresh.received.filter((c) => userOf(c) === x);
    expect(toX.filter((c) => c.body.type === 'user.created').map((c) => c.body.request_uuid)).toEqual([created!.created_event.id]);
    expect(toX.map((c) => [c.body.type, c.body.data.version])).toEqual([['user.created', 1], ['user.updated', 2]]);
    for (const id of everyone.filter((u) => u !== x)) expect(got(fresh, id).map((c) => c.body.type), id).toEqual(['user.created']);
  });
});
