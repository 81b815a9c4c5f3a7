import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { postUser } from '../support/harness.ts';
import { startDeliveryStack, type DeliveryStack } from '../support/delivery-stack.ts';
import { eventually, startReceiver, userOf, type Answer, type Receiver } from '../worker/callback-receiver.ts';
import { runCli } from '../support/cli-child.ts';

// Each CLI call is a new tsx process (seconds on a loaded two-core machine).
vi.setConfig({ testTimeout: 300_000 });

/**
 * `deliveries list --status pending` and `--status superseded` (SPEC §3): the
 * other two statuses are run in cli-deliveries.test.ts and cli-targets.test.ts.
 * Each status lists its own rows and no other status lists them.
 */

const STATUSES = ['pending', 'delivered', 'failed', 'superseded'] as const;
let stack: DeliveryStack;
let receiver: Receiver;
/** While set, the receiver holds user.created until the test releases it. */
let gate: Promise<void> | undefined;

const cli = (...args: string[]) => runCli(stack.api.env, args);

interface Row {
  id: string;
  status: string;
  target: string;
  event_type: string;
  version: number;
  external_provider_id: string;
}

/** `deliveries list --target dictation --status S`, the rows of `ids` only. */
async function listed(status: string, ids: string[]): Promise<Row[]> {
  const list = await cli('deliveries', 'list', '--target', 'dictation', '--status', status);
  expect(list.code, JSON.stringify(list.json)).toBe(0);
  expect(list.json).toMatchObject({ status, target: 'dictation', truncated: false });
  return (list.json.deliveries as Row[]).filter((d) => ids.includes(d.external_provider_id));
}

const body = (id: string, v: number) => ({ provider_email: `${id}@example.com`, external_provider_id: id, settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: `v${v}` } } });

beforeAll(async () => {
  receiver = await startReceiver(async (c): Promise<Answer> => {
    if (gate && c.body?.type === 'user.created') await gate;
    return { status: 200 };
  });
  stack = await startDeliveryStack({ label: 'cli_status', targets: [{ name: 'dictation', url: receiver.url, secrets: ['s3cret'], timeout_ms: 20_000 }] });
});
afterAll(async () => {
  await stack?.close();
  await receiver?.close();
});

describe('deliveries list --status pending | superseded', () => {
  it('the rows held for a paused target are listed by --status pending and by no other status; after resume they are delivered', async () => {
    expect((await cli('targets', 'pause', 'dictation')).json).toMatchObject({ name: 'dictation', state: 'paused' });
    let paused = true;
    try {
      const ids: string[] = [randomUUID(), randomUUID()];
      for (const id of ids) expect((await postUser(stack.api, stack.token, body(id, 1))).status).toBe(201);

      // The positive signal: both rows exist, held (the target is paused, nothing is attempted).
      const pending = await eventually(async () => {
        const rows = await listed('pending', ids);
        return rows.length === ids.length ? rows : false;
      }, 60_000, 500);
      expect(pending.map((r) => r.external_provider_id).sort()).toEqual([...ids].sort());
      for (const r of pending) expect(r).toMatchObject({ status: 'pending', target: 'dictation', event_type: 'user.created', version: 1 });
      expect(receiver.received.filter((c) => ids.includes(userOf(c)))).toHaveLength(0);
      for (const other of STATUSES.filter((s) => s !== 'pending')) expect(await listed(other, ids), `--status ${other}`).toEqual([]);

      // Resumed: the same rows are delivered, and --status pending no longer lists them.
      expect((await cli('targets', 'resume', 'dictation')).json).toMatchObject({ state: 'healthy' });
      paused = false;
      await eventually(() => ids.every((id) => receiver.accepted().some((c) => userOf(c) === id)), 60_000);
      const delivered = await eventually(async () => {
        const rows = await listed('delivered', ids);
        return rows.length === ids.length ? rows : false;
      }, 30_000, 500);
      expect(delivered.map((r) => r.id).sort()).toEqual(pending.map((r) => r.id).sort());
      expect(await listed('pending', ids)).toEqual([]);
    } finally {
      // The next test needs the target healthy, whatever happened here.
      if (paused) await cli('targets', 'resume', 'dictation');
    }
  });

  it('updates overtaken while user.created was held are listed by --status superseded, and only they', async () => {
    let release!: () => void;
    gate = new Promise<void>((r) => (release = r));
    const id = `superseded-${randomUUID()}`;
    const rows = async () => (await stack.api.models.Delivery.find({ external_provider_id: id, target: 'dictation' }).sort({ version: 1 }).lean()).map((r) => [r.version, r.status]);
    try {
      expect((await postUser(stack.api, stack.token, body(id, 1))).status).toBe(201);
      await eventually(() => receiver.received.some((c) => userOf(c) === id), 30_000);
      for (let v = 2; v <= 4; v++) expect((await postUser(stack.api, stack.token, body(id, v))).body.version).toBe(v);
      // All three updates are recorded for the target before the held user.created is answered.
      await eventually(async () => expect((await rows()).map(([v]) => v)).toEqual([1, 2, 3, 4]), 30_000);
    } finally {
      gate = undefined;
      release();
    }
    await eventually(async () => expect(await rows()).toEqual([[1, 'delivered'], [2, 'superseded'], [3, 'superseded'], [4, 'delivered']]), 60_000);

    const superseded = await listed('superseded', [id]);
    expect(superseded.map((r) => [r.version, r.status, r.event_type]).sort()).toEqual([
      [2, 'superseded', 'user.updated'],
      [3, 'superseded', 'user.updated'],
    ]);
    expect((await listed('delivered', [id])).map((r) => r.version).sort()).toEqual([1, 4]);
    expect(await listed('pending', [id])).toEqual([]);
    expect(await listed('failed', [id])).toEqual([]);
    // What the target got: the creation and the newest, not the overtaken ones.
    expect(receiver.accepted().filter((c) => userOf(c) === id).map((c) => c.body.data.version)).toEqual([1, 4]);
  });
});
