import { randomUUID } from 'node:crypto';
import { request, type IncomingMessage } from 'node:http';
import mongoose from 'mongoose';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { startTcpProxy } from '@connect/local-services';
import { createEventsQueue, createModels, createRedis, registerClient, registerOrganization } from '@connect/shared';
import { apiOrigin, startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, rsaKeyPair, signAssertion, uniquePrefix } from '../support/harness.ts';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
});

type Outcome = { kind: 'answered'; status: number; body: string } | { kind: 'refused' } | { kind: 'dropped'; code: string };

/**
 * One request on a connection of its own (no keep-alive pool), classified:
 * "refused" is ECONNREFUSED (nothing listens: the request was never accepted);
 * anything else that fails (a reset, a socket closed before the answer) is a
 * request the API accepted and then dropped.
 */
function send(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers, agent: false }, (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ kind: 'answered', status: res.statusCode!, body }));
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ kind: 'dropped', code: err.code ?? err.message }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' ? { kind: 'refused' } : { kind: 'dropped', code: err.code ?? err.message }));
    req.end(init.body);
  });
}

describe('SIGTERM under load (docs/delivery.md: stop taking work, finish what is in flight, exit 0)', () => {
  it('20 slow requests in flight at SIGTERM are all answered 2xx with their events in Redis; new connections are refused; exit 0', async () => {
    // The API reaches the database through a proxy of ours that can hold every database answer,
    // so requests are reliably still in flight when SIGTERM lands.
    const mongoUrl = new URL(databaseUrl('sigterm'));
    const db = await startTcpProxy(Number(mongoUrl.port), mongoUrl.hostname);
    cleanup.push(() => db.close());
    const slowMongoUrl = new URL(mongoUrl);
    slowMongoUrl.port = String(db.port);
    // PORT=0: the API binds a port the kernel picks and logs it. The public URL is a fixed name,
    // since it must be known before the port is: it is only the token audience and issuer.
    const publicBase = 'https://connect.sigterm.test';
    const env = {
      MONGO_URL: slowMongoUrl.toString(),
      REDIS_URL: inject('redisUrl'),
      PORT: '0',
      HOST: '127.0.0.1',
      PUBLIC_BASE_URL: publicBase,
      QUEUE_PREFIX: uniquePrefix('sigterm'),
      // debug: the line each accepted request gets on arrival ("incoming request") is what shows all 20 are in.
      LOG_LEVEL: 'debug',
      RATE_LIMIT_PER_CLIENT_PER_MINUTE: '0',
    };
    const conn = await mongoose.createConnection(mongoUrl.toString()).asPromise();
    cleanup.push(() => conn.close());
    const models = createModels(conn);
    const redis = createRedis(env.REDIS_URL, 'producer');
    const events = createEventsQueue(redis, env.QUEUE_PREFIX);
    cleanup.push(async () => {
      await events.close();
      redis.disconnect();
    });
    const org = await registerOrganization(models, { name: 'Shutdown clinic' });
    const { privateKey, publicKeyPem } = rsaKeyPair();
    const client = await registerClient(models, { organizationId: org._id, publicKeyPem });

    const api: Child = startEntryPoint('api', env);
    cleanup.push(async () => api.proc.kill('SIGKILL'));
    const origin = await apiOrigin(api);
    const base = `${origin}/v1/connect/server`;
    const token = await send(`${base}/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: await signAssertion(client._id, privateKey, `${publicBase}/v1/connect/server/oauth/token`),
      }),
    });
    expect(token).toMatchObject({ kind: 'answered', status: 200 });
    const accessToken = (JSON.parse((token as { body: string }).body) as { access_token: string }).access_token;

    // Slow enough that all 20 are still in flight at SIGTERM, fast enough that a create (several
    // database round trips) ends well inside the API's 10 s request deadline (REQUEST_DEADLINE_MS).
    db.setDelay(500);
    const ids = Array.from({ length: 20 }, () => randomUUID());
    const inFlight = ids.map((id) =>
      send(`${base}/users`, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', 'x-nabla-api-version': '2026-03-23' },
        body: JSON.stringify({ provider_email: `${id}@example.com`, external_provider_id: id }),
      }),
    );
    // The API logs each request it has accepted (at debug); all 20 are in the API before the signal.
    await waitFor(() => api.stdout.filter((l) => l.includes('"incoming request"') && l.includes('"POST"')).length >= 20, 30_000, '20 accepted requests');
    expect(api.stdout.filter((l) => l.includes('"request completed"') && l.includes('/v1/connect/server/users'))).toEqual([]);
    api.proc.kill('SIGTERM');

    // A new connection after the signal is refused (never accepted), as soon as the listener is closed.
    const refused = await waitFor(async () => {
      const probe = await send(`${origin}/livez`);
      return probe.kind === 'refused' ? probe : undefined;
    }, 20_000, 'a new connection to be refused');
    expect(refused.kind).toBe('refused');

    const outcomes = await Promise.all(inFlight);
    const exit = await api.exited;
    console.log(`[sigterm] in flight at SIGTERM: ${JSON.stringify(outcomes.map((o) => (o.kind === 'answered' ? o.status : o.kind)))}; exit ${exit.code}`);
    expect(outcomes.filter((o) => o.kind !== 'answered')).toEqual([]);
    expect(outcomes.map((o) => (o as { status: number }).status)).toEqual(ids.map(() => 201));
    expect(exit.code).toBe(0);

    db.setDelay(0);
    const stored = await models.ProviderUser.find({ external_provider_id: { $in: ids } }).lean();
    expect(stored).toHaveLength(20);
    // Each event reached Redis before the process exited: a job with the event's id in the events queue.
    for (const user of stored) expect((await events.getJob(user.last_event.id))?.id, user.external_provider_id).toBe(user.last_event.id);
  }, 120_000);
});
