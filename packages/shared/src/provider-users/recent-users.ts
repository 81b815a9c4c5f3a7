import { LRUCache } from 'lru-cache';
import type { ProviderUserDoc } from '../models/models.ts';

/**
 * The users this process wrote or read last, so that an update can go straight to
 * its version-conditional write (one round trip) instead of reading first. Never
 * trusted on its own: the write is conditional on the cached version, a miss
 * means the cache was stale and the user is read again, and an answer of
 * "nothing changed" is always confirmed by a fresh read. Bounded; the least
 * recently used goes first.
 */
export class RecentUsers {
  private readonly entries: LRUCache<string, ProviderUserDoc>;

  constructor(capacity = 10_000) {
    this.entries = new LRUCache({ max: capacity });
  }

  static keyOf(organizationId: string, externalProviderId: string): string {
    return `${organizationId}\u0000${externalProviderId}`;
  }

  get(key: string): ProviderUserDoc | undefined {
    return this.entries.get(key);
  }

  set(key: string, user: ProviderUserDoc): void {
    this.entries.set(key, user);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
