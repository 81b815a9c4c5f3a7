/**
 * `read` for a metrics scrape, waiting at most `waitMs`; after that the newest value any read
 * brought (one that finished after its own scrape gave up included), or undefined before the
 * first. So a Redis outage or a slow Redis never leaves a scrape, and the process figures in it,
 * without an answer. A Redis client queues commands while it (re)connects, so a read still in
 * flight is shared by the scrapes that follow instead of queueing one more per scrape.
 */
export function boundedRead<T>(read: () => Promise<T>, waitMs: number): () => Promise<T | undefined> {
  let inFlight: Promise<T | undefined> | undefined;
  let latest: T | undefined;
  return () => {
    inFlight ??= read()
      .then((value) => (latest = value))
      .catch(() => latest)
      .finally(() => (inFlight = undefined));
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<T | undefined>((resolve) => (timer = setTimeout(() => resolve(latest), waitMs)));
    return Promise.race([inFlight, gaveUp]).finally(() => clearTimeout(timer));
  };
}

/** How long a scrape waits for Redis before it answers with the values last read (API and worker alike). */
export const SCRAPE_WAIT_MS = 2000;
