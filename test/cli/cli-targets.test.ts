import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from '../worker/callback-receiver.ts';
import { spawnWorker, type WorkerChild } from '../worker/worker-under-test.ts';
import { runCli } from '../support/cli-child.ts';

// Each CLI call is a new tsx process (seconds on a loaded two-core machine); the first test makes about 20.
vi.setConfig({ testTimeout: 300_000 });

/**
 * `pnpm cli targets list|pause|resume` and `deliveries list --target/--status`,
 * `deliveries show` against TWO worker processes at once: the target's state
 * lives in Redis, so an operator's pause holds both, a failure streak seen by
 * either makes the target failing for both, and `targets list` (a third
 * process) shows each state as it happens.
 */

let api: TestApi;
let token: string;
let dictation: Receiver;
let other: Receiver;
let failing = false;
let gone = false;
const workers: WorkerChild[] = [];

const cli = (...args: string[]) => runCli(api.env, args);
const row = async (name: string) => {
  const list = await cli('targets', 'list');
  expect(list.code, JSON.stringify(list.json)).toBe(0);
  expect(Object.keys(list.json)).toEqual(['targets']);
  return list.json.targets.find((t: { name: string }) => t.name === name);
};
const got = (r: Receiver, ids: string[]) => ids.every((id) => r.accepted().some((c) => userOf(c) === id));
let seq = 0;
async function createUsers(label: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => `${label}-${++seq}-${Date.now()}`);
  for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  return ids;
}

beforeAll(async () => {
  dictation = await startReceiver(() => (gone ? { status: 410 } : failing ? { status: 500 } : { status: 200 }));
  other = await startReceiver();
  const targets = [
    { name: 'dictation', url: dictation.url, secrets: ['cli-t-secret'], timeout_ms: 2000 },
    { name: 'other', url: other.url, secrets: ['cli-o-secret'], timeout_ms: 2000 },
  ];
  api = await startTestApi({ label: 'cli-targets', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets) } });
  token = await getToken(api, await registerTestClient(api.models));
  const env = { WORKER_RETRY_SCHEDULE: '500ms,500ms,500ms,500ms,500ms,500ms', TARGET_FAILURE_THRESHOLD: '2', TARGET_PROBE_INTERVAL: '500ms', TARGET_PROBE_MAX_INTERVAL: '1s', WORKER_SWEEP_INTERVAL_MS: '500' };
  for (let i = 0; i < 2; i++) workers.push(spawnWorker(api.env, env));
  await eventually(() => workers.every((w) => w.output().includes('worker ready')), 60_000);
});

afterAll(async () => {
  for (const w of workers) {
    if (w.child.exitCode === null && w.child.signalCode === null) {
      w.child.kill('SIGTERM');
      await w.exited;
    }
  }
  await api?.close();
  await dictation?.close();
  await other?.close();
});

