import { LRUCache } from 'lru-cache';
import type { ProviderUserDoc } from '../models/models.ts';

/** What a request for a user not held here turned out to be. */
export type UncachedRequest = 'plain-update' | 'create' | 'other';

/** The first step of a request for a user not held here (docs/guarantees.md, "One-step writes"). */
export type FirstStep = 'read' | 'write' | 'insert';

/** How far over the last requests the moving averages look (about this many), and where a step is taken and left. */
const WINDOW = 32;
const TAKE_ABOVE = 0.6;
const LEAVE_BELOW = 0.4;

/**
 * The users this process wrote or read last, so that an update can go straight to
 * its version-conditional write (one round trip) instead of reading first. Never
 * trusted on its own: the write is conditional on the cached version, a miss
 * means the cache was stale and the user is read again, and an answer of
 * "nothing changed" is always confirmed by a fresh read. Bounded; the least
 * recently used goes first.
 *
 * It also learns what requests for users it does not hold turn out to be, to pick
 * their first step (docs/guarantees.md, "One-step writes"): read first (a no-op
 * then takes one round trip, an update or a create two), write first (an update
 * takes one, a no-op two, a create three) or insert first (a create takes one, a
 * no-op two, an update three). Writing first pays when more than half of those
 * requests are plain updates, inserting first when more than half are creates; a
 * moving average of each over about the last 32 of them decides, with a margin
 * either side of one half so that the step does not flap.
 */
export class RecentUsers {
  private readonly entries: LRUCache<string, ProviderUserDoc>;
  /** Moving averages of "a request for a user not held here was a plain update" and "... was a create". */
  private plainUpdates = 0;
  private creates = 0;
  private step: FirstStep;

  /** `firstStep`: `learn` as described; `write` or `insert` always takes that step (tests of its path). */
  constructor(
    capacity = 10_000,
    private readonly firstStep: 'learn' | 'write' | 'insert' = 'learn',
  ) {
    this.entries = new LRUCache({ max: capacity });
    this.step = firstStep === 'learn' ? 'read' : firstStep;
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

  /** How a request for a user not held here starts. */
  get next(): FirstStep {
    return this.step;
  }

  /** What a request for a user not held here turned out to be. */
  noteUncached(was: UncachedRequest): void {
    if (this.firstStep !== 'learn') return;
    this.plainUpdates += ((was === 'plain-update' ? 1 : 0) - this.plainUpdates) / WINDOW;
    this.creates += ((was === 'create' ? 1 : 0) - this.creates) / WINDOW;
    if (this.step === 'write' && this.plainUpdates < LEAVE_BELOW) this.step = 'read';
    if (this.step === 'insert' && this.creates < LEAVE_BELOW) this.step = 'read';
    // Both cannot pass one half at once: each request counts for one of them at most.
    if (this.step === 'read') this.step = this.plainUpdates > TAKE_ABOVE ? 'write' : this.creates > TAKE_ABOVE ? 'insert' : 'read';
  }
}
