import type { Filter } from 'mongodb';
import { deleteEachById } from '../models/each-by-id.ts';
import { collectionsOf, type DeliveryDoc, type Models } from '../models/models.ts';

/**
 * Deletes the Delivery rows matching `filter` with their attempt history, `batchSize` rows a round
 * trip (the retention purge, `targets forget`). History first: a run cut short leaves rows without
 * history (deleted by the next run), never history without a row. The filter is repeated on the
 * delete, so a row that stopped matching since it was read (a dead letter replayed) stays.
 */
export async function deleteDeliveriesWithHistory(models: Models, filter: Filter<DeliveryDoc>, batchSize = 1000): Promise<{ deliveries: number; attempts: number }> {
  const { deliveries, deliveryAttempts } = collectionsOf(models);
  const deleted = { deliveries: 0, attempts: 0 };
  let emptyBatches = 0;
  for (;;) {
    const ids = (await deliveries.find<Pick<DeliveryDoc, '_id'>>(filter, { projection: { _id: 1 } }).limit(batchSize).toArray()).map((d) => d._id);
    if (ids.length === 0) return deleted;
    // One statement per row, in one command each: FerretDB runs a `$in` as a scan of the whole
    // collection (the purge's pass then read every row and attempt stored, twice per batch), while
    // an equality on `delivery_id` (its index) or `_id` is a lookup. On MongoDB the same indexes.
    deleted.attempts += (await deliveryAttempts.bulkWrite(ids.map((id) => ({ deleteMany: { filter: { delivery_id: id } } })), { ordered: false })).deletedCount;
    // The row's own id last: a filter with a condition of its own on `_id` (the purge's `$nin` of the
    // dead letters it keeps) must not replace it, or this deleted every matching row while only
    // the batch's history went, leaving the attempts of all the others behind for good. The row was
    // found by that whole filter, so its own id is all the `_id` condition the delete needs.
    const deletedCount = await deleteEachById(deliveries, ids, filter);
    deleted.deliveries += deletedCount;
    // A batch can lose every row between find and delete (dead letters replayed meanwhile: they no
    // longer match, and the next find skips them). Two such batches in a row mean rows found again
    // that never delete: stop rather than spin.
    emptyBatches = deletedCount === 0 ? emptyBatches + 1 : 0;
    if (emptyBatches === 2) throw new Error(`${ids.length} delivery rows were found but none could be deleted, twice; is something still writing them?`);
    if (ids.length < batchSize) return deleted;
  }
}
