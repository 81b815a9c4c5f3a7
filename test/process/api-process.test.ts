import { afterAll, describe, expect, inject, it } from 'vitest';
import { startEntryPoint, waitFor, type Child } from '../support/child-process.ts';
import { databaseUrl, uniquePrefix } from '../support/harness.ts';
import { freePort } from '../support/local-services.ts';

const children: Child[] = [];
afterAll(() => {
  for (const c of children) c.proc.kill('SIGKILL');
});

describe('Configuration is validated before anything listens (docs/operations.md)', () => {
  it.each([
    [{ MONGO_URL: undefined }, 'MONGO_URL'],
    [{ REDIS_URL: 'http://not-redis' }, 'REDIS_URL'],
    [{ PORT: '-1' }, 'PORT'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"x"}]' }, 'DOWNSTREAM_TARGETS'],
  ])('the API with %j exits 1 with one line naming %s', async (overrides, variable) => {
    const port = await freePort();
    const child = startEntryPoint('api', { MONGO_URL: 'mongodb://127.0.0.1:1/x', REDIS_URL: 'redis://127.0.0.1:1', PORT: String(port), ...overrides });
    children.push(child);
    const { code } = await child.exited;
    expect(code).toBe(1);
    expect(child.stderr).toHaveLength(1);
    expect(child.stderr[0]).toMatch(new RegExp(`^configuration error: ${variable}: `));
    expect(child.stdout).toHaveLength(0);
  });
});

describe('The API process: health, then SIGTERM exits 0', () => {
  it('answers /livez and /readyz, and on SIGTERM finishes and exits 0', async () => {
    const port = await freePort();
    const child = startEntryPoint('api', {
      MONGO_URL: databaseUrl('apiproc'),
      REDIS_URL: inject('redisUrl'),
      PORT: String(port),
      HOST: '127.0.0.1',
      QUEUE_PREFIX: uniquePrefix('apiproc'),
      LOG_LEVEL: 'info',
    });
    children.push(child);
    const origin = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${origin}/livez`).catch(() => undefined))?.ok, 60_000, 'the API to listen');
    const ready = await fetch(`${origin}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ok', checks: { mongodb: 'ok', redis: 'ok' } });
    child.proc.kill('SIGTERM');
    const { code } = await child.exited;
    expect(code).toBe(0);
    const steps = child.stdout.map((l) => JSON.parse(l)).filter((l) => l.msg === 'shutdown step done').map((l) => l.step);
    expect(steps).toEqual(['stop-http', 'drain-relay', 'close-datastores']);
  });
});
