import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, getUser, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { runCli } from '../support/cli-child.ts';

let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
let broken = true;

const cli = (...args: string[]) => runCli(api.env, args);

beforeAll(async () => {
  receiver = await startReceiver(() => (broken ? { status: 400 } : { status: 200 }));
  const targets = JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s3cret'] }]);
  api = await startTestApi({ label: 'cli-deliveries', env: { DOWNSTREAM_TARGETS: targets } });
  worker = await startTestWorker(api.env);
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('pnpm cli deliveries: dead letters are visible and replayable', () => {
  it('a 400 is dead-lettered at once, listed, and delivered by replay once the receiver is fixed', async () => {
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);

    const failed = (await eventually(async () => {
      const list = await cli('deliveries', 'list', '--status', 'failed');
      const mine = list.json.deliveries?.find((d: { external_provider_id: string }) => d.external_provider_id === id);
      return mine ? { list, mine } : false;
    }, 30_000))!;
    expect(failed.list.code).toBe(0);
    expect(failed.mine).toMatchObject({ target: 'dictation', status: 'failed', event_type: 'user.created', version: 1, last_status_code: 400 });
    expect(receiver.received).toHaveLength(1);
    expect(JSON.stringify(failed.list.json)).not.toContain(`${id}@example.com`);

    broken = false;
    const replay = await cli('deliveries', 'replay', failed.mine.id);
    expect(replay.code).toBe(0);
    expect(replay.json.replayed[0]).toMatchObject({ id: failed.mine.id, status: 'pending' });
    await eventually(() => receiver.accepted().some((c) => c.body.data.user.external_provider_id === id), 20_000);
    const accepted = receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id);
    expect(accepted).toHaveLength(1);
    expect(accepted[0]!.body.request_uuid).toBe(receiver.received[0]!.body.request_uuid);
    await eventually(async () => (await getUser(api, token, id)).body.sync[0]?.status === 'delivered', 10_000);

    const after = await cli('deliveries', 'list', '--status', 'failed');
    expect(after.json.deliveries.some((d: { id: string }) => d.id === failed.mine.id)).toBe(false);
  }, 120_000);

  it('an id together with --all-failed is a usage error, and nothing is replayed', async () => {
    broken = true;
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const ids: string[] = [randomUUID(), randomUUID()];
    for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const dead = (await eventually(async () => {
      const list = await cli('deliveries', 'list', '--status', 'failed');
      const mine = list.json.deliveries?.filter((d: { external_provider_id: string }) => ids.includes(d.external_provider_id));
      return mine?.length === ids.length ? mine : false;
    }, 30_000))!;

    // A list cut at --limit says so, rather than passing a partial list off as all of them.
    const one = await cli('deliveries', 'list', '--status', 'failed', '--limit', '1');
    expect(one.json).toMatchObject({ status: 'failed', count: 1, truncated: true });
    expect(one.json.deliveries).toHaveLength(1);
    const all = await cli('deliveries', 'list', '--status', 'failed');
    expect(all.json.truncated).toBe(false);
    expect(all.json.count).toBe(all.json.deliveries.length);
    for (const bad of ['0', '10001', 'ten']) expect((await cli('deliveries', 'list', '--limit', bad)).json.error).toMatchObject({ kind: 'usage', message: expect.stringMatching(/^--limit must be a whole number from 1 to 10000/) });

    for (const args of [[dead[0].id, '--all-failed'], ['--all-failed', dead[0].id]]) {
      const both = await cli('deliveries', 'replay', ...args);
      expect(both.code).toBe(2);
      expect(both.json).toEqual({ error: { kind: 'usage', message: expect.stringMatching(/give a delivery id or --all-failed, not both/) } });
    }
    for (const d of dead) expect((await cli('deliveries', 'show', d.id)).json).toMatchObject({ id: d.id, status: 'failed' });
    expect(await api.models.Delivery.countDocuments({ _id: { $in: dead.map((d: { id: string }) => d.id) }, status: 'failed' })).toBe(ids.length);
    broken = false;
  }, 120_000);

  it('--all-failed replays every dead letter; a bad id or status is a JSON error', async () => {
    const all = await cli('deliveries', 'replay', '--all-failed');
    expect(all.code, JSON.stringify(all.json ?? all)).toBe(0);
    expect(all.json).toHaveProperty('replayed');
    const bad = await cli('deliveries', 'replay', 'no-such-delivery');
    expect(bad.code).not.toBe(0);
    expect(bad.json.error).toBeDefined();
    const badStatus = await cli('deliveries', 'list', '--status', 'exploded');
    expect(badStatus.json.error.kind).toBe('usage');
  }, 120_000);
});

