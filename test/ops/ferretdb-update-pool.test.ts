import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startFerretDb, type RunningService } from '@connect/local-services';

/**
 * Our FerretDB build patches an upstream bug (tools/ferretdb/patches/connect-provisioning.patch):
 * an `update` command kept one pool connection per statement until the whole
 * command returned, and each statement needs one more, so one bulkWrite of more
 * statements than the pool has connections (50), or a few concurrent ones (the
 * delivery processor's batched sync-state writes from two workers), waited for a
 * connection forever and froze FerretDB for every client. Without the patch
 * these commands never return and the test times out. FerretDB only: MongoDB
 * has no such pool, and the test says so.
 */
const onFerretDb = inject('mongoKind') === 'ferretdb';
if (!onFerretDb) console.log('[ferretdb update pool] skipped: the run uses MongoDB, which has no such connection pool');

const database = `update_pool_${inject('runId')}`.replace(/[^a-z0-9_]/g, '_').slice(0, 60);
let ferret: RunningService;
let mongo: MongoClient;

beforeAll(async () => {
  if (!onFerretDb) return;
  ferret = await startFerretDb({ database });
  mongo = await new MongoClient(`${ferret.url}pool`, { maxPoolSize: 20 }).connect();
}, 120_000);

afterAll(async () => {
  await mongo?.close();
  await ferret?.stop();
});

describe.runIf(onFerretDb)('FerretDB update commands release their connections statement by statement', () => {
  it('one bulkWrite of 120 upserts (more than the pool\'s 50 connections), then 6 concurrent bulkWrites of 40 updates, all complete; FerretDB still answers', async () => {
    const states = mongo.db().collection<{ _id: string; version: number }>('sync_states');
    const upsert = (id: string, version: number) => ({ updateOne: { filter: { _id: id }, update: { $max: { version } }, upsert: true } });
    const first = await states.bulkWrite(Array.from({ length: 120 }, (_, i) => upsert(`s${i}`, 1)), { ordered: false });
    expect(first.upsertedCount).toBe(120);

    const rounds = await Promise.all(
      Array.from({ length: 6 }, (_, w) => states.bulkWrite(Array.from({ length: 40 }, (_, i) => upsert(`s${(w * 20 + i) % 120}`, w + 2)), { ordered: false })),
    );
    expect(rounds.reduce((n, r) => n + r.matchedCount + r.upsertedCount, 0)).toBe(240);
    expect(await states.countDocuments()).toBe(120);
    expect(await mongo.db().command({ ping: 1 })).toMatchObject({ ok: 1 });
  }, 60_000);
});
