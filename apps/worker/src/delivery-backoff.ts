import { retryDelayMs, type DeliveryPolicy } from '@connect/shared';

/**
 * A failed attempt that is worth another try; carries the receiver's
 * Retry-After (ms) so the next wait is at least that long.
 */
export class RetryableDeliveryError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | null,
  ) {
    super(message);
    this.name = 'RetryableDeliveryError';
  }
}

/**
 * BullMQ's custom `backoffStrategy`: the next wait from the retry schedule
 * (±20 % jitter), the receiver's Retry-After as a floor capped at the largest
 * step. See retryDelayMs and docs/delivery.md.
 */
export function deliveryBackoff(policy: Pick<DeliveryPolicy, 'retryScheduleMs'>, random: () => number = Math.random) {
  return (attemptsMade: number, _type?: string, err?: Error): number =>
    retryDelayMs(policy, attemptsMade, err instanceof RetryableDeliveryError ? err.retryAfterMs : null, random);
}
