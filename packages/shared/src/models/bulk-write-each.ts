import { MongoBulkWriteError, type AnyBulkWriteOperation, type Collection, type Document } from 'mongodb';
import { isDuplicateKeyError } from './models.ts';

/**
 * One unordered `bulkWrite` of these operations, and each operation's own outcome, in their
 * order: `undefined` when it was applied, its error otherwise. One operation's error (a
 * duplicate key, a document too large) fails that operation only, so the callers whose
 * writes share a batch (GroupCommit) do not fail with it. An error that is not one
 * operation's (the connection dropped, a write concern not met) is thrown: it may have
 * applied any part of the batch, and every caller must treat its write as failed.
 *
 * An upsert that met a duplicate key lost a race to another writer's insert of the same
 * document (on FerretDB always, on MongoDB in some cases): the document exists by then, so
 * such upserts are applied once more, in a second bulkWrite, and take the update path.
 */
export async function bulkWriteEach<D extends Document>(collection: Collection<D>, ops: readonly AnyBulkWriteOperation<D>[]): Promise<(Error | undefined)[]> {
  const outcomes = await bulkWriteOnce(collection, ops);
  const again = ops.flatMap((op, i) => (isUpsert(op) && isDuplicateKeyError(outcomes[i]) ? [i] : []));
  if (again.length > 0) {
    // The first bulkWrite's other operations are applied whatever becomes of these: a failure here is theirs alone.
    const retried = await bulkWriteOnce(collection, again.map((i) => ops[i]!)).catch((err: Error) => again.map(() => err));
    again.forEach((i, j) => (outcomes[i] = retried[j]));
  }
  return outcomes;
}

async function bulkWriteOnce<D extends Document>(collection: Collection<D>, ops: readonly AnyBulkWriteOperation<D>[]): Promise<(Error | undefined)[]> {
  const outcomes: (Error | undefined)[] = ops.map(() => undefined);
  try {
    await collection.bulkWrite([...ops], { ordered: false });
  } catch (err) {
    // A driver or write-concern error comes as a MongoBulkWriteError too, with no writeErrors.
    const writeErrors = err instanceof MongoBulkWriteError ? [err.writeErrors].flat() : [];
    if (writeErrors.length === 0 || (err as MongoBulkWriteError).result.getWriteConcernError()) throw err;
    for (const e of writeErrors) outcomes[e.index] = Object.assign(new Error(e.errmsg ?? 'write failed'), { code: e.code });
  }
  return outcomes;
}

function isUpsert<D extends Document>(op: AnyBulkWriteOperation<D>): boolean {
  return ('updateOne' in op && op.updateOne.upsert === true) || ('updateMany' in op && op.updateMany.upsert === true) || ('replaceOne' in op && op.replaceOne.upsert === true);
}
