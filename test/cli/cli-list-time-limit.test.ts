/**
 * `deliveries list` bounds its query in the database (maxTimeMS). On FerretDB the list reads
 * and sorts every row of the status asked; at about 100,000 rows that outlasted the CLI's
 * socket timeout, the driver retried, and the CLI said `unavailable` after 25 s while the
 * query ran on. Now the database stops it and the CLI says why, at once. A list that takes
 * longer than the limit needs a large collection, so the test lowers the limit to 1 ms.
 */
import { randomUUID } from 'node:crypto';
import { Types } from 'mongoose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, type DeliveryDoc } from '@connect/shared';
import { CliError, toCliError, type CliContext } from '@connect/cli/src/command.ts';
import { OPERATION_TIMEOUT_MS } from '@connect/cli/src/datastores.ts';
import { deliveriesCommands, LIST_MAX_TIME_MS } from '@connect/cli/src/deliveries-command.ts';
import { startTestApi, type TestApi } from '../support/harness.ts';

let api: TestApi;
const target = `limit-${randomUUID().slice(0, 8)}`;

beforeAll(async () => {
  api = await startTestApi({ label: 'cli_list_limit' });
  const at = new Date();
  // 2,000 rows: a FerretDB on an idle machine answered a list of 200 within 1 ms once.
  const rows: DeliveryDoc[] = Array.from({ length: 2000 }, (_, i) => {
    const id = randomUUID();
    return {
      _id: `${id}.${target}`,
      event_id: id,
      event_type: 'user.updated',
      organization_id: 'org',
      user_id: new Types.ObjectId(),
      external_provider_id: `lim-${i}`,
      target,
      version: 2,
      status: 'delivered',
      attempts: 1,
      last_status_code: 200,
      last_error: null,
      created_at: at,
      updated_at: new Date(at.getTime() + i),
      delivered_at: at,
      failed_at: null,
    };
  });
  await api.models.Delivery.collection.insertMany(rows as never[]);
});
afterAll(async () => {
  await api?.close();
});

const list = deliveriesCommands.find((c) => c.name === 'deliveries list')!;
const parsed = (values: Record<string, string>) => list.parse({ values, positionals: [] }) as Record<string, unknown>;
function context(): CliContext {
  const config = loadConfig({ ...api.env, DOWNSTREAM_TARGETS: JSON.stringify([{ name: target, url: 'http://127.0.0.1:9/', secrets: ['s3cret-for-limit'] }]) }, { require: { redis: false } });
  return { config, models: api.models, redis: () => Promise.reject(new Error('not needed')), stop: new AbortController().signal };
}

describe('deliveries list: the database stops a list that runs too long', () => {
  it('the limit it gives the database is under the CLI\'s per-operation limit, so the database answers first', () => {
    expect(LIST_MAX_TIME_MS).toBeLessThan(OPERATION_TIMEOUT_MS);
    expect(parsed({ status: 'delivered' })).toMatchObject({ maxTimeMS: LIST_MAX_TIME_MS });
  });

  it('within the limit it lists as before, oldest change first', async () => {
    const out = (await list.run(parsed({ status: 'delivered', target, limit: '5' }), context())) as { count: number; truncated: boolean; deliveries: { external_provider_id: string }[] };
    expect(out).toMatchObject({ count: 5, truncated: true });
    expect(out.deliveries.map((d) => d.external_provider_id)).toEqual(['lim-0', 'lim-1', 'lim-2', 'lim-3', 'lim-4']);
  });

  it('past the limit: `unavailable`, saying the database stopped the list and how to narrow it', async () => {
    const args = { ...parsed({ status: 'delivered', target }), maxTimeMS: 1 };
    const err = await list.run(args, context()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect(err).toMatchObject({ kind: 'unavailable' });
    expect((err as CliError).message).toMatch(new RegExp(`^Listing the delivered deliveries of ${target} took over 0.001 s and the database stopped it\\..*narrow it with --target`));
  });

  it('a real query the database stopped at its limit maps to `unavailable`, not `internal`, in the error mapping every command ends in (toCliError)', async () => {
    const err = await api.models.Delivery.collection
      .find({ status: 'delivered', target })
      .sort({ updated_at: 1 })
      .batchSize(5000) // one batch, as the CLI reads it: a getMore after the limit says "cursor not found"
      .maxTimeMS(1)
      .toArray()
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toMatchObject({ codeName: 'MaxTimeMSExpired' });
    expect(toCliError(err)).toMatchObject({ kind: 'unavailable', message: expect.stringMatching(/^The database stopped the query at its time limit/) });
  });
});
