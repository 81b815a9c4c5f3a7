/**
 * When the next attempt of a delivery runs. BullMQ calls this (its custom
 * `backoffStrategy`) with the error the attempt threw: exponential backoff with
 * "equal jitter" (half fixed, half random), so targets that come back are not
 * hit by every retry at the same instant; a receiver's `Retry-After` wins when
 * it is longer (capped, so a hostile or broken header cannot park a delivery
 * for a year).
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

export interface BackoffSettings {
  baseMs: number;
  maxMs: number;
  maxRetryAfterMs: number;
}

export function deliveryBackoff(settings: BackoffSettings, random: () => number = Math.random) {
  return (attemptsMade: number, _type?: string, err?: Error): number => {
    const ceiling = Math.min(settings.baseMs * 2 ** Math.max(attemptsMade - 1, 0), settings.maxMs);
    const backoff = Math.round(ceiling / 2 + random() * (ceiling / 2));
    const retryAfter = err instanceof RetryableDeliveryError ? err.retryAfterMs : null;
    // Retry-After is a floor: never sooner than the receiver asked, never sooner than our own backoff.
    return retryAfter === null ? backoff : Math.max(Math.min(retryAfter, settings.maxRetryAfterMs), backoff);
  };
}
