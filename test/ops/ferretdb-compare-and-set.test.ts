import { MongoClient, type Collection } from 'mongodb';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startFerretDb, type RunningService } from '@connect/local-services';

/**
 * Single-document atomicity, which the API's conditional writes rely on (docs/guarantees.md):
 * an update or delete applies to the document as it is when it is written, never to a copy read
 * before a concurrent write. Upstream FerretDB 1.24 reads a document, applies the update and
 * writes the result back by `_id`, so concurrent `$inc`s lost increments and an update filtered on
 * a version applied to a document that had moved past it. Our build (tools/ferretdb/patches)
 * writes with a compare-and-set against the document as read and, when it changed, reads it
 * again and applies the update again if it still matches, as MongoDB does. Every check here
 * holds on MongoDB too; on upstream FerretDB each fails.
 *
 * Four clients stand for four processes: each has its own connections.
 */
const database = `cas_${inject('runId')}`.replace(/[^a-z0-9_]/g, '_').slice(0, 60);
const onFerretDb = inject('mongoKind') === 'ferretdb';
let ferret: RunningService | undefined;
let clients: MongoClient[] = [];

interface Counter { _id: string; n: number; version: number; by?: number }

beforeAll(async () => {
  let url: string;
  if (onFerretDb) {
    ferret = await startFerretDb({ database });
    url = `${ferret.url}cas`;
  } else {
    url = inject('mongoUrl').replace(/\/[^/?]*(\?|$)/, `/${database}$1`);
  }
  clients = await Promise.all(Array.from({ length: 4 }, () => new MongoClient(url, { maxPoolSize: 10 }).connect()));
}, 120_000);

afterAll(async () => {
  if (!onFerretDb) await clients[0]?.db().dropDatabase().catch(() => undefined);
  await Promise.all(clients.map((c) => c.close()));
  await ferret?.stop();
});

/** The same collection through each client. */
function collections(name: string): Collection<Counter>[] {
  return clients.map((c) => c.db().collection<Counter>(name));
}

describe('concurrent writes to one document apply to the document as it is (compare-and-set)', () => {
  it('200 concurrent $inc from four clients count 200', async () => {
    const cols = collections('inc');
    await cols[0]!.insertOne({ _id: 'c', n: 0, version: 0 });
    await Promise.all(Array.from({ length: 200 }, (_, i) => cols[i % 4]!.updateOne({ _id: 'c' }, { $inc: { n: 1 } })));
    expect((await cols[0]!.findOne({ _id: 'c' }))?.n).toBe(200);
  }, 60_000);

  it('an update filtered on a version applies once per version: 20 rounds of 8 racing writers, one winner each', async () => {
    const cols = collections('versions');
    await cols[0]!.insertOne({ _id: 'u', n: 0, version: 0 });
    for (let version = 0; version < 20; version++) {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, by) => cols[by % 4]!.updateOne({ _id: 'u', version }, { $set: { version: version + 1, by }, $inc: { n: 1 } })),
      );
      expect(results.map((r) => r.modifiedCount).filter((m) => m === 1)).toHaveLength(1);
      expect(results.map((r) => r.matchedCount).reduce((a, b) => a + b)).toBe(1);
    }
    expect(await cols[0]!.findOne({ _id: 'u' })).toMatchObject({ version: 20, n: 20 });
  }, 60_000);

  it('findOneAndUpdate filtered on a version: one writer gets the document, the others null', async () => {
    const cols = collections('find-and-modify');
    await cols[0]!.insertOne({ _id: 'f', n: 0, version: 0 });
    for (let version = 0; version < 20; version++) {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, by) => cols[by % 4]!.findOneAndUpdate({ _id: 'f', version }, { $set: { version: version + 1, by }, $inc: { n: 1 } }, { returnDocument: 'after' })),
      );
      const winners = results.filter((r) => r !== null);
      expect(winners).toHaveLength(1);
      expect(winners[0]).toMatchObject({ version: version + 1, n: version + 1 });
    }
  }, 60_000);

  it('a delete filtered on a version never removes a document a concurrent update moved past it', async () => {
    const cols = collections('deletes');
    for (let round = 0; round < 40; round++) {
      const id = `d${round}`;
      await cols[0]!.insertOne({ _id: id, n: 0, version: 1 });
      const [updated, deleted] = await Promise.all([
        cols[round % 4]!.updateOne({ _id: id, version: 1 }, { $set: { version: 2 } }),
        cols[(round + 1) % 4]!.deleteOne({ _id: id, version: 1 }),
      ]);
      const left = await cols[0]!.findOne({ _id: id });
      // Either the delete came first (the update then found nothing), or the update did (the delete then matched nothing).
      if (deleted.deletedCount === 1) {
        expect(updated.modifiedCount).toBe(0);
        expect(left).toBeNull();
      } else {
        expect(updated.modifiedCount).toBe(1);
        expect(left).toMatchObject({ version: 2 });
      }
    }
  }, 60_000);

  it('a deleteMany filtered on a field leaves the documents a concurrent update took out of its filter', async () => {
    const cols = collections('delete-many');
    for (let round = 0; round < 3; round++) {
      await cols[0]!.deleteMany({});
      // Enough documents that deleteMany's read takes a while, and updates land between its read and its delete.
      await cols[0]!.insertMany(Array.from({ length: 2_000 }, (_, i) => ({ _id: `m${i}`, n: 0, version: 1 })));
      const moved = Array.from({ length: 200 }, (_, i) => `m${i * 10}`);
      const [updates, deleted] = await Promise.all([
        Promise.all(moved.map((id, i) => cols[1 + (i % 3)]!.updateOne({ _id: id, version: 1 }, { $set: { version: 2 } }))),
        cols[0]!.deleteMany({ version: 1 }),
      ]);
      const left = await cols[0]!.find({}).toArray();
      // What an update moved to version 2 stays; what it found already deleted does not come back.
      expect(left.every((d) => d.version === 2)).toBe(true);
      expect(left).toHaveLength(updates.filter((u) => u.modifiedCount === 1).length);
      expect(deleted.deletedCount + left.length).toBe(2_000);
    }
  }, 60_000);
});
