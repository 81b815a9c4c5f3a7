import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createRedis, DEFAULT_DELIVERY_POLICY, TargetHealth, type DeliveryPolicy, type RedisClient } from '@connect/shared';
import { uniquePrefix } from '../support/harness.ts';

/**
 * The target state machine, run by its Lua scripts on the real Redis, with a
 * clock the test moves (docs/delivery.md, target health): threshold → failing,
 * one probe at a time, probe interval doubling to its maximum, disabled after
 * TARGET_DISABLE_AFTER of failing, a 2xx back to healthy, the operator's pause
 * and resume, and a Retry-After hold.
 */

let redis: RedisClient;
let clock = 1_800_000_000_000;
let health: TargetHealth;
const policy: DeliveryPolicy = { ...DEFAULT_DELIVERY_POLICY, failureThreshold: 3, probeIntervalMs: 1000, probeMaxIntervalMs: 4000, disableAfterMs: 60_000 };

beforeAll(() => {
  redis = createRedis(inject('redisUrl'), 'producer', { enableOfflineQueue: true });
  health = new TargetHealth(redis, uniquePrefix('health'), () => clock);
});
afterAll(() => redis?.disconnect());

describe('target health states (shared in Redis)', () => {
  it('healthy → failing at the threshold → one probe at a time, doubling → healthy on a 2xx', async () => {
    const t = 'recovering';
    expect(await health.admit(t, 5000)).toEqual({ kind: 'send' });
    expect(await health.recordFailure(t, policy, 'HTTP 503')).toEqual({ from: 'healthy', to: 'healthy' });
    expect(await health.recordFailure(t, policy, 'HTTP 503')).toEqual({ from: 'healthy', to: 'healthy' });
    expect(await health.recordFailure(t, policy, 'HTTP 503')).toEqual({ from: 'healthy', to: 'failing' });
    // A fourth failure (a delivery that was in flight) changes nothing: logged once.
    expect(await health.recordFailure(t, policy, 'HTTP 503')).toEqual({ from: 'failing', to: 'failing' });
    expect(await health.get(t)).toMatchObject({ state: 'failing', consecutive_failures: 4, failing_since: new Date(clock).toISOString() });

    expect(await health.admit(t, 5000)).toEqual({ kind: 'hold', ms: 1000, state: 'failing' });
    clock += 1000;
    const probe = await health.admit(t, 5000);
    expect(probe.kind).toBe('probe');
    // While the probe is out, nobody else goes; they look again within a second.
    expect(await health.admit(t, 5000)).toMatchObject({ kind: 'hold', state: 'failing' });
    expect(await health.recordFailure(t, policy, 'HTTP 503', (probe as { token: string }).token)).toEqual({ from: 'failing', to: 'failing' });
    // The next probe waits twice as long: 2 s, then 4 s, and no more (the maximum).
    expect(await health.admit(t, 5000)).toEqual({ kind: 'hold', ms: 2000, state: 'failing' });
    expect(await health.holdMs(t)).toBe(2000);
    for (const wait of [2000, 4000, 4000]) {
      clock += wait;
      const p = await health.admit(t, 5000);
      expect(p.kind).toBe('probe');
      await health.recordFailure(t, policy, 'HTTP 503', (p as { token: string }).token);
      expect(await health.admit(t, 5000)).toMatchObject({ kind: 'hold', ms: Math.min(wait * 2, 4000) });
    }
    clock += 4000;
    const last = await health.admit(t, 5000);
    expect(await health.recordSuccess(t, (last as { token: string }).token)).toEqual({ from: 'failing', to: 'healthy' });
    expect(await health.get(t)).toMatchObject({ state: 'healthy', consecutive_failures: 0, failing_since: null, last_success_at: new Date(clock).toISOString() });
    expect(await health.admit(t, 5000)).toEqual({ kind: 'send' });
  });

  it('failing longer than TARGET_DISABLE_AFTER → disabled at the next failed probe; resume → healthy', async () => {
    const t = 'dying';
    for (let i = 0; i < 3; i++) await health.recordFailure(t, policy, 'network error: ECONNREFUSED');
    clock += policy.disableAfterMs;
    const probe = await health.admit(t, 5000);
    expect(probe.kind).toBe('probe');
    expect(await health.recordFailure(t, policy, 'network error: ECONNREFUSED', (probe as { token: string }).token)).toEqual({ from: 'failing', to: 'disabled' });
    expect(await health.get(t)).toMatchObject({ state: 'disabled', reason: 'failing for longer than 1m' });
    expect(await health.admit(t, 5000)).toMatchObject({ kind: 'hold', state: 'disabled' });
    expect(await health.setState(t, 'healthy')).toEqual({ from: 'disabled', to: 'healthy' });
    expect(await health.admit(t, 5000)).toEqual({ kind: 'send' });
  });

  it('paused holds whatever happens; Retry-After holds until its time', async () => {
    const t = 'operated';
    await health.setState(t, 'paused', 'paused by an operator');
    expect(await health.admit(t, 5000)).toMatchObject({ kind: 'hold', state: 'paused' });
    await health.recordSuccess(t); // a delivery in flight when the pause came
    expect((await health.get(t)).state).toBe('paused');
    await health.setState(t, 'healthy');
    await health.holdUntil(t, clock + 3000);
    expect(await health.admit(t, 5000)).toEqual({ kind: 'hold', ms: 3000, state: 'retry-after' });
    clock += 3000;
    expect(await health.admit(t, 5000)).toEqual({ kind: 'send' });
  });
});
