import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { deliveryPolicyFromEnv } from '@connect/shared';
import { REPO_ROOT } from '@connect/local-services';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { postUser } from '../support/harness.ts';
import { eventually, startReceiver, userOf, type Receiver } from './callback-receiver.ts';
import { nodeArgsOf } from '../support/entry-points.ts';

// A CLI call is a new tsx process: seconds on a loaded two-core machine.
vi.setConfig({ testTimeout: 120_000 });

/**
 * docs/delivery.md, "How a lifted hold is noticed": a held target's workers
 * sleep at most the health-poll time at once (BullMQ's maximumRateLimitDelay)
 * and then ask Redis again, so a hold lifted early by another process is seen
 * within about that long, not when the hold would have ended.
 */

const HOLD_S = 300;
const run = promisify(execFile);
let stack: DeliveryStack;
let receiver: Receiver;
let throttle = true;

beforeAll(async () => {
  // The first callback meets a 503 with Retry-After of five minutes: the whole target is held that long.
  receiver = await startReceiver(() => (throttle ? ((throttle = false), { status: 503, headers: { 'retry-after': String(HOLD_S) } }) : { status: 200 }));
  stack = await startDeliveryStack({
    label: 'hold_lifted',
    targets: [target('dictation', receiver.url)],
    // Retry-After is capped at the larger of the schedule's largest step and an hour: above the hold.
    api: { env: { WORKER_RETRY_SCHEDULE: '1s,10m' } },
    worker: (env) => ({ policy: deliveryPolicyFromEnv(env) }),
  });
});

afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('a hold lifted by another process', () => {
  it('Retry-After: 300 holds the target; `pnpm cli targets resume` in its own process → the held backlog, and the retry that got the 503, go out within seconds', async () => {
    const { api, token, worker } = stack;
    const ids = [1, 2, 3].map((i) => `held-${i}-${Date.now()}`);
    expect((await postUser(api, token, { provider_email: `${ids[0]}@example.com`, external_provider_id: ids[0] })).status).toBe(201);
    await eventually(() => receiver.received.some((c) => c.answered === 503));
    const holdUntil = await eventually(async () => {
      const until = Date.parse((await worker.deps.health.get('dictation')).hold_until ?? '');
      return until > Date.now() + (HOLD_S - 60) * 1000 && until;
    });
    // Changes made during the hold reach the queue (their rows are written) but not the receiver.
    for (const id of ids.slice(1)) expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    await eventually(async () => expect(await worker.deps.models.Delivery.countDocuments({ external_provider_id: { $in: ids } })).toBe(3));
    expect(receiver.received).toHaveLength(1);
    // The first user's job waits out its own retry delay (Retry-After is its floor): in BullMQ's delayed set.
    await eventually(async () => expect(await worker.deps.deliveries.get('dictation')!.getDelayedCount()).toBe(1));

    const { stdout } = await run(process.execPath, [...nodeArgsOf('cli'), 'targets', 'resume', 'dictation'], { cwd: REPO_ROOT, env: { ...process.env, ...api.env } });
    const resumedAt = Date.now();
    expect(JSON.parse(stdout)).toMatchObject({ name: 'dictation', state: 'healthy' });
    // 20 s: far under the hold's remaining time, so only the lifted hold can explain the deliveries;
    // the first user's too, though its own retry waited out the same Retry-After (resume promotes it).
    await eventually(() => ids.every((id) => receiver.accepted().some((c) => userOf(c) === id)), 20_000, 50);
    const firstAfter = Math.min(...receiver.accepted().map((c) => c.at));
    console.log(`[hold lifted] hold of ${HOLD_S} s had ${Math.round((holdUntil - resumedAt) / 1000)} s left; first delivery ${firstAfter - resumedAt} ms after the resume returned`);
    expect(firstAfter).toBeLessThan(holdUntil);
  });
});
