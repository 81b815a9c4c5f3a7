import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliveryIdOf, deliveryPolicyFromEnv, listTargets, resumeTarget, showDelivery } from '@connect/shared';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Answer, type Receiver } from './callback-receiver.ts';
import { spawnWorker, type TestWorker } from './worker-under-test.ts';

vi.setConfig({ testTimeout: 90_000 });

/**
 * The retry schedule (WORKER_RETRY_SCHEDULE=1s,2s,4s), a receiver's Retry-After
 * holding its whole target, and 410 Gone disabling a target until an operator
 * resumes it (docs/delivery.md). Real FerretDB, Redis and HTTP receivers.
 */

let stack: DeliveryStack;
let api: TestApi;
let worker: TestWorker;
let token: string;
const receivers: Record<'flaky' | 'patient' | 'doomed' | 'split' | 'throttled' | 'steady' | 'gone', Receiver> = {} as never;
/** Per external_provider_id: the answers to give, in order; once used up, 200. */
const script = new Map<string, Answer[]>();
let seq = 0;
const nextId = (label: string) => `${label}-${++seq}-${Date.now()}`;
let goneAnswers: Answer[] = [];

beforeAll(async () => {
  receivers.flaky = await startReceiver((c) => script.get(userOf(c))?.shift() ?? { status: 200 });
  // Its own target: the failures of the test that uses it would add to flaky's streak (threshold 5).
  receivers.patient = await startReceiver((c) => script.get(`patient:${userOf(c)}`)?.shift() ?? { status: 200 });
  receivers.doomed = await startReceiver((c) => script.get(`doomed:${userOf(c)}`)?.shift() ?? { status: 200 });
  receivers.split = await startReceiver((c) => script.get(`split:${userOf(c)}`)?.shift() ?? { status: 200 });
  receivers.throttled = await startReceiver((c) => script.get(`throttled:${userOf(c)}`)?.shift() ?? { status: 200 });
  receivers.steady = await startReceiver(() => ({ status: 200 }));
  receivers.gone = await startReceiver(() => goneAnswers.shift() ?? { status: 200 });
  stack = await startDeliveryStack({
    label: 'worker_schedule',
    targets: Object.entries(receivers).map(([name, r]) => target(name, r.url, { timeout_ms: 2000 })),
    api: { env: { WORKER_RETRY_SCHEDULE: '1s,2s,4s' } },
    // What WORKER_RETRY_SCHEDULE=1s,2s,4s gives the worker process (read as the process reads it).
    worker: (env) => ({ policy: deliveryPolicyFromEnv(env) }),
  });
  ({ api, worker, token } = stack);
});

afterAll(async () => {
  await stack?.close();
  for (const r of Object.values(receivers)) await r?.close();
});

async function createUser(id: string, settings?: Record<string, unknown>): Promise<number> {
  const res = await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, ...(settings ? { settings } : {}) });
  expect([200, 201]).toContain(res.status);
  return res.body.version;
}
const callsTo = (r: Receiver, id: string) => r.received.filter((c) => userOf(c) === id);
/** The user's Delivery row for this target: of `version` when the user has several (rows come back in no set order). */
const rowOf = async (id: string, target: string, version?: number) =>
  (await worker.deps.models.Delivery.find({ external_provider_id: id, target, ...(version === undefined ? {} : { version }) }).lean())[0];

