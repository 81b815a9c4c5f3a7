import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import mongoose from 'mongoose';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import {
  collectionsOf,
  createModels,
  createRedis,
  DEFAULT_DELIVERY_POLICY,
  ensureIndexes,
  HeldStates,
  mongoConnectionOptions,
  TargetHealth,
  targetStateDocSchema,
  type Models,
  type RedisClient,
} from '@connect/shared';
import { REPO_ROOT, startPrivateRedis, type RunningService } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl, postUser, uniquePrefix } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { nodeArgsOf } from '../support/entry-points.ts';

// Each CLI call is a process of its own (a second or more on a loaded two-core machine).
vi.setConfig({ testTimeout: 180_000 });

/**
 * The held target states (`paused` by an operator, `disabled` by a 410 Gone or by
 * failing too long) are kept in MongoDB beside Redis (docs/delivery.md, "Target
 * health"), so a Redis that lost its data does not turn them back to `healthy`
 * and start sending to a target an operator or the receiver had stopped.
 */

describe('held states kept in MongoDB (TargetHealth on the real Redis and database)', () => {
  let conn: mongoose.Connection;
  let models: Models;
  let redis: RedisClient;
  let prefix: string;
  const healthOf = () => new TargetHealth(redis, prefix, Date.now, new HeldStates(collectionsOf(models).targetStates));
  /** What a Redis that lost its data has of a target: nothing. */
  const forget = (t: string) => redis.del(`${prefix}:target-health:${t}`, `${prefix}:target-probe:${t}`);

  beforeAll(async () => {
    const url = databaseUrl('held_states');
    conn = await mongoose.createConnection(url, mongoConnectionOptions(url)).asPromise();
    models = createModels(conn);
    await ensureIndexes(models);
    redis = createRedis(inject('redisUrl'), 'producer', { enableOfflineQueue: true });
    prefix = uniquePrefix('held');
  });
  afterAll(async () => {
    redis?.disconnect();
    await conn?.close();
  });

  it('two writes of a target\'s held state at once both succeed (the second upsert\'s duplicate key failed its delivery as an internal error, after a 410 beside a resume)', async () => {
    const held = new HeldStates(collectionsOf(models).targetStates);
    const names = Array.from({ length: 40 }, (_, i) => `race-${i}-${Date.now()}`);
    const results = await Promise.allSettled(names.flatMap((name) => [held.set(name, 'disabled', 'the receiver answered 410 Gone'), held.set(name, 'disabled', 'the receiver answered 410 Gone'), held.setIfAbsent(name, 'paused', 'copied')]));
    expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason).slice(0, 120))).toEqual([]);
    for (const name of names) expect((await held.get(name))?.state).toBe('disabled');
  });

  it('a pause is kept before it takes effect and forgotten by a resume; a Redis without it gets it back at the first admit, once', async () => {
    const [one, two] = [healthOf(), healthOf()];
    const rows = collectionsOf(models).targetStates;
    await one.setState('paused-t', 'paused', 'paused by an operator');
    const row = await rows.findOne({ _id: 'paused-t' });
    expect(row).toMatchObject({ state: 'paused', reason: 'paused by an operator' });
    // What is stored is exactly its schema (docs/guarantees.md, Data access).
    expect(targetStateDocSchema.strict().safeParse(row).error?.issues).toBeUndefined();

    await forget('paused-t');
    // Before anyone restores it, the view (`targets list`) already shows what MongoDB kept.
    expect(await two.get('paused-t')).toMatchObject({ state: 'paused', reason: 'paused by an operator' });
    expect(await redis.hget(`${prefix}:target-health:paused-t`, 'state')).toBeNull();
    // The first process to ask restores it (and is told so, to pause the queue); the next just holds.
    expect(await one.admit('paused-t', 5000)).toEqual({ kind: 'hold', ms: 1000, state: 'paused', restored: true });
    expect(await two.admit('paused-t', 5000)).toEqual({ kind: 'hold', ms: 1000, state: 'paused' });
    expect(await two.get('paused-t')).toMatchObject({ state: 'paused', reason: 'paused by an operator' });

    await two.setState('paused-t', 'healthy');
    expect(await rows.findOne({ _id: 'paused-t' })).toBeNull();
    await forget('paused-t');
    expect(await one.admit('paused-t', 5000)).toEqual({ kind: 'send' });
    expect((await one.get('paused-t')).state).toBe('healthy');
  });

  it('a target disabled by failing too long is kept; a state set in Redis before the restore wins over the kept one', async () => {
    const health = healthOf();
    const rows = collectionsOf(models).targetStates;
    const policy = { ...DEFAULT_DELIVERY_POLICY, failureThreshold: 1, probeIntervalMs: 0, disableAfterMs: 0 };
    await health.recordFailure('tired', policy, 'HTTP 503');
    const probe = await health.admit('tired', 5000);
    expect(probe.kind).toBe('probe');
    expect(await health.recordFailure('tired', policy, 'HTTP 503', probe.kind === 'probe' ? probe.token : undefined)).toEqual({ from: 'failing', to: 'disabled' });
    expect(await rows.findOne({ _id: 'tired' })).toMatchObject({ state: 'disabled', reason: 'failing for longer than 0ms' });

    // Redis lost it, then got a state of its own before any restore (written to Redis alone,
    // the row left as it was): the restore leaves the state there, whatever the row says.
    await forget('tired');
    await new TargetHealth(redis, prefix).setState('tired', 'healthy');
    expect(await health.restore('tired')).toEqual({ state: 'healthy', restored: false });
    expect(await rows.findOne({ _id: 'tired' })).toMatchObject({ state: 'disabled' });
    expect(await health.admit('tired', 5000)).toEqual({ kind: 'send' });
  });

  it('a held state set in Redis alone (before the rows existed) is copied to MongoDB once, never over a newer row', async () => {
    const health = healthOf();
    const rows = collectionsOf(models).targetStates;
    const legacy = new TargetHealth(redis, prefix); // Redis only, as before
    await legacy.setState('old-pause', 'paused', 'paused by an operator');
    await health.keepHeldState('old-pause');
    expect(await rows.findOne({ _id: 'old-pause' })).toMatchObject({ state: 'paused', reason: 'paused by an operator' });

    await health.setState('old-pause', 'disabled', 'the receiver answered 410 Gone');
    await legacy.setState('old-pause', 'paused', 'paused by an operator');
    await health.keepHeldState('old-pause');
    expect(await rows.findOne({ _id: 'old-pause' })).toMatchObject({ state: 'disabled' });
    // A healthy target gets no row.
    await health.keepHeldState('never-held');
    expect(await rows.findOne({ _id: 'never-held' })).toBeNull();
  });
});

