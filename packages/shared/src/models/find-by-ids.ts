import type { Collection, Document, Filter, FindOptions, WithId } from 'mongodb';

/**
 * The documents with these `_id`s, each looked up on its own, at most
 * `parallel` at a time. Not `{ _id: { $in: ids } }`: FerretDB 1.24 runs `$in`
 * (and every range) as a scan of the whole collection, while an `_id` equality
 * uses the primary key, so a batch lookup cost the size of the collection there
 * (docs/guarantees.md, at the top). On MongoDB both use the index; this costs
 * round trips instead, bounded by `parallel`.
 */
export async function findByIds<D extends Document, R extends Document = WithId<D>>(collection: Collection<D>, ids: readonly unknown[], options: FindOptions = {}, parallel = 16): Promise<R[]> {
  const found: R[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(parallel, ids.length) }, async () => {
      while (next < ids.length) {
        const doc = await collection.findOne<R>({ _id: ids[next++] } as Filter<D>, options);
        if (doc) found.push(doc);
      }
    }),
  );
  return found;
}
