/**
 * A worker started with fewer targets than a live one takes no event, not even in its first
 * moments (docs/delivery.md, "Workers with different target lists"). Its first roster reading was
 * taken before its Redis connection was up: the connection keeps no offline queue, so the reading
 * failed, and the worker fell back on fanning out until its next reading an interval later (5 s in
 * production). Events waiting then went out without the target it did not know.
 * Real FerretDB, Redis and receivers; workers in this process, one queue prefix.
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
const workers: TestWorker[] = [];

const start = async (...names: ('a' | 't')[]) => {
  const w = await startTestWorker({ ...api.env, DOWNSTREAM_TARGETS: JSON.stringify(names.map((n) => target(n, (n === 'a' ? a : t).url))) });
  workers.push(w);
  return w;
};
const fannedOutBy = (w: TestWorker) => w.logs.lines.filter((l) => l.includes('"msg":"event fanned out"')).length;

beforeAll(async () => {
  [a, t] = await Promise.all([startReceiver(), startReceiver()]);
  api = await startTestApi({ label: 'roster_first_reading' });
});
afterAll(async () => {
  for (const w of workers) await w.close().catch(() => undefined);
  await api?.close();
  await Promise.all([a?.close(), t?.close()]);
});

describe('a worker started with fewer targets while events wait', () => {
  it('takes none of them from its first moment; the worker that knows every target sends them all', async () => {
    const token = await getToken(api, await registerTestClient(api.models));
    const full = await start('a', 't');
    // The full worker stays in the roster but takes nothing for now: the events wait in the queue.
    await full.worker.fanOut.pause();
    const ids = Array.from({ length: 20 }, () => `first-reading-${randomUUID()}`);
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(async () => (await full.deps.eventsQueue.getWaitingCount()) >= ids.length, 30_000);

    const lesser = await start('a');
    // Its first reading, said in its log: it stands back.
    await eventually(() => lesser.logs.text.includes('this worker leaves fan-out to workers that know more targets'), 20_000);
    expect(fannedOutBy(lesser)).toBe(0);

    full.worker.fanOut.resume();
    const usersAt = (r: Receiver) => new Set(r.accepted().map(userOf));
    await eventually(() => ids.every((id) => usersAt(t).has(id) && usersAt(a).has(id)), 60_000);
    expect(fannedOutBy(lesser)).toBe(0);
  });
});
