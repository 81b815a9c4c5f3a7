/**
 * GET /metrics of the API costs the same whatever is stored: no scrape runs a
 * database command once the background value exists; backlog and unpublished
 * events still show. Real FerretDB and Redis; MongoDB commands observed with
 * the driver's command monitoring.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Types } from 'mongoose';
import { collectionOf, eventJobOf, type DeliveryDoc } from '@connect/shared';
import { databaseUrl, getToken, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
const commands: string[] = [];

beforeAll(async () => {
  const url = new URL(databaseUrl('metrics_cost'));
  url.searchParams.set('monitorCommands', 'true');
  api = await startTestApi({ label: 'metrics-cost', mongoUrl: url.toString(), env: { DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'http://127.0.0.1:9/cb', secrets: ['s'] }]) } });
  api.deps.mongo.getClient().on('commandStarted', (e) => commands.push(e.commandName));
});
afterAll(async () => {
  await api?.close();
});

const scrape = async () => (await http(`${api.origin}/metrics`)).text as string;

describe('GET /metrics: the same cost on day 1 and day 300', () => {
  it('reports each target backlog from Redis and the unpublished events; scrapes after the first run no database command, with thousands of delivery rows stored', async () => {
    // No worker runs: three deliveries wait in the target's queue.
    const queue = api.deps.deliveryQueues[0]!;
    for (let i = 0; i < 3; i++) await queue.add('user.updated', { n: i } as never, { jobId: `metrics-${i}` });
    // One change whose event never reached Redis (its job removed, and no fan-out ever ran).
    const token = await getToken(api, await registerTestClient(api.models));
    const id = randomUUID();
    expect((await postUser(api, token, { provider_email: `${id}@example.com`, external_provider_id: id })).status).toBe(201);
    const user = (await collectionOf(api.models.ProviderUser).findOne({ external_provider_id: id }))!;
    await api.deps.relay.drain();
    await api.deps.queue.remove(eventJobOf(user).event.id);

    const first = await scrape();
    expect(first).toMatch(/connect_target_backlog\{target="dictation"\} 3\n/);
    expect(first).toMatch(/connect_outbox_unpublished_events 1\n/);
    expect(first).toMatch(/connect_outbox_unpublished_capped 0\n/);
    expect(first).not.toMatch(/^connect_deliveries\{/m);

    // Day 300: many finished delivery rows.
    const rows: DeliveryDoc[] = Array.from({ length: 5000 }, (_, i) => ({
      _id: `old-${i}.dictation`,
      event_id: `old-${i}`,
      event_type: 'user.updated',
      organization_id: 'org',
      user_id: new Types.ObjectId(),
      external_provider_id: `x${i}`,
      target: 'dictation',
      version: 2,
      status: i % 10 === 0 ? 'failed' : 'delivered',
      attempts: 1,
      last_status_code: 200,
      last_error: null,
      created_at: new Date(),
      updated_at: new Date(),
      delivered_at: new Date(),
    }));
    await collectionOf(api.models.Delivery).insertMany(rows);
    // The monitoring sees this connection's commands (so an empty list below means something).
    expect(commands).toContain('insert');
    expect(commands).toContain('find');

    commands.length = 0;
    for (let i = 0; i < 5; i++) {
      const text = await scrape();
      expect(text).toMatch(/connect_target_backlog\{target="dictation"\} 3\n/);
      expect(text).toMatch(/connect_outbox_unpublished_events 1\n/);
    }
    // The API's own pollers may talk to MongoDB meanwhile (heartbeats are not commands);
    // nothing a scrape does reads the collections.
    expect(commands.filter((c) => ['aggregate', 'find', 'count', 'countDocuments'].includes(c))).toEqual([]);
  }, 120_000);
});
