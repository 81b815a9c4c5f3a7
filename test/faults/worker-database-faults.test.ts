import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startDeliveryStack, target, type DeliveryStack } from '../support/delivery-stack.ts';
import { databaseUrl } from '../support/harness.ts';
import { sleep, startReceiver, type Receiver } from '../worker/callback-receiver.ts';
import { byStatus, createBeforeFault, expectCleanAnswer, expectEverythingDelivered, newUsers, printFigures, resendRefused, sendRound, type Traffic } from './fault-scenario.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from './toxiproxy.ts';

// Real network faults on FerretDB over a loaded two-core machine: generous.
vi.setConfig({ testTimeout: 240_000 });

/**
 * Toxiproxy between the worker and its database; the API reaches the database directly. Under
 * each fault the API keeps accepting changes (it does not depend on the worker), and once the
 * fault is gone the worker finds its database again by itself, no restart, and every accepted
 * change reaches both targets in per-user order, nothing dead-lettered: a failure of the
 * worker's own database is ours, not the targets' (docs/delivery.md, Retries).
 *
 * The worker was the one process whose database link no fault test cut for long: a MongoDB
 * client that never found its server again after such a cut (the driver patch of
 * docs/operations.md) was found by a single test, and only on a loaded machine.
 */

/** How long each fault stays on after the changes are accepted: the worker's reads, writes and heartbeats meet it. */
const FAULT_HOLD_MS = 6000;

let toxiproxy: Toxiproxy;
let link: Proxy;
let stack: DeliveryStack;
let a: Receiver;
let b: Receiver;

beforeAll(async () => {
  toxiproxy = await startToxiproxy();
  const direct = databaseUrl('faults_worker_db');
  const proxied = await toxiproxy.link('worker-database', direct);
  link = proxied.proxy;
  [a, b] = await Promise.all([startReceiver(), startReceiver()]);
  stack = await startDeliveryStack({
    label: 'faults_worker_db',
    targets: [target('target-a', a.url), target('target-b', b.url)],
    api: { mongoUrl: direct },
    workerEnv: { MONGO_URL: proxied.url },
  });
});

afterAll(async () => {
  await stack?.close();
  await Promise.all([a?.close(), b?.close()]);
  await toxiproxy?.stop();
});

describe('Toxiproxy between the worker and the database', () => {
  it.each<FaultName>(['latency2s', 'resetPeer', 'blackHole', 'trickle'])('%s: the API answers, the worker recovers by itself once the fault is gone, nothing dead-lettered or lost, order kept', async (fault) => {
    const { api, token } = stack;
    const users = newUsers(`worker-db-${fault}`, 8);
    // Half the users exist and are delivered before the fault: the worker's connections are open and in use when it comes.
    await createBeforeFault(api, token, users.slice(0, 4));
    await expectEverythingDelivered(api.models, users.slice(0, 4), [a, b]);

    const reachedBefore = a.received.length + b.received.length;
    await link.inject(fault);
    const traffic: Traffic = { answers: [] };
    const during = await sendRound(api, token, users, traffic);
    for (const x of during) expectCleanAnswer(x);
    // The API does not reach the database through the fault; a 503 here could only be the shared machine's database being busy.
    const resent = await resendRefused(api, token, users, traffic);
    await sleep(FAULT_HOLD_MS);
    const reachedDuringFault = a.received.length + b.received.length - reachedBefore;
    await link.heal();
    const healed = Date.now();

    const delivery = await expectEverythingDelivered(api.models, users, [a, b]);
    const rows = await api.models.Delivery.find({ external_provider_id: { $in: users.map((u) => u.id) } }).lean();
    const deadLetters = rows.filter((r) => r.status === 'failed').length;
    printFigures('worker→database', fault, {
      api_answers: byStatus(during),
      resent_after: resent,
      callbacks_during_fault: reachedDuringFault,
      accepted_changes: users.reduce((n, u) => n + u.acceptedVersion, 0),
      events_delivered: delivery.delivered,
      duplicates: delivery.duplicates,
      ...(delivery.duplicated.length ? { duplicated: delivery.duplicated } : {}),
      dead_letters: deadLetters,
      lost: delivery.lost,
      drain_after_heal_ms: Date.now() - healed,
    });
    expect(deadLetters).toBe(0);
    expect(delivery.lost).toBe(0);
  });
});
