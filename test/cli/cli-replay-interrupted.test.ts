/**
 * `deliveries replay --all-failed` and `deliveries recover` stopped by Ctrl-C or SIGTERM (main.ts
 * turns the signal into the command's `stop`, as for `targets resync`): they stop between two dead
 * letters, never between a row's claim (failed → pending) and its job, and print what they did with
 * `"interrupted": true`, exit 130. Killed outright before, a claimed row could be left pending with
 * no job behind it, which `replay` then refused as not failed. The commands run in-process here over
 * real FerretDB and Redis, with the stop aborted by the test: the signal wiring is
 * cli-resync-signals.test.ts's.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { deliveryQueueName, loadConfig, type DeliveryDoc } from '@connect/shared';
import type { CliContext } from '@connect/cli/src/command.ts';
import { connectRedis } from '@connect/cli/src/datastores.ts';
import { deliveriesCommands } from '@connect/cli/src/deliveries-command.ts';
import { recoverCommand } from '@connect/cli/src/recover-command.ts';
import { getToken, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
const target = `stop-${randomUUID().slice(0, 8)}`;
let userId: DeliveryDoc['user_id'];
const ROWS = 300;

beforeAll(async () => {
  api = await startTestApi({ label: 'cli_replay_stop' });
  const clinic = await registerTestClient(api.models);
  const external = `stop-${randomUUID()}`;
  expect((await postUser(api, await getToken(api, clinic), { provider_email: `${external}@example.com`, external_provider_id: external })).status).toBe(201);
  const user = (await api.models.ProviderUser.findOne({ external_provider_id: external }).lean())!;
  userId = user._id;
  const at = new Date(Date.now() - 60_000);
  const rows: DeliveryDoc[] = Array.from({ length: ROWS }, (_, i) => {
    const event = randomUUID();
    return {
      _id: `${event}.${target}`,
      event_id: event,
      event_type: 'user.updated',
      organization_id: clinic.organization._id,
      user_id: userId,
      external_provider_id: external,
      target,
      version: 1,
      status: 'failed',
      attempts: 3,
      last_status_code: 500,
      last_error: 'HTTP 500',
      created_at: at,
      updated_at: new Date(at.getTime() + i),
      delivered_at: null,
      failed_at: new Date(at.getTime() + i),
    };
  });
  await api.models.Delivery.collection.insertMany(rows as never[]);
});
const redisClients: Awaited<ReturnType<typeof connectRedis>>[] = [];
afterAll(async () => {
  for (const r of redisClients) r.disconnect();
  await api?.close();
});

function context(stop: AbortSignal): CliContext {
  const config = loadConfig({ ...api.env, DOWNSTREAM_TARGETS: JSON.stringify([{ name: target, url: 'http://127.0.0.1:9/', secrets: ['s3cret-for-stop'] }]) }, { require: { redis: false } });
  const redis = async () => {
    const client = await connectRedis(config);
    redisClients.push(client);
    return client;
  };
  return { config, models: api.models, redis, stop };
}
const pendingCount = () => api.models.Delivery.countDocuments({ target, status: 'pending' });

describe('deliveries replay --all-failed and recover, stopped', () => {
  it('replay --all-failed stopped half-way: what it replayed, "interrupted": true, exit 130, and no row claimed that it does not report', async () => {
    const replay = deliveriesCommands.find((c) => c.name === 'deliveries replay')!;
    expect(replay.stopNotice, 'main.ts turns Ctrl-C and SIGTERM into `stop` only for a command with a stopNotice').toMatch(/^interrupted: /);
    const stop = new AbortController();
    // Stopped once its first dead letter is claimed, as Ctrl-C in the middle of a run.
    const watch = (async () => {
      while (!stop.signal.aborted && (await pendingCount()) === 0) await new Promise((r) => setTimeout(r, 20));
      stop.abort();
    })();
    process.exitCode = undefined;
    // The worker's retry schedule (the CLI reads it as the worker does): 1 s, 1 s, so 3 attempts, not the default's.
    process.env.WORKER_RETRY_SCHEDULE = '1s,1s';
    try {
      const result = (await replay.run(replay.parse({ values: { 'all-failed': true }, positionals: [] }), context(stop.signal))) as { replayed: { id: string }[]; errors: unknown[]; interrupted?: boolean };
      stop.abort();
      await watch;
      expect(result.interrupted).toBe(true);
      expect(process.exitCode).toBe(130);
      expect(result.errors).toEqual([]);
      expect(result.replayed.length).toBeGreaterThan(0);
      expect(result.replayed.length).toBeLessThan(ROWS);
      // Every claimed row is one it reports; the rest are still dead letters, which the same command replays.
      expect(await pendingCount()).toBe(result.replayed.length);
      expect(await api.models.Delivery.countDocuments({ target, status: 'failed' })).toBe(ROWS - result.replayed.length);
      // The replayed job retries as the worker's own would (it got BullMQ's default of the CLI before).
      const jobs = await new Queue(deliveryQueueName(target), { connection: redisClients[0]!, prefix: api.env.QUEUE_PREFIX }).getJobs(['wait', 'delayed', 'prioritized', 'paused']);
      expect(jobs.map((j) => j.opts.attempts)).toEqual(jobs.map(() => 3));
      expect(jobs.length).toBeGreaterThan(0);
    } finally {
      delete process.env.WORKER_RETRY_SCHEDULE;
      process.exitCode = undefined;
    }
  }, 60_000);

  it('recover stopped before its first user: nothing claimed, {"recovered": 0, "interrupted": true}, exit 130', async () => {
    expect(recoverCommand.stopNotice).toMatch(/^interrupted: /);
    const before = await pendingCount();
    const stop = new AbortController();
    stop.abort();
    process.exitCode = undefined;
    try {
      const since = new Date(Date.now() - 3_600_000).toISOString();
      const result = await recoverCommand.run(recoverCommand.parse({ values: { target, since }, positionals: [] }), context(stop.signal));
      expect(result).toEqual({ recovered: 0, interrupted: true });
      expect(process.exitCode).toBe(130);
      expect(await pendingCount()).toBe(before);
    } finally {
      process.exitCode = undefined;
    }
  });
});
