/**
 * What a Prometheus scrape of the API costs as delivery rows pile up (issue 14: a
 * scrape must cost the same on day 1 and day 300). Delivery rows are bulk-inserted
 * straight into the API's database (the shape the worker writes, finished and pending
 * mixed), then GET /metrics is timed one scrape after another, at each size.
 */
import { randomUUID } from 'node:crypto';
import { ObjectId, type Collection } from 'mongodb';
import type { RoundStats } from './round-stats.ts';

const STATUSES = ['delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'delivered', 'superseded', 'superseded', 'failed', 'pending'] as const;
const TARGETS = ['crm', 'dictation', 'billing'];

/**
 * Inserts delivery rows until the collection holds `to` of them: unordered batches of
 * 2,500, four in flight. Counts once, before (the collection is small then), and adds
 * what the server acknowledged: on FerretDB a count reads every document, about 10 s
 * at 60,000.
 */
export async function seedDeliveryRows(deliveries: Collection, organizationId: string, to: number): Promise<number> {
  const have = await deliveries.countDocuments({});
  let next = have;
  let inserted = 0;
  const batch = 2500;
  const lane = async () => {
    while (next < to) {
      const start = next;
      next = Math.min(to, start + batch);
      const docs = [];
      for (let i = start; i < next; i++) {
        const at = new Date(Date.now() - (to - i) * 1000);
        const status = STATUSES[i % STATUSES.length]!;
        const eventId = randomUUID();
        const target = TARGETS[i % TARGETS.length]!;
        docs.push({
          _id: `${eventId}:${target}`,
          event_id: eventId,
          event_type: i % 4 === 0 ? 'user.created' : 'user.updated',
          organization_id: organizationId,
          user_id: new ObjectId(),
          external_provider_id: `scrape-${i}`,
          target,
          version: 1 + (i % 4),
          status,
          attempts: status === 'failed' ? 8 : 1,
          last_status_code: status === 'failed' ? 503 : status === 'pending' ? null : 204,
          last_error: status === 'failed' ? 'HTTP 503' : null,
          created_at: at,
          updated_at: at,
          delivered_at: status === 'delivered' ? at : null,
        });
      }
      const { insertedCount } = await deliveries.insertMany(docs as never[], { ordered: false });
      inserted += insertedCount; // after the await (see seedUsers)
    }
  };
  await Promise.all(Array.from({ length: 4 }, lane));
  return have + inserted;
}

/**
 * Scrapes of /metrics one after another, in `rounds` rounds of `roundSec` seconds each
 * after `warmupSec` unmeasured (like every other figure with a target: 21 single scrapes
 * of a few ms each gave a ratio of 1.80 with a spread of 0.31–4.87, one autovacuum or
 * one background refresh landing on a handful of them). A round's p50 and p99 are those
 * of its scrapes, in ms; the summary's p50 median is then the median over rounds of each
 * round's median scrape time.
 */
export async function timeScrapes(metricsUrl: string, t: { rounds: number; roundSec: number; warmupSec: number }): Promise<RoundStats[]> {
  const once = async (): Promise<{ ms: number; ok: boolean }> => {
    const start = performance.now();
    const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(60_000) });
    const body = await res.text();
    return { ms: performance.now() - start, ok: res.status === 200 && body.length > 0 };
  };
  const scrapeFor = async (sec: number) => {
    const times: number[] = [];
    let bad = 0;
    const end = performance.now() + sec * 1000;
    // At least one scrape, however long the first one takes.
    do {
      const { ms, ok } = await once();
      times.push(ms);
      if (!ok) bad++;
    } while (performance.now() < end);
    return { times: times.sort((a, b) => a - b), bad };
  };
  await scrapeFor(t.warmupSec);
  const rounds: RoundStats[] = [];
  for (let i = 0; i < t.rounds; i++) {
    const { times, bad } = await scrapeFor(t.roundSec);
    const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
    const spent = times.reduce((a, b) => a + b, 0);
    rounds.push({ rps: (times.length * 1000) / spent, p50: at(0.5), p99: at(0.99), p999: at(0.999), requests: times.length, errors: 0, non2xx: bad });
  }
  return rounds;
}
