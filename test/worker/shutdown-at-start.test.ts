import { afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import { WORKER_SHUTDOWN_STEPS } from '@connect/worker';
import { databaseUrl, uniquePrefix } from '../support/harness.ts';
import { startTestWorker } from './worker-under-test.ts';

/**
 * A worker stopped moments after it starts (a supervisor's quick restart, a deploy
 * rolled back) still has BullMQ connections opening. BullMQ 5 closed such a connection
 * and then emitted 'error' on it with no listener left, which killed the process with
 * exit 1 instead of the clean exit 0 SPEC asks for on SIGTERM (seen in CI as a flaky
 * `pnpm start:worker` SIGTERM test). patches/bullmq@5.81.5.patch backports BullMQ 6's fix.
 */
const escaped: unknown[] = [];
const record = (err: unknown) => escaped.push(err);
beforeEach(() => {
  process.on('uncaughtException', record);
  process.on('unhandledRejection', record);
});
afterEach(() => {
  process.off('uncaughtException', record);
  process.off('unhandledRejection', record);
});

describe('a worker shut down while its queue connections are still opening', () => {
  it('completes every shutdown step, 15 times in a row with 3 targets, and nothing escapes as an uncaught error', async () => {
    const targets = ['a', 'b', 'c'].map((name) => ({ name, url: `http://127.0.0.1:9/${name}`, secrets: ['s'] }));
    const env = {
      MONGO_URL: databaseUrl('shutdown_at_start'),
      REDIS_URL: inject('redisUrl'),
      QUEUE_PREFIX: uniquePrefix('shutdown_at_start'),
      DOWNSTREAM_TARGETS: JSON.stringify(targets),
    };
    for (let round = 0; round < 15; round++) {
      const worker = await startTestWorker(env);
      expect(await worker.close(), `round ${round}`).toEqual([...WORKER_SHUTDOWN_STEPS]);
    }
    // The connections' own failures arrive after close() returns: a later round's full
    // start and stop gives them time, and one more round's end is the signal to look.
    const last = await startTestWorker(env);
    await last.deps.eventsQueue.waitUntilReady();
    expect(await last.close()).toEqual([...WORKER_SHUTDOWN_STEPS]);
    expect(escaped).toEqual([]);
  });
});
