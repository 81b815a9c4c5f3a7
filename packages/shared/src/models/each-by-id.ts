import type { Collection, Document, Filter, UpdateFilter } from 'mongodb';

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
    ids.map((id) => ({ updateOne: { filter: { ...filter, _id: id } as Filter<D>, update } })),
    { ordered: false },
  );
  return res.modifiedCount;
}

/** As updateEachById, deleting: how many of these documents (still matching `filter`) were deleted. */
export async function deleteEachById<D extends Document>(collection: Collection<D>, ids: readonly unknown[], filter: Filter<D> = {}): Promise<number> {
  if (ids.length === 0) return 0;
  const res = await collection.bulkWrite(ids.map((id) => ({ deleteOne: { filter: { ...filter, _id: id } as Filter<D> } })), { ordered: false });
  return res.deletedCount;
}
