/**
 * The delivery limit: a bare BullMQ worker doing what a delivery costs in HTTP,
 * in a process of its own. Per round, N jobs (a callback body each, the shape the
 * worker sends) are added to a paused plain queue on a prefix of its own; then the
 * queue is resumed and a plain Worker, at our worker's delivery concurrency, signs
 * each body (hex HMAC-SHA256 of timestamp + body, node:crypto) and POSTs it with
 * fetch to the bench receiver. No database, no fan-out, no bookkeeping: the
 * receiver's first-to-last arrival time over N is the rate to compare ours with.
 */
import { createHmac, randomUUID } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { DEFAULT_DELIVERY_POLICY, deliveryJobOptions } from '@connect/shared';
import { childMain, isMain } from './bench-child.ts';
import { emailOf, externalId, settingsWith, LOCALE_A } from './bench-users.ts';

export interface BullmqBaselineSpec {
  redisUrl: string;
  /** BullMQ key prefix of its own (cleaned up by the run). */
  prefix: string;
  receiverUrl: string;
  secret: string;
  concurrency: number;
  /** Jobs per round; an unmeasured warm-up round of `warmupJobs` first. */
  jobs: number;
  warmupJobs: number;
  rounds: number;
  /** Round r's callbacks carry external_provider_id `${idPrefix}-r${r}-${i}` (warm-up: r = w). */
  idPrefix: string;
  timeoutMs: number;
}

export interface BullmqBaselineRound {
  /** The ids this round delivered, for the receiver's arrival times. */
  idPrefix: string;
  jobs: number;
  completed: number;
  failed: number;
  /** Epoch ms: when the queue was resumed, when the last job completed (the worker's own view). */
  resumedAt: number;
  doneAt: number;
}

interface CallbackBody {
  request_uuid: string;
  type: 'user.created';
  occurred_at: string;
  data: { organization_id: string; version: number; user: Record<string, unknown> };
}

const nowMs = () => performance.timeOrigin + performance.now();

function callbackBody(prefix: string, i: number): CallbackBody {
  const at = new Date().toISOString();
  return {
    request_uuid: randomUUID(),
    type: 'user.created',
    occurred_at: at,
    data: {
      organization_id: 'bare-bullmq',
      version: 1,
      user: { provider_email: emailOf(prefix, i), external_provider_id: externalId(prefix, i), settings: settingsWith(LOCALE_A), created_at: at, updated_at: at, version: 1 },
    },
  };
}

const retention = deliveryJobOptions(DEFAULT_DELIVERY_POLICY);

export async function runBullmqBaseline(spec: BullmqBaselineSpec): Promise<{ rounds: BullmqBaselineRound[] }> {
  const queueRedis = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
  const workerRedis = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
  const queue = new Queue<CallbackBody>('bare-deliveries', {
    connection: queueRedis,
    prefix: spec.prefix,
    // The same retention as the worker's delivery queues, so each completion costs Redis the same
    // (the worker's own backoff type needs its strategy: a plain exponential one stands in; nothing fails here).
    defaultJobOptions: { attempts: 8, backoff: { type: 'exponential', delay: 2000 }, removeOnComplete: retention.removeOnComplete, removeOnFail: retention.removeOnFail },
  });
  await queue.pause();
  let completed = 0;
  let failed = 0;
  let doneAt = 0;
  const deliver = async (job: Job<CallbackBody>): Promise<void> => {
    const rawBody = JSON.stringify(job.data);
    const timestamp = new Date().toISOString();
    const signature = createHmac('sha256', spec.secret).update(timestamp, 'utf8').update(rawBody, 'utf8').digest('hex');
    const res = await fetch(spec.receiverUrl, {
      method: 'POST',
      redirect: 'manual',
      signal: AbortSignal.timeout(10_000),
      headers: {
        'content-type': 'application/json',
        'user-agent': 'bare-bullmq-bench/1',
        'x-nabla-connect-timestamp': timestamp,
        'x-nabla-connect-signature': signature,
      },
      body: rawBody,
    });
    await res.arrayBuffer();
    if (res.status < 200 || res.status >= 300) throw new Error(`HTTP ${res.status}`);
  };
  const worker = new Worker<CallbackBody>('bare-deliveries', deliver, { connection: workerRedis, prefix: spec.prefix, concurrency: spec.concurrency });
  worker.on('completed', () => {
    completed++;
    doneAt = nowMs();
  });
  worker.on('failed', () => {
    failed++;
    doneAt = nowMs();
  });
  worker.on('error', () => undefined);
  await worker.waitUntilReady();

  const oneRound = async (label: string, jobs: number): Promise<BullmqBaselineRound> => {
    const idPrefix = `${spec.idPrefix}-r${label}`;
    completed = 0;
    failed = 0;
    await queue.addBulk(Array.from({ length: jobs }, (_, i) => ({ name: 'user.created', data: callbackBody(idPrefix, i) })));
    const resumedAt = nowMs();
    await queue.resume();
    const deadline = Date.now() + spec.timeoutMs;
    while (completed + failed < jobs && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await queue.pause();
    return { idPrefix, jobs, completed, failed, resumedAt, doneAt };
  };

  try {
    if (spec.warmupJobs > 0) await oneRound('w', spec.warmupJobs);
    const rounds: BullmqBaselineRound[] = [];
    for (let r = 0; r < spec.rounds; r++) rounds.push(await oneRound(String(r), spec.jobs));
    return { rounds };
  } finally {
    await worker.close();
    await queue.obliterate({ force: true }).catch(() => undefined);
    await queue.close();
    queueRedis.disconnect();
    workerRedis.disconnect();
  }
}

if (isMain(import.meta.url)) await childMain(runBullmqBaseline);
