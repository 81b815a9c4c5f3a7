import { MongoBulkWriteError, MongoNetworkTimeoutError } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { toCliError } from './command.ts';

describe('toCliError', () => {
  it("a bulk write cut by a connection timing out is `unavailable`, not `internal` (a fairness audit's resync under load printed it as a bug)", () => {
    const timedOut = new MongoBulkWriteError({ message: 'connection 10 to 127.0.0.1:42267 timed out', code: 89 }, { insertedCount: 0, matchedCount: 0, modifiedCount: 0, deletedCount: 0, upsertedCount: 0, insertedIds: {}, upsertedIds: {} } as never);
    expect(toCliError(timedOut)).toMatchObject({ kind: 'unavailable', message: 'connection 10 to 127.0.0.1:42267 timed out' });
    const wrapped = Object.assign(new Error('bulk write failed'), { cause: new MongoNetworkTimeoutError('connection 3 to db:27017 timed out') });
    expect(toCliError(wrapped)).toMatchObject({ kind: 'unavailable' });
    // A bulk write refused for what it holds is still what it was.
    expect(toCliError(new MongoBulkWriteError({ message: 'E11000 duplicate key error', code: 11000 }, {} as never))).toMatchObject({ kind: 'internal' });
  });
});
