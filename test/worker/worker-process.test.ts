import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi, type TestClient } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from './callback-receiver.ts';
import { WORKER_SHUTDOWN_STEPS } from '@connect/worker';
import { spawnWorker, startTestWorker, type WorkerChild } from './worker-under-test.ts';

// Real processes, FerretDB and retries: generous on a loaded two-core CI machine.
vi.setConfig({ testTimeout: 90_000 });

/**
 * The worker as `pnpm start:worker` runs it, in a child process: killed with
 * SIGKILL mid-delivery it loses nothing (BullMQ's stalled-job check hands the job
 * to the next worker); SIGTERM finishes what is in flight and exits 0.
 */

let api: TestApi;
let clinic: TestClient;
let token: string;
let receiver: Receiver;
const children: WorkerChild[] = [];

/** Short locks and stalled checks so a killed worker's job is picked up within seconds. */
const CHILD_ENV = {
  WORKER_LOCK_DURATION_MS: '2000',
  WORKER_STALLED_INTERVAL_MS: '1000',
  WORKER_RETRY_SCHEDULE: '200ms,400ms,800ms,1600ms,2s,2s,2s',
  WORKER_SWEEP_INTERVAL_MS: '500',
};

function spawn(extra: Record<string, string> = {}): WorkerChild {
  const w = spawnWorker(api.env, { ...CHILD_ENV, ...extra });
  children.push(w);
  return w;
}

beforeAll(async () => {
  receiver = await startReceiver();
  const targets = [{ name: 'dictation', url: receiver.url, secrets: ['proc-secret'], timeout_ms: 20_000 }];
  api = await startTestApi({ label: 'worker_process', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  clinic = await registerTestClient(api.models);
  token = await getToken(api, clinic);
});

afterAll(async () => {
  for (const w of children) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
  await api?.close();
  await receiver?.close();
});

const forUser = (id: string) => receiver.received.filter((c) => c.body?.data?.user?.external_provider_id === id);

describe('worker killed with SIGKILL mid-delivery', () => {
  it('delivers the event after a restart, with the same event id', async () => {
    const id = `killed-${Date.now()}`;
    receiver.respond = (c) => (c.body?.data?.user?.external_provider_id === id && forUser(id).length === 1 ? { status: 200, hold: true } : { status: 200 });
    const first = spawn();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => expect(forUser(id)).toHaveLength(1), 20_000);
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(forUser(id)[0]!.answered).toBeNull();

    const killedAt = Date.now();
    const second = spawn();
    await eventually(() => expect(forUser(id).filter((c) => c.answered === 200)).toHaveLength(1), 20_000, 200);
    console.log(`[sigkill] redelivered ${Date.now() - killedAt} ms after the kill (lock 2 s, stalled check 1 s, plus start-up)`);
    const [held, redelivered] = forUser(id);
    expect(redelivered!.body.request_uuid).toBe(held!.body.request_uuid);
    expect(redelivered!.raw).toBe(held!.raw);
    const row = await eventually(async () => {
      const r = await api.models.Delivery.findOne({ external_provider_id: id }).lean();
      expect(r?.status).toBe('delivered');
      return r!;
    });
    expect(row.attempts).toBe(2);
    second.child.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  });
});

describe('SIGTERM during deliveries', () => {
  it('finishes the callbacks in flight, exits 0 with its steps in order, and loses nothing', async () => {
    receiver.respond = () => ({ status: 200, delayMs: 1000 });
    const ids = Array.from({ length: 6 }, (_, i) => `term-${i}-${Date.now()}`);
    const w = spawn({ WORKER_CONCURRENCY: '2' });
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const mine = () => receiver.received.filter((c) => ids.includes(c.body?.data?.user?.external_provider_id));
    await eventually(() => expect(mine().length).toBeGreaterThanOrEqual(2), 20_000);

    w.child.kill('SIGTERM');
    const exit = await w.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    const seenBeforeExit = mine();
    expect(seenBeforeExit.length).toBeLessThan(6); // it stopped early: the test did stop it mid-way
    // Every callback it had started was answered before it exited, and recorded as delivered.
    for (const c of seenBeforeExit) expect(c.answered).toBe(200);
    const rows = await api.models.Delivery.find({ event_id: { $in: seenBeforeExit.map((c) => c.body.request_uuid) } }).lean();
    expect(rows.map((r) => r.status)).toEqual(seenBeforeExit.map(() => 'delivered'));
    // In the order the worker logged them (pino's time), not the order the pipes delivered them:
    // the child's stdout and stderr reach the test as separate streams. One CI run saw the last two swapped.
    const steps = w
      .output()
      .split('\n')
      .flatMap((line) => {
        try {
          const entry = JSON.parse(line) as { msg?: string; step?: string; time?: number };
          return entry.msg === 'shutdown step done' && entry.step ? [entry] : [];
        } catch {
          return [];
        }
      })
      .sort((a, b) => (a.time ?? 0) - (b.time ?? 0))
      .map((e) => e.step);
    expect(steps).toEqual([...WORKER_SHUTDOWN_STEPS]);
    // The plan it announced is the same list.
    const plan = w
      .output()
      .split('\n')
      .find((line) => line.includes('"shutdown sequence"'));
    expect((JSON.parse(plan ?? '{}') as { steps?: string[] }).steps).toEqual([...WORKER_SHUTDOWN_STEPS]);

    // Nothing lost: a new worker delivers the rest, and no event went out twice.
    receiver.respond = () => ({ status: 200 });
    const next = await startTestWorker(api.env);
    try {
      await eventually(() => expect(new Set(mine().filter((c) => c.answered === 200).map((c) => c.body.request_uuid)).size).toBe(6), 20_000);
      expect(mine()).toHaveLength(6);
    } finally {
      await next.close();
    }
  });
});

describe('SIGTERM with a delivery that outlasts WORKER_SHUTDOWN_GRACE_MS', () => {
  it('exits 0 once the grace period is over, logs the step as cut short, and the delivery is made by the next worker', async () => {
    const id = `grace-${Date.now()}`;
    // The first callback for this user is never answered: it is still in flight when the grace period ends.
    receiver.respond = (c) => (c.body?.data?.user?.external_provider_id === id && forUser(id).length === 1 ? { status: 200, hold: true } : { status: 200 });
    const w = spawn({ WORKER_SHUTDOWN_GRACE_MS: '1500' });
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => expect(forUser(id)).toHaveLength(1), 20_000);

    w.child.kill('SIGTERM');
    expect(await w.exited).toEqual({ code: 0, signal: null });
    expect(forUser(id)[0]!.answered).toBeNull();
    const cutShort = w
      .output()
      .split('\n')
      .filter((line) => line.includes('"shutdown step cut short by the grace period"'))
      .map((line) => (JSON.parse(line) as { step: string }).step);
    expect(cutShort).toEqual(['stop-deliveries']);

    // Nothing lost: the job's lock lapses and the next worker sends the same event.
    const next = spawn();
    await eventually(() => expect(forUser(id).filter((c) => c.answered === 200)).toHaveLength(1), 30_000, 200);
    expect(forUser(id)[1]!.body.request_uuid).toBe(forUser(id)[0]!.body.request_uuid);
    next.child.kill('SIGTERM');
    expect((await next.exited).code).toBe(0);
  });
});