describe('Redis loses its data while targets are paused and disabled (worker, CLI, private Redis)', () => {
  let redis: RunningService;
  let paused: Receiver;
  let gone: Receiver;
  let live: Receiver;
  let stack: DeliveryStack;
  let answerGone = true;
  const run = promisify(execFile);

  async function cli(...args: string[]): Promise<any> {
    const { stdout } = await run(process.execPath, [...nodeArgsOf('cli'), ...args], { cwd: REPO_ROOT, env: { ...process.env, ...stack.api.env } });
    return JSON.parse(stdout);
  }
  const stateOf = async (name: string) => ((await cli('targets', 'list')).targets as { name: string; state: string }[]).find((t) => t.name === name)?.state;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    paused = await startReceiver();
    gone = await startReceiver(() => ({ status: answerGone ? 410 : 200 }));
    live = await startReceiver();
    stack = await startDeliveryStack({
      label: 'held_redis_loss',
      targets: [target('paused', paused.url), target('gone', gone.url), target('live', live.url)],
      api: { env: { REDIS_URL: `redis://127.0.0.1:${redis.port}` } },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await Promise.all([paused?.close(), gone?.close(), live?.close(), redis?.stop()]);
  });

  it('nothing goes to either target after the loss; both stay held in `targets list` and drain after `targets resume`', async () => {
    const { api, token, worker } = stack;
    const write = async (id: string) => expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const before = `held-before-${Date.now()}`;
    await write(before);
    // `gone` answers 410 and is disabled; `paused` is paused by an operator after its first callback.
    await eventually(() => paused.accepted().some((c) => userOf(c) === before) && live.accepted().some((c) => userOf(c) === before), 30_000);
    await eventually(async () => (await worker.deps.health.get('gone')).state === 'disabled', 30_000);
    expect((await cli('targets', 'pause', 'paused')).state).toBe('paused');

    const flusher = new Redis(redis.port, '127.0.0.1');
    await flusher.flushall();
    await flusher.quit();
    const [pausedSeen, goneSeen] = [paused.received.length, gone.received.length];

    const after = `held-after-${Date.now()}`;
    await write(after);
    // The positive signal: the healthy target got the new user, so the worker ran its fan-out and deliveries.
    await eventually(() => live.accepted().some((c) => userOf(c) === after), 30_000);
    const recovery = await eventually(async () => (await worker.worker.redisLoss.checkNow()) ?? (await worker.deps.health.get('paused')).state === 'paused', 30_000);
    if (recovery !== true) expect(recovery.lostData).toBe(true);
    expect(await stateOf('paused')).toBe('paused');
    expect(await stateOf('gone')).toBe('disabled');
    expect(paused.received.length).toBe(pausedSeen);
    expect(gone.received.length).toBe(goneSeen);
    // Their queues are paused again, as `targets pause` and a 410 leave them.
    await eventually(async () => (await worker.deps.deliveries.get('paused')!.isPaused()) && (await worker.deps.deliveries.get('gone')!.isPaused()), 15_000);

    answerGone = false;
    expect((await cli('targets', 'resume', 'paused')).state).toBe('healthy');
    expect((await cli('targets', 'resume', 'gone')).state).toBe('healthy');
    await eventually(() => paused.accepted().some((c) => userOf(c) === after) && gone.accepted().some((c) => userOf(c) === after), 30_000);
    expect(await collectionsOf(api.models).targetStates.countDocuments({})).toBe(0);
  });
});
