import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '@connect/local-services';
import { disableClient, enableClient } from '@connect/shared';
import { databaseUrl, getToken, getUser, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';

const cleanup: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
});

/** An API whose database is reached through a proxy of the test's own (its cut or delay is the fault). */
async function apiBehindProxy(label: string): Promise<{ api: TestApi; link: TcpProxy }> {
  const url = new URL(databaseUrl(label));
  const link = await startTcpProxy(Number(url.port), url.hostname);
  cleanup.push(() => link.close());
  url.port = String(link.port);
  const api = await startTestApi({ label, mongoUrl: url.toString() });
  cleanup.push(() => api.close());
  return { api, link };
}

describe('/readyz with the database down (docs/contract.md Outside {base})', () => {
  it('503 problem+json with checks.mongodb "down" (Redis "ok"), then 200 again once the database is back', async () => {
    // The API reaches the database through a proxy of ours: cutting it is the outage.
    const { api, link } = await apiBehindProxy('readyz_db');
    expect((await http(`${api.origin}/readyz`)).status).toBe(200);

    link.cut();
    // Down once a ping is refused, or the background watch's own has waited 5 s (a cut connection's ping waits on the driver).
    const cutAt = Date.now();
    let down = await http(`${api.origin}/readyz`);
    while (down.status !== 503 && Date.now() - cutAt < 20_000) down = await http(`${api.origin}/readyz`);
    expect(down.status).toBe(503);
    expect(down.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(down.body).toMatchObject({ status: 503, detail: 'A datastore does not answer.', checks: { mongodb: 'down', redis: 'ok' } });
    expect((await http(`${api.origin}/livez`)).status).toBe(200);

    // The outage is in the log (one line, traffic or not), and below, its end.
    await waitForLine(api, /"msg":"MongoDB does not answer: /);

    link.restore();
    const deadline = Date.now() + 30_000;
    let ready = await http(`${api.origin}/readyz`);
    while (ready.status !== 200 && Date.now() < deadline) ready = await http(`${api.origin}/readyz`);
    expect(ready.body).toEqual({ status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } });
    await waitForLine(api, /"msg":"MongoDB answers again, after \d+ s"/);
  }, 60_000);

  it('a database that answers slowly (1.5 s a round trip) is not "down": /readyz stays 200 while writes go through (it took every API out of rotation)', async () => {
    const { api, link } = await apiBehindProxy('readyz_slow');
    const token = await getToken(api, await registerTestClient(api.models));
    link.setDelay(1500);
    const slowFrom = Date.now();
    // Past the watch's 5 s: each of its asks was answered, late.
    while (Date.now() - slowFrom < 7000) {
      const id = randomUUID();
      const started = Date.now();
      expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1500); // the database is slow indeed
      const ready = await http(`${api.origin}/readyz`);
      expect(ready.body, JSON.stringify(ready.body)).toEqual({ status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } });
    }
    expect(api.logs.text).not.toContain('MongoDB does not answer');
    link.setDelay(0);
  }, 60_000);
});

async function waitForLine(api: TestApi, line: RegExp): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!line.test(api.logs.text) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(api.logs.text).toMatch(line);
}

describe('A disabled client with the default client cache (docs/contract.md: its tokens stop working within 60 s)', () => {
  it('its token is refused within 60 s of the disable (polled, not waited out)', async () => {
    const api = await startTestApi({ label: 'disable_default' }); // no clientCacheTtlMs: the production default
    cleanup.push(() => api.close());
    const clinic = await registerTestClient(api.models);
    const token = await getToken(api, clinic);
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    expect((await getUser(api, token, id)).status).toBe(200); // the client is now in the bearer-path cache

    await disableClient(api.models, clinic.client._id);
    const disabledAt = Date.now();
    let res = await getUser(api, token, id);
    while (res.status !== 401 && Date.now() - disabledAt < 65_000) {
      await new Promise((r) => setTimeout(r, 250));
      res = await getUser(api, token, id);
    }
    const tookMs = Date.now() - disabledAt;
    console.log(`[disable] the token stopped working ${tookMs} ms after the client was disabled`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(tookMs).toBeLessThanOrEqual(60_000);
  }, 90_000);
});

describe('A client enabled again', () => {
  it('its new tokens work at once, on the API that issued them and on another that had read it disabled', async () => {
    // Two API processes of one deployment (one database, one PUBLIC_BASE_URL); the second's client
    // cache keeps a reading for 10 minutes, so only a rule, not an expiry, can make it read again.
    const issuer = await startTestApi({ label: 'reenable' });
    cleanup.push(() => issuer.close());
    const other = await startTestApi({ label: 'reenable', mongoUrl: issuer.env.MONGO_URL, env: { PUBLIC_BASE_URL: issuer.env.PUBLIC_BASE_URL! }, clientCacheTtlMs: 600_000 });
    cleanup.push(() => other.close());
    const clinic = await registerTestClient(issuer.models);
    const before = await getToken(issuer, clinic);
    const id = randomUUID();
    expect((await postUser(issuer, before, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);

    await disableClient(issuer.models, clinic.client._id);
    // Both APIs now hold "disabled" in their caches.
    expect((await getUser(other, before, id)).status).toBe(401);
    expect((await getToken(issuer, clinic).then(() => 'issued', (err: Error) => err.message))).not.toBe('issued');
    const readDisabledAt = Date.now();

    // A token issued a second or more after those readings, as a client that learns of the re-enable would ask for.
    await enableClient(issuer.models, clinic.client._id);
    while (Date.now() - readDisabledAt < 1100) await new Promise((r) => setTimeout(r, 100));
    const after = await getToken(issuer, clinic);
    expect((await getUser(issuer, after, id)).status).toBe(200);
    expect((await getUser(other, after, id)).status).toBe(200);
  }, 60_000);
});