describe('SIGTERM while Redis does not answer', () => {
  it('exits 0 without waiting out the grace period (BullMQ\'s close, the sweep and QUIT waited on the Redis that was gone: the whole grace, 25 s by default, every time)', async () => {
    // Redis through a proxy of the test's own, which it then takes away: connections cut, new ones refused.
    const redisUrl = new URL(api.env.REDIS_URL!);
    const sockets = new Set<Socket>();
    const proxy = createServer((client) => {
      const upstream = connect(Number(redisUrl.port || 6379), redisUrl.hostname);
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => sockets.delete(s));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const proxied = new URL(redisUrl);
    proxied.host = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const w = spawn({ REDIS_URL: proxied.toString(), WORKER_SHUTDOWN_GRACE_MS: '60000' });
    await eventually(() => expect(w.output()).toContain('"worker started"'), 30_000);

    await new Promise<void>((r) => {
      proxy.close(() => r());
      for (const s of sockets) s.destroy();
    });
    await eventually(() => expect(w.output()).toContain('redis connection error'), 30_000);
    w.child.kill('SIGTERM');
    expect(await w.exited).toEqual({ code: 0, signal: null });
    const lines = w.output().split('\n');
    expect(lines.filter((l) => l.includes('"shutdown step cut short by the grace period"'))).toEqual([]);
    expect(lines.some((l) => l.includes('not waiting for the pass in progress'))).toBe(true);
    expect(lines.some((l) => l.includes('the workers close without waiting for their jobs in flight'))).toBe(true);
  });
});
