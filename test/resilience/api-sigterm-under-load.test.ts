import { randomUUID } from 'node:crypto';
import mongoose from 'mongoose';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createModels, registerClient, registerOrganization } from '@connect/shared';
import { startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, rsaKeyPair, signAssertion, uniquePrefix } from '../support/harness.ts';
import { freePort } from '../support/local-services.ts';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
});

describe('SIGTERM under load (docs/contract.md, Events: stop taking work, finish what is in flight, exit 0)', () => {
  it('every request the API accepted gets a non-5xx answer and its user is stored; the process exits 0', async () => {
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    const env = {
      MONGO_URL: databaseUrl('sigterm'),
      REDIS_URL: inject('redisUrl'),
      PORT: String(port),
      HOST: '127.0.0.1',
      PUBLIC_BASE_URL: origin,
      QUEUE_PREFIX: uniquePrefix('sigterm'),
      LOG_LEVEL: 'warn',
      RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0',
    };
    const conn = await mongoose.createConnection(env.MONGO_URL).asPromise();
    cleanup.push(() => conn.close());
    const models = createModels(conn);
    const org = await registerOrganization(models, { name: 'Shutdown clinic' });
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const client = await registerClient(models, { organizationId: org._id, publicKeyPem });

    const api: Child = startEntryPoint('api', env);
    cleanup.push(async () => api.proc.kill('SIGKILL'));
    await waitFor(async () => (await fetch(`${origin}/readyz`).catch(() => undefined))?.ok, 60_000, 'the API');
    const base = `${origin}/v1/connect/server`;
    const tokenRes = await fetch(`${base}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await signAssertion(client._id, privateKey, `${base}/oauth/token`),
      }),
    });
    const { access_token } = (await tokenRes.json()) as { access_token: string };

    // Eight clients send creates back to back; SIGTERM lands in the middle.
    const answered: { id: string; status: number }[] = [];
    let refused = 0;
    let stop = false;
    const loops = Array.from({ length: 8 }, async () => {
      while (!stop) {
        const id = randomUUID();
        try {
          const res = await fetch(`${base}/users`, {
            method: 'POST',
            headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' },
            body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id }),
          });
          await res.arrayBuffer();
          answered.push({ id, status: res.status });
        } catch {
          refused++; // not accepted: the server had stopped taking connections
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    });
    await waitFor(() => answered.length >= 40, 60_000, 'load to build up');
    api.proc.kill('SIGTERM');
    const exit = await api.exited;
    stop = true;
    await Promise.all(loops);

    console.log(`[sigterm] ${answered.length} answered (${JSON.stringify(countBy(answered.map((a) => a.status)))}), ${refused} refused after close; exit ${exit.code}`);
    expect(exit.code).toBe(0);
    expect(answered.filter((a) => a.status >= 500 && a.status !== 503)).toEqual([]);
    // 503 is what Fastify answers to a request that arrives on an open connection after close began: not accepted, nothing stored.
    const created = answered.filter((a) => a.status === 201);
    expect(created.length).toBeGreaterThanOrEqual(40);
    const stored = await models.ProviderUser.countDocuments({ external_provider_id: { $in: created.map((a) => a.id) } });
    expect(stored).toBe(created.length);
    for (const a of answered.filter((x) => x.status === 503)) {
      expect(await models.ProviderUser.countDocuments({ external_provider_id: a.id })).toBe(0);
    }
  }, 120_000);
});

function countBy(xs: number[]): Record<number, number> {
  const out: Record<number, number> = {};
  for (const x of xs) out[x] = (out[x] ?? 0) + 1;
  return out;
}
