import type { Collection, Document, Filter, UpdateFilter } from 'mongodb';

/**
 * `filter` with its top-level equalities (`status: 'pending'`) written as one-value `$in`s, which
 * MongoDB treats alike, for a statement that also names an `_id`. FerretDB pushes every equality
 * down to PostgreSQL, whose planner, with no estimate for them, then combined the `_id` lookup with
 * the index on the status or target and read that index's whole entry per statement (13.7 ms
 * against 0.4 ms by `_id` alone at 150,000 rows, growing with them); a `$in` it checks in memory on
 * the one document the `_id` finds (0.48 ms).
 */
export function onlyIdPushedDown<D extends Document>(filter: Filter<D>): Filter<D> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(filter)) {
    const scalar = typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || value instanceof Date;
    out[key] = key !== '_id' && !key.startsWith('$') && scalar ? { $in: [value] } : value;
  }
  return out as Filter<D>;
}

/**
 * Writes to a set of documents known by `_id`, as one unordered `bulkWrite` of one statement per
 * document, each filtered by its own `_id` equality (plus `filter`). Not `{ _id: { $in: ids } }`:
 * FerretDB 1.24 runs `$in` as a scan of the whole collection, so a batch write cost the size of
 * the collection there (the same reason as findByIds; docs/guarantees.md, at the top); an `_id`
 * equality is a primary-key lookup. On MongoDB both use the index. An `_id` condition in `filter` is
 * replaced by each id's equality: pass only ids the whole filter found.
 */
export async function updateEachById<D extends Document>(collection: Collection<D>, ids: readonly unknown[], filter: Filter<D>, update: UpdateFilter<D>): Promise<number> {
  if (ids.length === 0) return 0;
  const res = await collection.bulkWrite(
    ids.map((id) => ({ updateOne: { filter: onlyIdPushedDown({ ...filter, _id: id } as Filter<D>), update } })),
    { ordered: false },
  );
  return res.modifiedCount;
}

/** As updateEachById, deleting: how many of these documents (still matching `filter`) were deleted. */
export async function deleteEachById<D extends Document>(collection: Collection<D>, ids: readonly unknown[], filter: Filter<D> = {}): Promise<number> {
  if (ids.length === 0) return 0;
  const res = await collection.bulkWrite(ids.map((id) => ({ deleteOne: { filter: onlyIdPushedDown({ ...filter, _id: id } as Filter<D>) } })), { ordered: false });
  return res.deletedCount;
}