describe('a target name that is not configured', () => {
  it('is the same not_found error, in the same words, from every command that names a target', async () => {
    const commands = [
      ['targets', 'pause', 'nope'],
      ['targets', 'resume', 'nope'],
      ['targets', 'resync', 'nope'],
      ['deliveries', 'list', '--target', 'nope'],
      ['deliveries', 'recover', '--target', 'nope', '--since', '2026-01-01T00:00:00Z'],
    ];
    for (const args of commands) {
      const res = await cli(...args);
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.json, args.join(' ')).toEqual({ error: { kind: 'not_found', message: 'No target named nope is configured (DOWNSTREAM_TARGETS).' } });
    }
  }, 120_000);
});

describe('a target taken out of DOWNSTREAM_TARGETS, not yet forgotten', () => {
  /** The CLI as an operator runs it once the target is removed from its configuration. */
  const withoutTarget = (...args: string[]) => runCli({ ...api.env, DOWNSTREAM_TARGETS: '[]' }, args);

  it('replay --all-failed that cannot replay a dead letter exits 1 with the same document, each error with its kind; the row stays failed', async () => {
    broken = true;
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const dead = (await eventually(async () => {
      const list = await cli('deliveries', 'list', '--status', 'failed');
      return list.json.deliveries?.find((d: { external_provider_id: string }) => d.external_provider_id === id) ?? false;
    }, 30_000))!;
    broken = false;

    const all = await withoutTarget('deliveries', 'replay', '--all-failed');
    expect(all.code, JSON.stringify(all.json)).toBe(1);
    expect(all.json).toEqual({ replayed: [], errors: expect.arrayContaining([{ id: dead.id, kind: 'conflict', error: 'Target dictation is no longer configured.' }]) });
    expect(all.json.errors.every((e: { kind: string }) => e.kind === 'conflict')).toBe(true);
    expect((await cli('deliveries', 'show', dead.id)).json).toMatchObject({ id: dead.id, status: 'failed' });
  }, 120_000);

  it('deliveries list --target lists what it left behind; a name neither configured nor in any delivery is not_found', async () => {
    broken = false;
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(async () => (await getUser(api, token, id)).body.sync[0]?.status === 'delivered', 30_000);

    const left = await withoutTarget('deliveries', 'list', '--target', 'dictation', '--status', 'delivered');
    expect(left.code, JSON.stringify(left.json)).toBe(0);
    expect(left.json).toMatchObject({ status: 'delivered', target: 'dictation', truncated: false });
    expect(left.json.deliveries.some((d: { external_provider_id: string }) => d.external_provider_id === id)).toBe(true);
    expect(left.json.deliveries.every((d: { target: string }) => d.target === 'dictation')).toBe(true);
    expect(left.stderr).toContain('target dictation is not in DOWNSTREAM_TARGETS');

    const unknown = await withoutTarget('deliveries', 'list', '--target', 'gamma');
    expect(unknown.code).toBe(1);
    expect(unknown.json).toEqual({ error: { kind: 'not_found', message: 'No target named gamma is configured (DOWNSTREAM_TARGETS).' } });
  }, 120_000);
});
