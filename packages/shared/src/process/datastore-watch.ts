import type { Logger } from 'pino';

export interface WatchedDatastore {
  name: 'MongoDB' | 'Redis';
  /** Resolves when the datastore answers; rejects when it refuses. */
  ping: () => Promise<unknown>;
}

export interface DatastoreWatchOptions {
  /** How often each datastore is asked (one ask at a time: an ask still waiting is not repeated). */
  intervalMs?: number;
  /** How long an ask may wait before the datastore counts as not answering. */
  silentAfterMs?: number;
  /** How often a reminder is written while it lasts. */
  remindEveryMs?: number;
  now?: () => number;
}

export interface DatastoreWatch {
  stop(): void;
  /** False while the datastore counts as not answering: it refused the last ask, or one has waited `silentAfterMs`. */
  answering(name: WatchedDatastore['name']): boolean;
}

const seconds = (ms: number) => Math.round(ms / 1000);

/**
 * The log lines an alert on a datastore outage needs (docs/operations.md, Logs): one warn when a
 * datastore stops answering (a refusal, or no answer within `silentAfterMs`), a reminder every
 * `remindEveryMs` while it lasts, and one info line with its length when it answers again. A
 * black-holed connection raises no error (the TCP connection stays up, commands wait), so without
 * this a worker idle through a Redis black hole wrote nothing at all, and neither process ever
 * said an outage had ended.
 */
export function watchDatastores(stores: WatchedDatastore[], log: Logger, o: DatastoreWatchOptions = {}): DatastoreWatch {
  const intervalMs = o.intervalMs ?? 5000;
  const silentAfterMs = o.silentAfterMs ?? 5000;
  const remindEveryMs = o.remindEveryMs ?? 60_000;
  const now = o.now ?? Date.now;
  const isDown = new Map<string, () => boolean>();
  const timers = stores.map((store) => {
    let downSince: number | null = null;
    isDown.set(store.name, () => downSince !== null);
    let remindedAt = 0;
    let asking: number | null = null;
    const down = (since: number, why: string) => {
      const t = now();
      if (downSince === null) {
        downSince = since;
        remindedAt = t;
        log.warn({ datastore: store.name, err: why }, `${store.name} does not answer: ${why}`);
      } else if (t - remindedAt >= remindEveryMs) {
        remindedAt = t;
        log.warn({ datastore: store.name, err: why, down_for_s: seconds(t - downSince) }, `${store.name} still does not answer, for ${seconds(t - downSince)} s: ${why}`);
      }
    };
    const tick = () => {
      if (asking !== null) {
        if (now() - asking >= silentAfterMs) down(asking, `no answer for ${seconds(now() - asking)} s`);
        return;
      }
      const since = now();
      asking = since;
      store.ping().then(
        () => {
          asking = null;
          if (downSince === null) return;
          log.info({ datastore: store.name, down_for_s: seconds(now() - downSince) }, `${store.name} answers again, after ${seconds(now() - downSince)} s`);
          downSince = null;
        },
        (err: unknown) => {
          asking = null;
          down(since, (err as Error)?.message ?? String(err));
        },
      );
    };
    // The first ask one interval after the start: connections made a moment ago are not up yet
    // (every worker's start read "Redis does not answer", then "answers again").
    const timer = setInterval(tick, intervalMs);
    timer.unref();
    return timer;
  });
  return {
    stop: () => {
      for (const t of timers) clearInterval(t);
    },
    answering: (name) => !(isDown.get(name)?.() ?? false),
  };
}

/**
 * Whether a datastore answers, for a health endpoint (`/readyz`, the worker's `/healthz`): a ping
 * of its own, given `waitMs`. A refusal is "no" at once. A ping still waiting then (a slow
 * datastore, or one that just went silent) is judged by the watch, which says "no" once an ask of
 * its own has waited its `silentAfterMs` (5 s): a datastore answering in 1.5 s still serves
 * requests (their deadline is 10 s), and readiness that said "down" for it took every API out of
 * rotation. Without a watch, a ping still waiting is "no".
 */
export async function answersNow(name: WatchedDatastore['name'], ping: () => Promise<unknown>, watch: DatastoreWatch | undefined, waitMs = 500): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const verdict = await Promise.race([
    ping().then(
      () => 'yes' as const,
      () => 'no' as const,
    ),
    new Promise<'waiting'>((resolve) => {
      timer = setTimeout(() => resolve('waiting'), watch ? waitMs : 1000);
    }),
  ]);
  clearTimeout(timer);
  return verdict === 'yes' || (verdict === 'waiting' && watch !== undefined && watch.answering(name));
}
