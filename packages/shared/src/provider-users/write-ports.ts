import type { ProviderUserDoc } from '../models/models.ts';

/**
 * The side effects of a provider-user write, injected so that every write path
 * (POST /users, DELETE /users/{id}, a future bulk path or CLI command) performs
 * them itself and no caller has to remember to.
 */

/** Hands a written user's newest event towards the queue. Must not throw: the outbox sweep catches up on failures. */
export interface UserEventPublisher {
  /** `log`: the request's, so a failure's line carries its request id. */
  publishSoon(user: ProviderUserDoc, log?: WriteLog): void;
  /**
   * A write whose outcome is unknown (the database did not answer it in time): it may still
   * land, later than the outbox sweep allows for, its slot already passed. Look at the user
   * again later and publish its newest event if nobody did. Must not throw.
   */
  recheckLater?(key: UserKey, log?: WriteLog): void;
}

/**
 * A write whose request was answered already (a 503 at the API's deadline): it is not sent, and
 * not tried again. The caller was told to retry; a write of this request landing after that
 * retry, or after another write the caller made meanwhile, would put back what they replaced.
 */
export class WriteAbandonedError extends Error {
  readonly code = 'CONNECT_WRITE_ABANDONED';
  constructor() {
    super('the request was answered at its deadline before this write was sent: not sent');
    this.name = 'WriteAbandonedError';
  }
}

/** Throws WriteAbandonedError once `answered()` says the request has its answer. */
export function stopIfAnswered(answered: (() => boolean) | undefined): void {
  if (answered?.()) throw new WriteAbandonedError();
}

/** A request's logger (pino's fits): what a write's side effects say about it carries its request id. */
export interface WriteLog {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** A user as an integrator names it. */
export interface UserKey {
  organizationId: string;
  externalProviderId: string;
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
