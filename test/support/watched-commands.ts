/**
 * The commands an operation sends to the database, on a connection of its own with command
 * monitoring on: for tests that check how a piece of work reads and writes (an `_id` equality,
 * never a `$in`: docs/guarantees.md, at the top), not only what it leaves behind.
 */
import mongoose, { Types } from 'mongoose';
import type { CommandStartedEvent } from 'mongodb';
import { createModels, type Models } from '@connect/shared';

export async function watchCommands<T>(mongoUrl: string, work: (models: Models) => Promise<T>): Promise<{ result: T; seen: CommandStartedEvent[] }> {
  const url = new URL(mongoUrl);
  url.searchParams.set('monitorCommands', 'true');
  const conn = await mongoose.createConnection(url.toString()).asPromise();
  const seen: CommandStartedEvent[] = [];
  conn.getClient().on('commandStarted', (e) => seen.push(e));
  try {
    return { result: await work(createModels(conn)), seen };
  } finally {
    await conn.close();
  }
}

/** The filters of the commands seen on `collection`: a find's, each update's or delete's statement's. */
export function filtersOn(seen: readonly CommandStartedEvent[], collection: string, commandName: 'find' | 'update' | 'delete'): Record<string, unknown>[] {
  return seen
    .filter((e) => e.commandName === commandName && e.command[commandName] === collection)
    .flatMap((e) =>
      commandName === 'find'
        ? [e.command.filter as Record<string, unknown>]
        : (e.command[commandName === 'update' ? 'updates' : 'deletes'] as { q: Record<string, unknown> }[]).map((s) => s.q),
    );
}

/** An `_id` equality (a string or an ObjectId), which FerretDB answers from its primary key. */
export function isIdEquality(filter: Record<string, unknown>): boolean {
  const id = filter._id;
  return typeof id === 'string' || id instanceof Types.ObjectId || (id as { _bsontype?: string } | undefined)?._bsontype === 'ObjectId';
}

/** No `$in` of more than one value anywhere in `filter` (a one-value `$in` is how an equality is kept from FerretDB's pushdown: onlyIdPushedDown). */
export function hasNoBatchIn(filter: unknown): boolean {
  if (Array.isArray(filter)) return filter.every(hasNoBatchIn);
  if (filter === null || typeof filter !== 'object' || filter instanceof Date || filter instanceof Types.ObjectId) return true;
  return Object.entries(filter).every(([key, value]) => (key === '$in' ? Array.isArray(value) && value.length <= 1 : hasNoBatchIn(value)));
}
