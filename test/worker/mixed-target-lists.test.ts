/**
 * Workers running different DOWNSTREAM_TARGETS at once (a rolling restart that adds a target):
 * every worker takes events from the one events queue, and each fanned out to its own targets
 * only, so the events a worker not restarted yet took never reached the new target (a
 * configuration audit: 215 of 678 users missing, the target healthy with a backlog of 0). Now the
 * workers that know the most targets fan out and the others stand back; with lists that are not
 * nested nobody does, and the events wait (docs/delivery.md, "Workers with different target
 * lists"). A worker started with fewer targets stands back from its first moment: its first
 * reading was once taken before its Redis connection was up, failed, and it fanned out waiting
 * events for a whole interval. Real FerretDB, Redis and receivers; workers in this process, one queue prefix.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { target } from '../support/delivery-stack.ts';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';

vi.setConfig({ testTimeout: 120_000 });

let api: TestApi;
let a: Receiver;
let t: Receiver;
let token: string;
const workers: TestWorker[] = [];

const withTargets = (...names: ('a' | 't')[]) => ({
  ...api.env,
  DOWNSTREAM_TARGETS: JSON.stringify(names.map((n) => target(n, (n === 'a' ? a : t).url))),
});
const start = async (...names: ('a' | 't')[]) => {
  const w = await startTestWorker(withTargets(...names));
  workers.push(w);
  return w;
};
const usersAt = (r: Receiver) => new Set(r.accepted().map(userOf));
async function create(n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => `mixed-${randomUUID()}`);
  for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  return ids;
}
const fannedOutBy = (w: TestWorker) => w.logs.lines.filter((l) => l.includes('"msg":"event fanned out"')).length;

beforeAll(async () => {
  [a, t] = await Promise.all([startReceiver(), startReceiver()]);
  api = await startTestApi({ label: 'mixed_targets' });
  token = await getToken(api, await registerTestClient(api.models));
});
afterAll(async () => {
  for (const w of workers) await w.close().catch(() => undefined);
  await api?.close();
  await Promise.all([a?.close(), t?.close()]);
});

describe('workers with different target lists', () => {
  let old: TestWorker;
  let renewed: TestWorker;

  it('a worker that lacks a target another live worker knows leaves fan-out to it, so every change reaches the new target', async () => {
    old = await start('a');
    renewed = await start('a', 't');
    await eventually(() => old.logs.text.includes('this worker leaves fan-out to workers that know more targets'), 20_000);
    const warning = old.logs.lines.find((l) => l.includes('leaves fan-out'))!;
    expect(warning).toMatch(/knows \\"t\\"/);
    const before = fannedOutBy(old);

    const ids = await create(40);
    await eventually(() => ids.every((id) => usersAt(t).has(id)) && ids.every((id) => usersAt(a).has(id)), 60_000);
    // The worker that lacks "t" took none of them.
    expect(fannedOutBy(old)).toBe(before);
    expect(fannedOutBy(renewed)).toBeGreaterThanOrEqual(40);
  });

  it('takes fan-out up again as soon as the worker that knew more stops', async () => {
    await renewed.close();
    await eventually(() => old.logs.text.includes('this worker fans events out again'), 20_000);
    const ids = await create(5);
    await eventually(() => ids.every((id) => usersAt(a).has(id)), 30_000);
  });

  it('with lists that are not nested nobody fans out and says so; the events wait, and go out once the lists agree', async () => {
    const fannedOutAfterResume = fannedOutBy(old);
    const other = await start('t');
    await eventually(() => other.logs.text.includes('no worker fans events out') && old.logs.text.includes('no worker fans events out'), 20_000);
    const [id] = await create(1);
    const [later] = await create(1);
    // Both events are in the queue, not fanned out, and each worker, asked again now, stands back:
    // a positive reading, not the absence of something in a while.
    await eventually(async () => {
      const jobs = await old.deps.eventsQueue.getJobs(['waiting', 'prioritized', 'delayed', 'active']);
      return jobs.filter((j) => [id, later].includes(j.data.event.data.external_provider_id) && j.attemptsMade === 0).length === 2;
    }, 20_000);
    expect(await old.worker.roster.check()).toBe(false);
    expect(await other.worker.roster.check()).toBe(false);
    expect(fannedOutBy(old) + fannedOutBy(other)).toBe(fannedOutAfterResume);
    expect(usersAt(a).has(id!) || usersAt(a).has(later!)).toBe(false);
    expect(usersAt(t).has(id!) || usersAt(t).has(later!)).toBe(false);
    await other.close();
    await eventually(() => usersAt(a).has(id!) && usersAt(a).has(later!), 30_000);
  });
});

describe('a worker started with fewer targets while events wait', () => {
  it('takes none of them from its first moment; the worker that knows every target sends them all', async () => {
    // The workers of the tests above leave the roster first.
    for (const w of workers) await w.close();
    const full = await start('a', 't');
    // The full worker stays in the roster but takes nothing for now: the events wait in the queue.
    await full.worker.fanOut.pause();
    const ids = await create(20);
    await eventually(async () => (await full.deps.eventsQueue.getWaitingCount()) >= ids.length, 30_000);

    const lesser = await start('a');
    // Its first reading, said in its log: it stands back.
    await eventually(() => lesser.logs.text.includes('this worker leaves fan-out to workers that know more targets'), 20_000);
    expect(fannedOutBy(lesser)).toBe(0);

    full.worker.fanOut.resume();
    await eventually(() => ids.every((id) => usersAt(t).has(id) && usersAt(a).has(id)), 60_000);
    expect(fannedOutBy(lesser)).toBe(0);
  });
});
