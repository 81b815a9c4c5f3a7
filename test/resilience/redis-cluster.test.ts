import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getToken, getUser, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { freePort, stopChild, waitForPort } from '@connect/local-services';
import { eventually, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { startTestWorker, type TestWorker } from '../worker/worker-under-test.ts';

const run = promisify(execFile);
const nodes: ChildProcess[] = [];
let ports: number[] = [];
let api: TestApi;
let worker: TestWorker;
let receiver: Receiver;

// docs/guarantees.md, Scaling out: the API and the worker on a real three-node Redis
// Cluster started here (redis-server in cluster mode), with a hash-tagged queue prefix.
beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'redis-cluster-'));
  // Ports chosen in advance (not listen(0)): redis-server's `--port 0` means no TCP at all, and
  // cluster nodes must know each other's ports; a port taken meanwhile fails the start loudly.
  ports = [await freePort(), await freePort(), await freePort()];
  for (const port of ports) {
    nodes.push(
      spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction', '--dir', dir], { stdio: 'ignore' }),
    );
  }
  for (const port of ports) await waitForPort(port);
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes']);
  await eventually(async () => (await run('redis-cli', ['-p', String(ports[0]), 'cluster', 'info'])).stdout.includes('cluster_state:ok'), 20_000);

  receiver = await startReceiver();
  api = await startTestApi({
    label: 'cluster',
    env: {
      REDIS_URL: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
      QUEUE_PREFIX: `{cluster-${randomUUID().slice(0, 8)}}`,
      DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: receiver.url, secrets: ['s'] }]),
    },
  });
  worker = await startTestWorker(api.env);
}, 90_000);

afterAll(async () => {
  await worker?.close();
  await api?.close();
  await receiver?.close();
  for (const n of nodes) await stopChild(n);
});

describe('Redis Cluster (REDIS_URL=redis+cluster://…, QUEUE_PREFIX with a hash tag)', () => {
  it('is ready, delivers a created and an updated user in order, and rate limits through the cluster', async () => {
    expect((await http(`${api.origin}/readyz`)).status).toBe(200);
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US' } })).status).toBe(201);
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'FRENCH_FR' } })).status).toBe(200);
    await eventually(() => receiver.accepted().some((c) => c.body.data.version === 2), 30_000);
    const types = receiver.accepted().map((c) => `${c.body.type}@${c.body.data.version}`);
    expect(types[0]).toBe('user.created@1');
    expect(types.at(-1)).toBe('user.updated@2');
    await eventually(async () => (await getUser(api, token, id)).body.sync[0]?.status === 'delivered', 10_000);
    // The relay's "published" check (one pipeline of EXISTS over job keys) works across the cluster.
    const stored = (await api.models.ProviderUser.findOne({ external_provider_id: id }).lean())!;
    expect(await api.deps.relay.publishedAmong([stored.last_event.id, stored.created_event.id, 'never-published'])).toEqual(
      new Set([stored.last_event.id, stored.created_event.id]),
    );
    // Every key under the prefix sits on one node, as the hash tag intends.
    const perNode = await Promise.all(
      ports.map(async (p) => (await run('redis-cli', ['-p', String(p), '--scan', '--pattern', `${api.env.QUEUE_PREFIX}*`])).stdout.split('\n').filter(Boolean).length),
    );
    expect(perNode.filter((n) => n > 0)).toHaveLength(1);
    expect(Math.max(...perNode)).toBeGreaterThan(5);
  }, 60_000);
});
