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

/** Inserts delivery rows until the collection holds `to` of them: unordered batches of 2,500, four in flight. */
export async function seedDeliveryRows(deliveries: Collection, organizationId: string, to: number): Promise<number> {
  const have = await deliveries.countDocuments({});
  let next = have;
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
      await deliveries.insertMany(docs as never[], { ordered: false });
    }
  };
  await Promise.all(Array.from({ length: 4 }, lane));
  return deliveries.countDocuments({});
}

/**
 * `scrapes` GETs of /metrics one after another, after two unmeasured ones; each is a
 * round of its own (p50 = p99 = its time in ms), so the summary's p50 median is the
 * median scrape time and min–max its spread.
 */
export async function timeScrapes(metricsUrl: string, scrapes: number): Promise<RoundStats[]> {
  const once = async (): Promise<{ ms: number; ok: boolean }> => {
    const t = performance.now();
    const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(60_000) });
    const body = await res.text();
    return { ms: performance.now() - t, ok: res.status === 200 && body.length > 0 };
  };
  for (let i = 0; i < 2; i++) await once();
  const rounds: RoundStats[] = [];
  for (let i = 0; i < scrapes; i++) {
    const { ms, ok } = await once();
    rounds.push({ rps: 1000 / ms, p50: ms, p99: ms, p999: ms, requests: 1, errors: 0, non2xx: ok ? 0 : 1 });
  }
  return rounds;
}