describe('WORKER_RETRY_SCHEDULE=1s,2s,4s', () => {
  it('500 four times: dead-lettered after exactly 4 attempts, waits of 1, 2 and 4 s (±20 %), history of 4 attempts', async () => {
    const id = nextId('schedule');
    script.set(id, Array.from({ length: 4 }, () => ({ status: 500 })));
    await createUser(id);
    await eventually(async () => expect((await rowOf(id, 'flaky'))?.status).toBe('failed'), 30_000);
    const calls = callsTo(receivers.flaky, id);
    expect(calls.map((c) => c.answered)).toEqual([500, 500, 500, 500]);
    const gaps = calls.slice(1).map((c, i) => c.at - calls[i]!.answeredAt!);
    console.log(`[schedule 1s,2s,4s] gaps between attempts: ${gaps.join(' ms, ')} ms`);
    [1000, 2000, 4000].forEach((step, i) => {
      expect(gaps[i]!).toBeGreaterThanOrEqual(step * 0.8 - 20);
      // +20 % jitter, plus the time BullMQ takes to promote a delayed job on a loaded machine.
      expect(gaps[i]!).toBeLessThanOrEqual(step * 1.2 + 1000);
    });
    const row = (await rowOf(id, 'flaky'))!;
    expect(row).toMatchObject({ status: 'failed', attempts: 4, last_status_code: 500, last_error: 'HTTP 500' });
    expect(row.failed_at).toBeInstanceOf(Date); // when it was dead-lettered, for `deliveries recover --since`
    // The row's dead letter and the last attempt's history are written side by side: the row can be read first.
    const shown = await eventually(async () => {
      const s = await showDelivery(worker.deps.store, row._id);
      return s.attempts.length >= 4 ? s : false;
    }, 10_000, 50);
    expect(shown.attempt_count).toBe(4);
    expect(shown.attempts.map((a) => [a.status_code, a.error_class, a.outcome])).toEqual([
      [500, 'http', 'retry'],
      [500, 'http', 'retry'],
      [500, 'http', 'retry'],
      [500, 'http', 'failed'],
    ]);
    expect(JSON.stringify(shown)).not.toContain('@example.com');
    // Four failures in a row are below the threshold (5): the target stays healthy.
    expect((await worker.deps.health.get('flaky')).state).toBe('healthy');
    // The failed job BullMQ keeps (up to 10,000 per target, a week) holds one stack, not one per attempt.
    const job = await worker.deps.deliveries.get('flaky')!.getJob(row._id);
    expect(job?.attemptsMade).toBe(4);
    expect(job?.stacktrace).toHaveLength(1);
  });

  it('updates that arrive while user.created waits out its retry do not bring its next attempt forward; the newest version follows it', async () => {
    const id = nextId('coalesced');
    script.set(`patient:${id}`, [{ status: 500 }, { status: 500 }]);
    await createUser(id);
    await eventually(() => callsTo(receivers.patient, id)[0]?.answeredAt !== undefined, 15_000, 20);
    // Two changes while the first retry (1 s) is pending: each is a new event with a delivery job of its own.
    await createUser(id, { speech_locale: 'FRENCH_FR' });
    const newest = await createUser(id, { speech_locale: 'GERMAN_DE' });
    await eventually(() => callsTo(receivers.patient, id).some((c) => c.answered === 200 && c.body.data.version === newest), 30_000);
    const calls = callsTo(receivers.patient, id);
    expect(calls.map((c) => [c.body.type, c.answered])).toEqual([
      ['user.created', 500],
      ['user.created', 500],
      ['user.created', 200],
      ['user.updated', 200],
    ]);
    expect(calls.at(-1)!.body.data.version).toBe(newest);
    // The created delivery's attempts keep the schedule: 1 s then 2 s (less 20 % jitter).
    const gaps = [1, 2].map((i) => calls[i]!.at - calls[i - 1]!.answeredAt!);
    expect(gaps[0]!).toBeGreaterThanOrEqual(1000 * 0.8 - 20);
    expect(gaps[1]!).toBeGreaterThanOrEqual(2000 * 0.8 - 20);
    const created = (await rowOf(id, 'patient', 1))!;
    expect(created).toMatchObject({ status: 'delivered', attempts: 3 });
  });
});

describe('a dead letter that had absorbed newer versions', () => {
  it('user.created fails for good while two updates wait behind it: the newest is dead-lettered with it, the one in between is superseded, none left pending', async () => {
    const id = nextId('absorbed');
    script.set(`doomed:${id}`, Array.from({ length: 4 }, () => ({ status: 500 })));
    await createUser(id);
    // Both while user.created waits out its retry delay (not while its first attempt still runs,
    // when BullMQ would keep a job of their own to follow it): their jobs fold into its own.
    const created = (await worker.deps.models.ProviderUser.findOne({ external_provider_id: id }).lean())!.created_event.id;
    const queue = worker.deps.deliveries.get('doomed')!;
    await eventually(async () => (await queue.getJob(deliveryIdOf(created, 'doomed')))?.getState().then((state) => state === 'delayed') ?? false, 15_000, 20);
    expect(await createUser(id, { speech_locale: 'FRENCH_FR' })).toBe(2);
    expect(await createUser(id, { speech_locale: 'GERMAN_DE' })).toBe(3);
    const rowsOf = async () => (await worker.deps.models.Delivery.find({ external_provider_id: id, target: 'doomed' }).lean()).map((r) => [r.version, r.status]).sort();
    // The final state (the rows are written one after the other once the last attempt failed).
    await eventually(async () => expect(await rowsOf()).toEqual([
      [1, 'failed'],
      [2, 'superseded'],
      [3, 'failed'],
    ]), 30_000);
    expect(callsTo(receivers.doomed, id).map((c) => c.answered)).toEqual([500, 500, 500, 500]);
  });
});

describe('a dead letter after an earlier attempt delivered user.created', () => {
  it('user.created goes through on its second attempt and the update sent after it fails to the last attempt: the update alone is a dead letter, user.created stays delivered', async () => {
    const id = nextId('split');
    script.set(`split:${id}`, [{ status: 500 }, { status: 200 }, { status: 503 }, { status: 503 }, { status: 503 }]);
    await createUser(id);
    const created = (await worker.deps.models.ProviderUser.findOne({ external_provider_id: id }).lean())!.created_event.id;
    const job = () => worker.deps.deliveries.get('split')!.getJob(deliveryIdOf(created, 'split'));
    // The update while user.created waits out its first retry: its job folds into that one.
    await eventually(async () => (await job())?.getState().then((state) => state === 'delayed') ?? false, 15_000, 20);
    expect(await createUser(id, { speech_locale: 'FRENCH_FR' })).toBe(2);
    // The job fails once every row of its last attempt is written.
    await eventually(async () => (await job())?.getState().then((state) => state === 'failed') ?? false, 30_000, 50);
    expect(callsTo(receivers.split, id).map((c) => [c.body.type, c.answered])).toEqual([
      ['user.created', 500],
      ['user.created', 200],
      ['user.updated', 503],
      ['user.updated', 503],
      ['user.updated', 503],
    ]);
    // Before, the job's own event (user.created, delivered two attempts earlier) was dead-lettered with the update.
    const rows = (await worker.deps.models.Delivery.find({ external_provider_id: id, target: 'split' }).lean()).map((r) => [r.version, r.status]).sort();
    expect(rows).toEqual([
      [1, 'delivered'],
      [2, 'failed'],
    ]);
  });
});

