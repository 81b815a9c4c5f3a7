import { createServer, type AddressInfo } from 'node:net';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { BackgroundValue, createApiMetrics } from './metrics.ts';

describe('BackgroundValue: a gauge refreshed in the background, at most once per interval', () => {
  it('the first read waits for a value; reads within the interval reuse it and never run the query again', async () => {
    let runs = 0;
    const v = new BackgroundValue(async () => ++runs, 60_000);
    expect(await v.get()).toBe(1);
    for (let i = 0; i < 50; i++) expect(await v.get()).toBe(1);
    expect(runs).toBe(1);
  });

  it('past the interval a read answers the old value at once and starts one refresh, never two at once', async () => {
    let runs = 0;
    let release!: () => void;
    const v = new BackgroundValue(async () => {
      runs++;
      if (runs > 1) await new Promise<void>((r) => (release = r));
      return runs;
    }, 0);
    expect(await v.get()).toBe(1);
    // Interval 0: every read is "stale"; the refresh hangs until released.
    expect(await v.get()).toBe(1);
    expect(await v.get()).toBe(1);
    expect(runs).toBe(2);
    release();
    await new Promise((r) => setTimeout(r, 10));
    expect(await v.get()).toBe(2);
  });

  it('a failed refresh keeps the last value', async () => {
    let runs = 0;
    const v = new BackgroundValue(async () => {
      if (++runs > 1) throw new Error('database away');
      return 'ok';
    }, 0);
    expect(await v.get()).toBe('ok');
    expect(await v.get()).toBe('ok');
    await new Promise((r) => setTimeout(r, 10));
    expect(await v.get()).toBe('ok');
  });

  it('with no value yet, a read waits at most firstWaitMs and answers without one; the load finishing later fills it', async () => {
    let release!: (v: number) => void;
    const v = new BackgroundValue(() => new Promise<number>((r) => (release = r)), 60_000, 50);
    expect(await v.get()).toBeUndefined();
    release(7);
    await new Promise((r) => setTimeout(r, 10));
    expect(await v.get()).toBe(7);
  });
});

describe('createApiMetrics with Redis down since the start', () => {
  it('a scrape still answers, with the process and write figures, though the queue counts never come', async () => {
    // A port nothing listens on: ioredis queues the commands while it retries, so getJobCounts never settles.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const connection = new Redis(port, '127.0.0.1', { maxRetriesPerRequest: null, lazyConnect: false });
    connection.on('error', () => undefined);
    const queue = new Queue('user-events', { connection });
    queue.on('error', () => undefined);
    try {
      const { registry } = createApiMetrics({ queues: [queue], targetQueues: [{ target: 't', queue }], unpublished: async () => ({ count: 0, capped: false }) });
      // Before, the scrape waited on the counts for ever (the API's request deadline made it a 503).
      const text = await registry.metrics();
      expect(text).toMatch(/^connect_api_process_cpu_seconds_total /m);
      expect(text).toMatch(/^connect_provider_user_upserts_total\{outcome="created"\} 0$/m);
      expect(text).not.toMatch(/^connect_queue_jobs\{/m);
    } finally {
      connection.disconnect();
    }
  });
});
