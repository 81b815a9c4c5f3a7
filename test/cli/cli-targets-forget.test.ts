/**
 * `pnpm cli targets forget NAME`: everything stored for a target taken out of
 * DOWNSTREAM_TARGETS goes (its queue and health in Redis; its deliveries,
 * attempts, sync records, held state and resync cursors in MongoDB), nothing
 * of the other targets does, and it is refused while the target is configured
 * or a worker still serves it. The API and a worker in this process, FerretDB,
 * Redis, receivers on real ports, the CLI as a child process.
 */
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Types } from 'mongoose';
import { collectionOf, forgetTarget, syncStateIdOf, type DeliveryDoc } from '@connect/shared';
import { postUser } from '../support/harness.ts';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { eventually, startReceiver, userOf, type Receiver } from '../worker/callback-receiver.ts';
import { runCli } from '../support/cli-child.ts';
import { filtersOn, isIdEquality, watchCommands } from '../support/watched-commands.ts';

vi.setConfig({ testTimeout: 240_000 });

let stack: DeliveryStack;
let keep: Receiver;
let old: Receiver;

const cli = (env: Record<string, string>, ...args: string[]) => runCli({ ...stack.api.env, ...env }, args);

async function createUsers(n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, () => `fg-${randomUUID().slice(0, 8)}`);
  for (const id of ids) expect((await postUser(stack.api, stack.token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
  return ids;
}

/** What MongoDB holds for a target. */
async function storedFor(name: string) {
  const rows = (await collectionOf(stack.api.models.Delivery).find({ target: name }).toArray()) as DeliveryDoc[];
  const attempts = await collectionOf(stack.api.models.DeliveryAttempt).countDocuments({ delivery_id: { $in: rows.map((r) => r._id) } });
  const syncs = await collectionOf(stack.api.models.SyncState).countDocuments({ target: name });
  const held = await collectionOf(stack.api.models.TargetState).countDocuments({ _id: name });
  return { rows, attempts, syncs, held };
}

/** Redis keys of a target: its queue's and its health's. */
async function redisKeysOf(name: string): Promise<string[]> {
  const prefix = stack.api.env.QUEUE_PREFIX!;
  const redis = stack.api.deps.redis;
  const [queue, health] = await Promise.all([redis.keys(`${prefix}:deliveries.${name}:*`), redis.keys(`${prefix}:target-*:${name}`)]);
  return [...queue, ...health];
}

beforeAll(async () => {
  [keep, old] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({ label: 'cli-forget', targets: [target('keep', keep.url), target('old', old.url)] });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([keep?.close(), old?.close()]);
});

describe('targets forget', () => {
  it('is refused while configured or served; then deletes what the target left in Redis and MongoDB (pending rows included) and nothing of the other target; a second run prints zeros', async () => {
    const delivered = await createUsers(4);
    await eventually(() => [keep, old].every((r) => delivered.every((id) => r.accepted().some((c) => userOf(c) === id))), 60_000);
    // Held work: the target paused, three more users, whose rows stay pending and jobs wait.
    expect((await cli({}, 'targets', 'pause', 'old')).code).toBe(0);
    const held = await createUsers(3);
    await eventually(() => held.every((id) => keep.accepted().some((c) => userOf(c) === id)), 60_000);
    await eventually(async () => (await cli({}, 'targets', 'list')).json.targets.find((t: { name: string }) => t.name === 'old')?.backlog === 3, 30_000, 250);
    // Resync cursors: this target's, and one of a target whose name starts the same.
    const cursors = collectionOf(stack.api.models.RelayCursor);
    await cursors.insertMany(['resync:old:*', 'resync:old:org-1:force', 'resync:old-2:*', 'resync:keep:*'].map((_id) => ({ _id, updated_at: new Date(), user_id: null })) as never);

    const before = await storedFor('old');
    expect(before.rows.filter((r) => r.status === 'pending')).toHaveLength(3);
    expect(before.rows.filter((r) => r.status === 'delivered')).toHaveLength(4);
    expect(before.attempts).toBeGreaterThanOrEqual(4);
    expect(before.held).toBe(1);
    expect(await redisKeysOf('old')).not.toHaveLength(0);
    const keepBefore = await storedFor('keep');

    // Not a target name (a pattern would reach other targets' data): refused before anything is read.
    const pattern = await cli({}, 'targets', 'forget', '*');
    expect(pattern.code).toBe(2);
    expect(pattern.json.error).toMatchObject({ kind: 'usage', message: expect.stringContaining('is not a target name') });
    // So for every targets command (pause, resume and resync answered such a name `not_found`).
    for (const verb of ['pause', 'resume', 'resync']) {
      const bad = await cli({}, 'targets', verb, 'bad name!');
      expect(bad.code, verb).toBe(2);
      expect(bad.json.error, verb).toMatchObject({ kind: 'usage', message: expect.stringContaining('is not a target name') });
    }
    // Still in DOWNSTREAM_TARGETS.
    const configured = await cli({}, 'targets', 'forget', 'old');
    expect(configured.code).not.toBe(0);
    expect(configured.json.error).toMatchObject({ kind: 'conflict', message: expect.stringContaining('DOWNSTREAM_TARGETS') });
    // Taken out of this process's configuration, but the running worker still serves it.
    const onlyKeep = { DOWNSTREAM_TARGETS: JSON.stringify([target('keep', keep.url)]) };
    const served = await cli(onlyKeep, 'targets', 'forget', 'old');
    expect(served.code).not.toBe(0);
    expect(served.json.error).toMatchObject({ kind: 'conflict', message: expect.stringMatching(/worker connection\(s\) still serve target old/) });
    // Refusals change nothing.
    expect((await storedFor('old')).rows).toHaveLength(7);

    await stack.worker.close();
    // A Retry-After hold on its queue (a key of its own, which BullMQ's obliterate leaves).
    const oldQueue = new Queue('deliveries.old', { connection: stack.api.deps.redis, prefix: stack.api.env.QUEUE_PREFIX });
    await oldQueue.rateLimit(600_000);
    await oldQueue.close();
    expect(await redisKeysOf('old')).toContain(`${stack.api.env.QUEUE_PREFIX}:deliveries.old:limiter`);
    const keepQueue = new Queue('deliveries.keep', { connection: stack.api.deps.redis, prefix: stack.api.env.QUEUE_PREFIX });
    const keepJobs = await keepQueue.getJobCounts();
    const forgot = await cli(onlyKeep, 'targets', 'forget', 'old');
    expect(forgot.code, JSON.stringify(forgot.json)).toBe(0);
    expect(forgot.json).toEqual({ target: 'old', jobs: expect.any(Number), deliveries: 7, attempts: before.attempts, sync_states: before.syncs });
    expect(forgot.json.jobs).toBeGreaterThanOrEqual(3);

    expect(await storedFor('old')).toEqual({ rows: [], attempts: 0, syncs: 0, held: 0 });
    expect(await redisKeysOf('old')).toEqual([]);
    expect((await cursors.find({ _id: { $regex: '^resync:' } }).toArray()).map((c) => c._id).sort()).toEqual(['resync:keep:*', 'resync:old-2:*']);
    // The other target keeps everything.
    const keepAfter = await storedFor('keep');
    expect(keepAfter.rows.map((r) => r._id).sort()).toEqual(keepBefore.rows.map((r) => r._id).sort());
    expect(keepAfter.attempts).toBe(keepBefore.attempts);
    expect(keepAfter.syncs).toBe(keepBefore.syncs);
    // Its queue keeps its jobs (keys with a TTL of their own come and go, so jobs are compared, not keys).
    expect(await keepQueue.getJobCounts()).toEqual(keepJobs);
    expect(keepJobs.completed).toBeGreaterThan(0);
    await keepQueue.close();

    const again = await cli(onlyKeep, 'targets', 'forget', 'old');
    expect(again.json).toEqual({ target: 'old', jobs: 0, deliveries: 0, attempts: 0, sync_states: 0 });
    expect(again.code).toBe(0);
    // Zeros read the same for a misspelt name: stderr says nothing was there (the first run said nothing of the kind).
    expect(again.stderr).toContain('no jobs, deliveries or sync records were stored for target old');
    expect(forgot.stderr).not.toContain('no jobs, deliveries or sync records');
  });
  it('reads the sync records of the target once and deletes them by _id in batches, never with $in (on FerretDB a $in scans the records of every user and target, per batch)', async () => {
    const syncStates = collectionOf(stack.api.models.SyncState);
    const record = (target: string) => {
      const userId = new Types.ObjectId();
      return { _id: syncStateIdOf(userId.toHexString(), target), organization_id: 'org', user_id: userId, target, delivered_version: 1, status: 'delivered', attempts: 1, last_attempt_at: new Date(), last_error: null, updated_at: new Date() };
    };
    // More than one batch of 1,000, and another target's records beside them.
    await syncStates.insertMany([...Array.from({ length: 2_300 }, () => record('gone')), ...Array.from({ length: 5 }, () => record('stays'))] as never);
    const stays = await syncStates.countDocuments({ target: 'stays' });

    const { result, seen } = await watchCommands(stack.api.env.MONGO_URL!, (models) =>
      forgetTarget({ models, redis: stack.api.deps.redis, queuePrefix: stack.api.env.QUEUE_PREFIX!, configured: ['keep', 'stays'] }, 'gone'),
    );
    expect(result.sync_states).toBe(2_300);
    expect(await syncStates.countDocuments({ target: 'gone' })).toBe(0);
    expect(await syncStates.countDocuments({ target: 'stays' })).toBe(stays);

    expect(filtersOn(seen, 'sync_states', 'find')).toEqual([{ target: 'gone' }]);
    const deletes = filtersOn(seen, 'sync_states', 'delete');
    expect(deletes).toHaveLength(2_300);
    // In batches of 1,000: three commands.
    expect(seen.filter((e) => e.commandName === 'delete' && e.command.delete === 'sync_states')).toHaveLength(3);
    for (const f of deletes) expect(isIdEquality(f), JSON.stringify(f)).toBe(true);
  });
});
