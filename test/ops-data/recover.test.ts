/**
 * `deliveries recover --target NAME --since ISO [--until ISO]`: dead letters
 * selected by the time they were dead-lettered, against a real worker, FerretDB,
 * Redis and a receiver, with the CLI as a child process.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionOf, DeliveryStore, recoverDeliveries, type DeliveryDoc } from '@connect/shared';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, sleep, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';
import { runCli } from '../support/cli-child.ts';
import { filtersOn, isIdEquality, watchCommands } from '../support/watched-commands.ts';

let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;
let token: string;
/** Users whose callbacks the receiver refuses with a 400 (dead-lettered at once) while this holds. */
const refused = new Set<string>();

const cli = (...args: string[]) => runCli(api.env, args);

const rowsOf = (ids: string[]) => collectionOf(api.models.Delivery).find({ external_provider_id: { $in: ids } }).toArray() as Promise<DeliveryDoc[]>;
const acceptedFor = (id: string) => receiver.accepted().filter((c) => c.body.data.user.external_provider_id === id);

/** Creates users (some updated once more), all refused: waits until each of their rows is a dead letter. */
async function deadLetters(label: string, n: number, updateFirst = false): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${label}-${i}-${randomUUID().slice(0, 6)}`);
  for (const id of ids) refused.add(id);
  for (const id of ids) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  if (updateFirst) {
    await eventually(async () => (await rowsOf([ids[0]!])).every((r) => r.status === 'failed'), 30_000);
    expect((await postUser(api, token, { provider_email: `${ids[0]}@example.com`, external_provider_id: ids[0], settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
  }
  const expected = n + (updateFirst ? 1 : 0);
  await eventually(async () => {
    const rows = await rowsOf(ids);
    return rows.length === expected && rows.every((r) => r.status === 'failed' && r.failed_at instanceof Date);
  }, 30_000);
  return ids;
}

beforeAll(async () => {
  receiver = await startReceiver((c) => (refused.has(c.body?.data?.user?.external_provider_id) ? { status: 400 } : { status: 200 }));
  api = await startTestApi({ label: 'recover', env: { DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]) } });
  worker = await startTestWorker(api.env);
  token = await getToken(api, await registerTestClient(api.models));
});
afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
});

describe('deliveries recover: dead letters by the time they were dead-lettered', () => {
  it('re-sends exactly the dead letters of the window (newest state, created first) and not those before or after it', async () => {
    const before = await deadLetters('before', 3);
    await sleep(20);
    const since = new Date();
    const inside = await deadLetters('inside', 4, true);
    await sleep(20);
    const until = new Date();
    await sleep(20);
    const after = await deadLetters('after', 3);
    const outsideRowsBefore = await rowsOf([...before, ...after]);

    for (const id of [...before, ...inside, ...after]) refused.delete(id);
    const result = await cli('deliveries', 'recover', '--target', 'dictation', '--since', since.toISOString(), '--until', until.toISOString());
    expect(result.code, JSON.stringify(result.json)).toBe(0);
    // Four users, one of them with two dead letters (its creation and its update).
    expect(result.json).toEqual({ recovered: 5 });

    await eventually(async () => (await rowsOf(inside)).every((r) => r.status === 'delivered' || r.status === 'superseded'), 30_000);
    for (const id of inside) {
      const calls = acceptedFor(id);
      expect(calls[0]!.body.type).toBe('user.created');
      expect(calls.at(-1)!.body.data.version).toBe(id === inside[0] ? 2 : 1);
      expect(calls).toHaveLength(id === inside[0] ? 2 : 1);
    }
    // A later positive signal: a user created now reaches the receiver; the ones outside the window still did not.
    const sentinel = `sentinel-${randomUUID().slice(0, 6)}`;
    expect((await postUser(api, token, { provider_email: `${sentinel}@example.com`, external_provider_id: sentinel })).status).toBe(201);
    await eventually(() => acceptedFor(sentinel).length === 1, 30_000);
    for (const id of [...before, ...after]) expect(acceptedFor(id), id).toHaveLength(0);
    const outsideRowsAfter = await rowsOf([...before, ...after]);
    expect(outsideRowsAfter.map((r) => [r._id, r.status, r.failed_at?.getTime(), r.attempts])).toEqual(
      outsideRowsBefore.map((r) => [r._id, 'failed', r.failed_at?.getTime(), r.attempts]),
    );

    // Run again: nothing in the window is dead any more.
    expect((await cli('deliveries', 'recover', '--target', 'dictation', '--since', since.toISOString(), '--until', until.toISOString())).json).toEqual({ recovered: 0 });
    // Without --until: everything dead-lettered since, up to now (the three after the window).
    const open = await cli('deliveries', 'recover', '--target', 'dictation', '--since', until.toISOString());
    expect(open.code, JSON.stringify(open.json)).toBe(0);
    expect(open.json).toEqual({ recovered: 3 });
    await eventually(async () => (await rowsOf(after)).every((r) => r.status === 'delivered'), 30_000);
    expect((await rowsOf(before)).every((r) => r.status === 'failed')).toBe(true);
  }, 180_000);

  it('a dead letter written by a version without failed_at is selected by its last write (updated_at), the time it was dead-lettered', async () => {
    const ids = await deadLetters('legacy', 3);
    const rows = collectionOf(api.models.Delivery);
    // As an earlier version left them: no failed_at; two dead-lettered an hour ago, one a day ago.
    const hourAgo = new Date(Date.now() - 3_600_000);
    await rows.updateMany({ external_provider_id: { $in: ids.slice(0, 2) } }, { $unset: { failed_at: '' }, $set: { updated_at: hourAgo } });
    await rows.updateMany({ external_provider_id: ids[2] }, { $unset: { failed_at: '' }, $set: { updated_at: new Date(Date.now() - 86_400_000) } });
    for (const id of ids) refused.delete(id);
    const since = new Date(hourAgo.getTime() - 60_000).toISOString();
    const until = new Date(hourAgo.getTime() + 60_000).toISOString();
    const result = await cli('deliveries', 'recover', '--target', 'dictation', '--since', since, '--until', until);
    expect(result.json).toEqual({ recovered: 2 });
    await eventually(() => ids.slice(0, 2).every((id) => acceptedFor(id).length === 1), 30_000);
    expect(acceptedFor(ids[2]!)).toHaveLength(0);
    expect((await rowsOf([ids[2]!]))[0]!.status).toBe('failed');
  }, 120_000);

  it('walks the dead letters in one read, and finds users and claims rows by _id one at a time, never with $in (on FerretDB a $in scans the whole collection, once per user)', async () => {
    const since = new Date();
    const ids = await deadLetters('watched', 3);
    for (const id of ids) refused.delete(id);
    // Batches of 2 over three dead letters: the walk goes on past its first batch.
    const { result, seen } = await watchCommands(api.env.MONGO_URL!, (models) =>
      recoverDeliveries({ store: new DeliveryStore(models), queues: worker.deps.deliveries, targets: worker.deps.config.downstreamTargets }, { target: 'dictation', since, batchSize: 2 }),
    );
    expect(result).toEqual({ recovered: 3 });
    await eventually(() => ids.every((id) => acceptedFor(id).length > 0), 30_000);

    // One query for the whole walk, its later batches read with getMore (before: a sorted query per batch).
    expect(filtersOn(seen, 'deliveries', 'find')).toHaveLength(1);
    expect(seen.some((e) => e.commandName === 'getMore' && e.command.collection === 'deliveries')).toBe(true);
    const users = filtersOn(seen, 'provider_users', 'find');
    const claims = filtersOn(seen, 'deliveries', 'update');
    expect(users).toHaveLength(3);
    expect(claims).toHaveLength(3);
    for (const f of [...users, ...claims]) expect(isIdEquality(f), JSON.stringify(f)).toBe(true);
  }, 120_000);

  it('refuses a bad window or an unknown target in JSON', async () => {
    const bad = await cli('deliveries', 'recover', '--target', 'dictation', '--since', 'yesterday');
    expect(bad.code).not.toBe(0);
    expect(bad.json.error.kind).toBe('usage');
    expect(JSON.stringify(bad.json.error)).toContain('since');
    const reversed = await cli('deliveries', 'recover', '--target', 'dictation', '--since', '2026-01-02T00:00:00Z', '--until', '2026-01-01T00:00:00Z');
    expect(reversed.json.error.kind).toBe('usage');
    const missing = await cli('deliveries', 'recover', '--since', '2026-01-02T00:00:00Z');
    expect(missing.json.error.kind).toBe('usage');
    const unknown = await cli('deliveries', 'recover', '--target', 'nowhere', '--since', '2026-01-02T00:00:00Z');
    expect(unknown.json.error.kind).toBe('not_found');
  }, 120_000);
});
