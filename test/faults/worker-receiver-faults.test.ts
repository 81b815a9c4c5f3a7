import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { eventually, sleep, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { afterHealFigures, byStatus, createBeforeFault, expectCleanAnswer, expectEverythingDelivered, newUsers, printFigures, resendRefused, sendRound, type Traffic } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults, retries and FerretDB on a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the worker and one receiver ("proxied"); a second target
 * ("direct") is reached without it. Under each fault the API keeps accepting
 * changes, the worker keeps trying the proxied target without dead-lettering
 * anything, the direct target is served meanwhile, and once the fault is gone
 * every user's final version reaches both, in per-user order.
 */

/** How long each fault stays on once the direct target has everything: longer than a delivery's timeout, so attempts fail during it. */
const FAULT_HOLD_MS = 8000;

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let proxied: Receiver;
let direct: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  [proxied, direct] = await Promise.all([startReceiver(), startReceiver()]);
  const through = await toxiproxy.link('worker-receiver', proxied.url);
  link = through.proxy;
  // The tests' short retry schedule and probe interval (worker-under-test.ts): after a few
  // failures the target is failing and its deliveries are held (probed, not retried one by
  // one), so no fault here uses up a schedule however long it lasts.
  stack = await startDeliveryStack({
    label: 'faults_worker',
    // target()'s 5 s timeout: well above the 2 s latency fault, so that one slows deliveries without failing them.
    targets: [target('proxied', through.url), target('direct', direct.url)],
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([proxied?.close(), direct?.close()]);
  await toxiproxy?.stop();
});

const latestAt = (r: Receiver, id: string) => Math.max(0, ...r.accepted().filter((c) => c.body?.data?.user?.external_provider_id === id).map((c) => c.body.data.version as number));

describe('Toxiproxy between the worker and a receiver', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: API answers, nothing dead-lettered, the other target served meanwhile, everything arrives in order after', async (fault) => {
    const users = newUsers(`worker-${fault}`, 8);
    const ids = new Set(users.map((u) => u.id));
    // Half the users exist and are delivered before the fault (open keep-alive connections meet it too).
    const { api, token } = stack;
    await createBeforeFault(api, token, users.slice(0, 4));
    await expectEverythingDelivered(api.models, users.slice(0, 4), [proxied, direct]);
    const reachedBefore = proxied.received.length;

    await link.inject(fault);
    const faultOn = Date.now();
    const traffic: Traffic = { answers: [] };
    const during = await sendRound(api, token, users, traffic);
    for (const x of during) expectCleanAnswer(x);
    // The API does not depend on a receiver; a 503 here could only be the shared machine's database being busy.
    await resendRefused(api, token, users, traffic);
    // A target behind a fault does not hold up another: the direct one gets every user's latest version while the fault is on.
    await eventually(() => {
      for (const u of users) expect(latestAt(direct, u.id), u.id).toBe(u.acceptedVersion);
    }, 60_000, 200);
    const directDoneMs = Date.now() - faultOn;
    await sleep(FAULT_HOLD_MS);
    const reachedDuringFault = proxied.received.length - reachedBefore;
    const acceptedDuringFault = proxied.accepted().filter((c) => c.at >= faultOn && ids.has(c.body?.data?.user?.external_provider_id)).length;
    await link.heal();
    const healed = Date.now();

    const delivery = await expectEverythingDelivered(api.models, users, [proxied, direct]);
    const rows = await api.models.Delivery.find({ external_provider_id: { $in: [...ids] } }).lean();
    const deadLetters = rows.filter((r) => r.status === 'failed').length;
    const attemptsToProxied = rows.filter((r) => r.target === 'proxied').reduce((n, r) => n + r.attempts, 0);
    const figures = {
      api_requests: during.length,
      api_answers: byStatus(during),
      changes_during_fault: during.filter((x) => x.kind !== 'read').length,
      versions_accepted: users.reduce((n, u) => n + u.acceptedVersion, 0),
      attempts_to_proxied_target: attemptsToProxied,
      direct_target_done_ms: directDoneMs,
      requests_reaching_receiver_during_fault: reachedDuringFault,
      accepted_by_receiver_during_fault: acceptedDuringFault,
      ...afterHealFigures(delivery, deadLetters, healed),
    };
    printFigures('worker→receiver', fault, figures);
    expect(deadLetters).toBe(0);
    expect(delivery.lost).toBe(0);
  });
});
