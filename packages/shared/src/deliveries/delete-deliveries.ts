import type { Filter } from 'mongodb';
import { deleteEachById } from '../models/each-by-id.ts';
import { inBatches } from '../models/in-batches.ts';
import { collectionsOf, type DeliveryDoc, type Models } from '../models/models.ts';

/**
 * Deletes the Delivery rows matching `filter` with their attempt history, `batchSize` rows a round
 * trip (the retention purge, `targets forget`). History first: a run cut short leaves rows without
 * history (deleted by the next run), never history without a row. The filter is repeated on the
 * delete, so a row that stopped matching since it was read (a dead letter replayed) stays.
 * The rows are read once, by one cursor, and deleted batch by batch as they come: FerretDB pushes
 * no limit down with a filter, so a query per batch read every matching row again for each batch.
 */
export async function deleteDeliveriesWithHistory(models: Models, filter: Filter<DeliveryDoc>, batchSize = 1000): Promise<{ deliveries: number; attempts: number }> {
  const { deliveries, deliveryAttempts } = collectionsOf(models);
  const deleted = { deliveries: 0, attempts: 0 };
  for await (const rows of inBatches(deliveries.find<Pick<DeliveryDoc, '_id'>>(filter, { projection: { _id: 1 } }), batchSize)) {
    const ids = rows.map((r) => r._id);
    // One statement per row, in one command each: FerretDB runs a `$in` as a scan of the whole
    // collection (the purge's pass then read every row and attempt stored, twice per batch), while
    // an equality on `delivery_id` (its index) or `_id` is a lookup. On MongoDB the same indexes.
    deleted.attempts += (await deliveryAttempts.bulkWrite(ids.map((id) => ({ deleteMany: { filter: { delivery_id: id } } })), { ordered: false })).deletedCount;
    // The row's own id last: a filter with a condition of its own on `_id` (the purge's `$nin` of the
    // dead letters it keeps) must not replace it, or this deleted every matching row while only
    // the batch's history went, leaving the attempts of all the others behind for good. The row was
    // found by that whole filter, so its own id is all the `_id` condition the delete needs.
    deleted.deliveries += await deleteEachById(deliveries, ids, filter);
  }
  return deleted;
}