describe('targets list | pause | resume, with two worker processes', () => {
  it('shows healthy → paused (nothing sent by either worker) → healthy (backlog drains) → failing → healthy → disabled (410) → healthy', async () => {
    // healthy
    const first = await createUsers('healthy', 2);
    await eventually(() => got(dictation, first) && got(other, first), 30_000);
    const healthy = await row('dictation');
    expect(healthy).toMatchObject({ name: 'dictation', state: 'healthy', consecutive_failures: 0, failing_since: null, backlog: expect.any(Number) });
    expect(Date.parse(healthy.last_success_at)).toBeGreaterThan(0);
    expect(Object.keys(healthy).sort()).toEqual(['backlog', 'consecutive_failures', 'failing_since', 'last_success_at', 'name', 'state']);

    // paused: both workers hold; the other target keeps receiving (the positive signal).
    const paused = await cli('targets', 'pause', 'dictation');
    expect(paused.code).toBe(0);
    expect(paused.json).toMatchObject({ name: 'dictation', state: 'paused' });
    expect(paused.json).not.toHaveProperty('already_paused');
    // Paused again: the same row, and it says nothing changed (as client disable says already_disabled).
    const again = await cli('targets', 'pause', 'dictation');
    expect(again.json).toMatchObject({ name: 'dictation', state: 'paused', already_paused: true });
    const before = dictation.received.length;
    const held = await createUsers('held', 4);
    await eventually(() => got(other, held), 30_000);
    await eventually(async () => expect((await row('dictation')).backlog).toBeGreaterThanOrEqual(held.length), 15_000);
    expect(dictation.received.length).toBe(before);
    expect((await row('dictation')).state).toBe('paused');
    expect((await row('other')).state).toBe('healthy');

    // resume: the backlog drains.
    const resumed = await cli('targets', 'resume', 'dictation');
    expect(resumed.json).toMatchObject({ name: 'dictation', state: 'healthy' });
    await eventually(() => got(dictation, held), 30_000);
    await eventually(async () => expect((await row('dictation')).backlog).toBe(0), 15_000);

    // failing: 2 consecutive failures (threshold), from whichever process took the jobs.
    failing = true;
    const down = await createUsers('down', 3);
    const failingRow = await eventually(async () => {
      const r = await row('dictation');
      expect(r.state).toBe('failing');
      return r;
    }, 30_000);
    expect(failingRow.consecutive_failures).toBeGreaterThanOrEqual(2);
    expect(Date.parse(failingRow.failing_since)).toBeGreaterThan(0);
    await eventually(() => got(other, down), 30_000);

    // back: the first probe's 2xx makes it healthy; everything held arrives.
    failing = false;
    await eventually(() => got(dictation, down), 40_000);
    const recovered = await row('dictation');
    expect(recovered).toMatchObject({ state: 'healthy', consecutive_failures: 0, failing_since: null });
    // Each state change is logged once, by the one process that made it, not once per job or per process.
    const logs = workers.map((w) => w.output()).join('\n');
    expect(logs.split('target dictation is now failing').length - 1).toBe(1);
    expect(logs.split('target dictation is now healthy').length - 1).toBe(1);
    expect(await api.models.Delivery.countDocuments({ target: 'dictation', status: 'failed' })).toBe(0);

    // disabled: a 410 Gone; nothing more is sent by either worker until resume.
    gone = true;
    const refused = await createUsers('gone', 1);
    const disabled = await eventually(async () => {
      const r = await row('dictation');
      expect(r.state).toBe('disabled');
      return r;
    }, 30_000);
    expect(disabled.backlog).toBeGreaterThanOrEqual(1);
    const sent = dictation.received.length;
    const waiting = await createUsers('while-disabled', 2);
    await eventually(() => got(other, waiting), 30_000);
    expect(dictation.received.length).toBe(sent);
    gone = false;
    expect((await cli('targets', 'resume', 'dictation')).json).toMatchObject({ state: 'healthy' });
    await eventually(() => got(dictation, [...refused, ...waiting]), 30_000);
    expect(await api.models.Delivery.countDocuments({ target: 'dictation', status: 'failed' })).toBe(0);
  });

  it('an unknown target is a not_found error with a non-zero exit', async () => {
    for (const verb of ['pause', 'resume']) {
      const res = await cli('targets', verb, 'no-such-target');
      expect(res.code).not.toBe(0);
      expect(res.json.error.kind).toBe('not_found');
    }
  });
});

describe('deliveries list --target --status, deliveries show', () => {
  it('filters by target and status; show prints the attempts, never user data', async () => {
    const list = await cli('deliveries', 'list', '--target', 'dictation', '--status', 'delivered');
    expect(list.code).toBe(0);
    expect(list.json).toMatchObject({ status: 'delivered', target: 'dictation' });
    expect(list.json.deliveries.length).toBeGreaterThan(0);
    expect(list.json.deliveries.every((d: { target: string; status: string }) => d.target === 'dictation' && d.status === 'delivered')).toBe(true);
    // A delivery that failed (500) before it went through: its history shows each attempt.
    const retried = list.json.deliveries.find((d: { attempts: number }) => d.attempts > 1) ?? list.json.deliveries.at(-1);
    const shown = await cli('deliveries', 'show', retried.id);
    expect(shown.code).toBe(0);
    expect(shown.json).toMatchObject({ id: retried.id, target: 'dictation', status: 'delivered' });
    expect(shown.json.attempts.length).toBeGreaterThanOrEqual(1);
    expect(shown.json.attempt_count).toBe(retried.attempts);
    expect(shown.json.attempts.at(-1)).toMatchObject({ status_code: 200, error_class: null, outcome: 'delivered', duration_ms: expect.any(Number), at: expect.any(String) });
    expect(JSON.stringify(shown.json)).not.toContain('@example.com');

    const missing = await cli('deliveries', 'show', 'no-such-delivery');
    expect(missing.code).not.toBe(0);
    expect(missing.json.error.kind).toBe('not_found');
    const bad = await cli('deliveries', 'list', '--status', 'exploded');
    expect(bad.code).not.toBe(0);
  });
});
