import type { ProviderUserDoc } from '../models/models.ts';

/**
 * The side effects of a provider-user write, injected so that every write path
 * (POST /users, DELETE /users/{id}, a future bulk path or CLI command) performs
 * them itself and no caller has to remember to.
 */

/** Hands a written user's newest event towards the queue. Must not throw: the outbox sweep catches up on failures. */
export interface UserEventPublisher {
  publishSoon(user: ProviderUserDoc): void;
}

export type UpsertMetricOutcome = 'created' | 'updated' | 'reactivated' | 'unchanged' | 'conflict';
export type DeactivateMetricOutcome = 'deactivated' | 'unchanged' | 'not_found';

/** Counts what each write request came to. */
export interface ProviderUserMetrics {
  upsert(outcome: UpsertMetricOutcome): void;
  deactivate(outcome: DeactivateMetricOutcome): void;
}

/** What every write use case needs besides the database. */
export interface WritePorts {
  publisher: UserEventPublisher;
  metrics?: ProviderUserMetrics;
}