describe('Retry-After on a 429 holds the whole target', () => {
  it('Retry-After: 3 → no request reaches that target for 3 s, while another target keeps receiving', async () => {
    const first = nextId('throttle');
    script.set(`throttled:${first}`, [{ status: 429, headers: { 'retry-after': '3' } }]);
    await createUser(first);
    const refused = await eventually(() => callsTo(receivers.throttled, first).find((c) => c.answered === 429) ?? false, 15_000);
    // Changes made during the hold: the steady target gets them, the throttled one waits.
    const during = [nextId('during'), nextId('during'), nextId('during')];
    for (const id of during) await createUser(id);
    await eventually(() => during.every((id) => receivers.steady.accepted().some((c) => userOf(c) === id)), 10_000);
    const steadyDuring = receivers.steady.accepted().filter((c) => during.includes(userOf(c)));
    // The positive signal that the hold is over: the throttled target receives everything.
    await eventually(() => [first, ...during].every((id) => receivers.throttled.accepted().some((c) => userOf(c) === id)), 20_000);
    const next = receivers.throttled.received.filter((c) => c.n > refused.n);
    const firstAfter = Math.min(...next.map((c) => c.at));
    console.log(`[Retry-After: 3] next request to the throttled target ${firstAfter - refused.answeredAt!} ms after the 429; the steady target got ${steadyDuring.length} callbacks meanwhile`);
    expect(firstAfter - refused.answeredAt!).toBeGreaterThanOrEqual(3000 - 50);
    expect(steadyDuring.some((c) => c.answeredAt! < refused.answeredAt! + 3000)).toBe(true);
  });
});

describe('410 Gone disables the target; resume delivers everything held, in order', () => {
  it('410 → disabled, nothing sent; `targets resume` → every held change arrives, per user in order', async () => {
    goneAnswers = [{ status: 410 }];
    const users = [nextId('gone'), nextId('gone'), nextId('gone')];
    const before = receivers.gone.received.length;
    const sinceStart = () => receivers.gone.received.slice(before);
    await createUser(users[0]!);
    await eventually(async () => expect((await worker.deps.health.get('gone')).state).toBe('disabled'), 15_000);
    expect(sinceStart().map((c) => c.answered)).toEqual([410]);
    // More changes while disabled: creations and updates.
    for (const id of users.slice(1)) await createUser(id);
    for (const id of users) await createUser(id, { speech_locale: 'ITALIAN_IT' });
    // The positive signal: the steady target has every change, so every fan-out ran.
    await eventually(() => users.every((id) => receivers.steady.accepted().some((c) => userOf(c) === id && c.body.data.version === 2)), 15_000);
    expect(sinceStart()).toHaveLength(1);
    // Held, not dead-lettered. The processor records the 410 in Redis (disabled) before it writes
    // the row, so the row can lag the state by one database write: wait for it. The row is that of
    // version 1, the event that got the 410; the update's row (version 2) was never attempted.
    await eventually(async () => expect(await rowOf(users[0]!, 'gone', 1)).toMatchObject({ status: 'pending', last_status_code: 410 }), 15_000);
    const listed = await listTargets({ health: worker.deps.health, queues: worker.deps.deliveries });
    expect(listed.find((t) => t.name === 'gone')).toMatchObject({ state: 'disabled', backlog: expect.any(Number) });
    expect(listed.find((t) => t.name === 'gone')!.backlog).toBeGreaterThanOrEqual(users.length);

    const resumed = await resumeTarget({ health: worker.deps.health, queues: worker.deps.deliveries }, 'gone');
    expect(resumed.state).toBe('healthy');
    await eventually(() => users.every((id) => receivers.gone.accepted().some((c) => userOf(c) === id && c.body.data.version === 2)), 20_000);
    for (const id of users) {
      const seen = receivers.gone.accepted().filter((c) => userOf(c) === id).map((c) => [c.body.type, c.body.data.version]);
      expect(seen[0]).toEqual(['user.created', 1]);
      const versions = seen.map((s) => s[1] as number);
      expect(versions).toEqual([...versions].sort((a, b) => a - b));
    }
    expect(await worker.deps.models.Delivery.countDocuments({ target: 'gone', status: 'failed' })).toBe(0);
  });
});

describe('a bad WORKER_RETRY_SCHEDULE', () => {
  it('stops the worker process before it starts, with one line naming the variable', async () => {
    const child = spawnWorker(api.env, { WORKER_RETRY_SCHEDULE: '5s,soon' });
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    const lines = child.output().trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/WORKER_RETRY_SCHEDULE/);
  });
});
