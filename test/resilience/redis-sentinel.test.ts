import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { freePort, startPrivateRedis, stopChild, waitForPort, type RunningService } from '@connect/local-services';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

let primary: RunningService;
let sentinel: ChildProcess;
let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;

// docs/guarantees.md, Scaling out: Redis behind Sentinel. The API and the worker ask a real Sentinel
// (redis-server --sentinel, started here) for the primary named "connect-primary".
beforeAll(async () => {
  primary = await startPrivateRedis();
  // Chosen in advance (not listen(0)): Sentinel reads its port from its config file and cannot report one it picked.
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sentinel-'));
  const conf = join(dir, 'sentinel.conf');
  writeFileSync(conf, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, `sentinel monitor connect-primary 127.0.0.1 ${primary.port} 1`, 'sentinel down-after-milliseconds connect-primary 5000', ''].join('\n'));
  sentinel = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  await waitForPort(port);

  receiver = await startReceiver();
  api = await startTestApi({
    label: 'sentinel',
    env: { REDIS_URL: `redis+sentinel://127.0.0.1:${port}/connect-primary`, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]) },
  });
  worker = await startTestWorker(api.env);
}, 60_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
  if (sentinel) await stopChild(sentinel);
  await primary?.stop();
});

describe('Redis Sentinel (REDIS_URL=redis+sentinel://host:port/<primary name>)', () => {
  it('finds the primary through Sentinel: ready, and events are delivered', async () => {
    expect((await http(`${api.origin}/readyz`)).status).toBe(200);
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(() => receiver.accepted().some((c) => c.body.data.user.external_provider_id === id), 30_000);
    // The jobs went to the primary the Sentinel named.
    const { Redis } = await import('ioredis');
    const direct = new Redis(primary.url);
    try {
      expect((await direct.keys(`${api.env.QUEUE_PREFIX}:*`)).length).toBeGreaterThan(0);
    } finally {
      direct.disconnect();
    }
  }, 60_000);
});
