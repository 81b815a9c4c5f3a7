import { collectionsOf, findByIds, inBatches, type DeliveryAttemptDoc, type Models } from '@connect/shared';

/** The relay_cursors document that says the walk below has been made to its end on this database. */
export const ORPHANED_HISTORY_WALKED = 'retention-orphaned-history';

/**
 * Attempt history left without its delivery row. Releases before the purge deleted only its
 * batch's rows (a purge that kept a refused reactivation deleted every old finished row while
 * only the first batch's attempts went) left such history behind for good, and nothing read it.
 * Once per database, from the retention pass: one read of every attempt (its delivery id and
 * time; FerretDB reads the collection whole for any filter but a `delivery_id` equality), each
 * delivery with attempts older than `cutoff` looked up by `_id`, and the history of the rows that
 * are gone deleted by `delivery_id`. History younger than the cutoff is left: its row may be
 * about to be written or purged in the same pass. A walk cut short is made again by a later pass;
 * one made to its end is not (the purge deletes history before rows, so nothing new is left).
 * Answers the attempts deleted, or undefined when the walk was made already.
 */
export async function purgeOrphanedHistory(models: Models, cutoff: Date, batchSize = 1000): Promise<number | undefined> {
  const { deliveries, deliveryAttempts, relayCursors } = collectionsOf(models);
  if (await relayCursors.findOne({ _id: ORPHANED_HISTORY_WALKED }, { projection: { _id: 1 } })) return undefined;
  let deleted = 0;
  const attempts = deliveryAttempts.find<Pick<DeliveryAttemptDoc, 'delivery_id' | 'at'>>({}, { projection: { _id: 0, delivery_id: 1, at: 1 } });
  for await (const batch of inBatches(attempts, batchSize)) {
    const old = [...new Set(batch.filter((a) => a.at < cutoff).map((a) => a.delivery_id))];
    if (old.length === 0) continue;
    const present = new Set((await findByIds(deliveries, old, { projection: { _id: 1 } })).map((r) => r._id));
    const gone = old.filter((id) => !present.has(id));
    if (gone.length === 0) continue;
    deleted += (await deliveryAttempts.bulkWrite(gone.map((id) => ({ deleteMany: { filter: { delivery_id: id } } })), { ordered: false })).deletedCount;
  }
  await relayCursors.updateOne({ _id: ORPHANED_HISTORY_WALKED }, { $set: { updated_at: new Date() } }, { upsert: true });
  return deleted;
}
