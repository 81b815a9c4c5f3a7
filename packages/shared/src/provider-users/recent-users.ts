import type { ProviderUserDoc } from '../models/models.ts';

/**
 * The users this process wrote or read last, so that an update can go straight to
 * its version-conditional write (one round trip) instead of reading first. Never
 * trusted on its own: the write is conditional on the cached version, a miss
 * means the cache was stale and the user is read again, and an answer of
 * "nothing changed" is always confirmed by a fresh read. Bounded; oldest out first.
 */
export class RecentUsers {
  private readonly entries = new Map<string, ProviderUserDoc>();

  constructor(private readonly capacity = 10_000) {}

  static keyOf(organizationId: string, externalProviderId: string): string {
    return `${organizationId}\u0000${externalProviderId}`;
  }

  get(key: string): ProviderUserDoc | undefined {
    return this.entries.get(key);
  }

  set(key: string, user: ProviderUserDoc): void {
    this.entries.delete(key);
    this.entries.set(key, user);
    if (this.entries.size > this.capacity) this.entries.delete(this.entries.keys().next().value!);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
