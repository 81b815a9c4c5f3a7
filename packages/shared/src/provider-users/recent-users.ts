import { LRUCache } from 'lru-cache';
import type { ProviderUserDoc } from '../models/models.ts';

/**
 * The users this process wrote or read last, so that an update can go straight to
 * its version-conditional write (one round trip) instead of reading first. Never
 * trusted on its own: the write is conditional on the cached version, a miss
 * means the cache was stale and the user is read again, and an answer of
 * "nothing changed" is always confirmed by a fresh read. Bounded; the least
 * recently used goes first.
 *
 * It also learns what requests for users it does not hold turn out to be, to pick
 * their first step (docs/guarantees.md, "One-step updates"): read first (a no-op
 * then takes one round trip, an update or a create two), or write first (an update
 * takes one, a no-op two, a create three). Writing first pays when more than half
 * of those requests are plain updates; a moving average over about the last 32 of
 * them decides, with a margin either side of one half so that it does not flap.
 */
export class RecentUsers {
  private readonly entries: LRUCache<string, ProviderUserDoc>;
  /** Moving average of "a request for a user not held here was a plain update" (1) or not (0). */
  private plainUpdates = 0;
  private writingFirst: boolean;

  /** `firstStep`: `learn` as described; `write` always writes first (tests of that path). */
  constructor(
    capacity = 10_000,
    private readonly firstStep: 'learn' | 'write' = 'learn',
  ) {
    this.entries = new LRUCache({ max: capacity });
    this.writingFirst = firstStep === 'write';
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

  /** Whether a request for a user not held here should try its update before reading. */
  get writeFirst(): boolean {
    return this.writingFirst;
  }

  /** What a request for a user not held here turned out to be: a plain update (no reactivation), or anything else. */
  noteUncached(plainUpdate: boolean): void {
    if (this.firstStep !== 'learn') return;
    this.plainUpdates += ((plainUpdate ? 1 : 0) - this.plainUpdates) / 32;
    if (this.writingFirst ? this.plainUpdates < 0.4 : this.plainUpdates > 0.6) this.writingFirst = !this.writingFirst;
  }
}
