import type { FindCursor } from 'mongodb';

/**
 * The documents of one query, `size` at a time, read once by its cursor (closed at the end, or
 * when the caller stops early). For walks that would otherwise run a query per batch: FerretDB
 * pushes down neither a range, a sort nor a limit with a filter, so each such query read every
 * matching document again (docs/guarantees.md, at the top).
 */
export async function* inBatches<T>(cursor: FindCursor<T>, size: number): AsyncGenerator<T[]> {
  try {
    let batch: T[] = [];
    for await (const doc of cursor.batchSize(size)) {
      batch.push(doc);
      if (batch.length < size) continue;
      yield batch;
      batch = [];
    }
    if (batch.length > 0) yield batch;
  } finally {
    await cursor.close();
  }
}
