/**
 * Resync of one new target (issue 15): `targets resync NAME` (packages/cli, the code in
 * packages/shared/src/deliveries/resync-target.ts, docs/operations.md) walks a seeded set
 * of users and enqueues a delivery job for each; the worker delivers them to a receiver.
 * The figure is users brought up to date per second, from the CLI's start to the last
 * user's callback received.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Db } from 'mongodb';
import { outboxSlotOf, SWEEP_CURSOR_ID } from '@connect/shared';
import { REPO_ROOT } from './bench-child.ts';
import { externalId, seedUsers } from './bench-users.ts';
import { waitForArrivals, type Receiver } from './end-to-end.ts';
import type { RoundStats } from './round-stats.ts';

/**
 * Seeds `users` users (version 1) as users the service has had for a day: created and
 * updated a day ago, with the outbox sweep's cursor (outbox-relay.ts) already past them,
 * as it is once their events went out to the targets of the time. A worker started on
 * this database then sees nothing to publish: only a resync brings a new target up to
 * date with them. The cursor is written first, so a worker starting meanwhile never
 * publishes a user as a live event.
 */
export async function seedResyncSet(db: Db, organizationId: string, prefix: string, users: number): Promise<void> {
  const at = new Date(Date.now() - 24 * 3600_000);
  await db
    .collection<{ _id: string }>('relay_cursors')
    .updateOne({ _id: SWEEP_CURSOR_ID }, { $set: { slot_done: outboxSlotOf(at) } }, { upsert: true });
  await seedUsers(db.collection('provider_users'), organizationId, prefix, 0, users, at);
}

export interface ResyncRunSpec {
  /** The environment of the CLI: the worker's MONGO_URL, REDIS_URL, QUEUE_PREFIX and DOWNSTREAM_TARGETS. */
  env: Record<string, string>;
  target: string;
  /** The seeded set: `externalId(prefix, i)` for i below `users`. */
  prefix: string;
  users: number;
  receiver: Receiver;
  timeoutMs: number;
}

export interface ResyncRun {
  round: RoundStats;
  /** Seconds from the CLI's start to the first callback, to its exit, to the last callback. */
  firstCallbackSec: number;
  cliExitSec: number;
  lastCallbackSec: number;
  /** The CLI's final JSON document ({target, users_scanned, enqueued, skipped}). */
  cli: unknown;
}

/** One timed resync: the CLI as an operator runs it (`pnpm cli targets resync NAME`), then every user's callback. */
export async function runResync(spec: ResyncRunSpec): Promise<ResyncRun> {
  const started = performance.timeOrigin + performance.now();
  const child = spawn(process.execPath, [join(REPO_ROOT, 'packages', 'cli', 'bin', 'cli.js'), 'targets', 'resync', spec.target], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...spec.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  const exited = performance.timeOrigin + performance.now();
  if (code !== 0) throw new Error(`targets resync ${spec.target} exited ${code}: ${out.slice(-1000)} ${err.slice(-2000)}`);
  const cli = JSON.parse(out) as unknown;
  const ids = Array.from({ length: spec.users }, (_, i) => externalId(spec.prefix, i));
  const { arrived, first, last } = await waitForArrivals(spec.receiver, ids, spec.timeoutMs);
  const sec = (t: number) => (t - started) / 1000;
  return {
    round: { rps: arrived / sec(last), p50: NaN, p99: NaN, p999: NaN, non2xx: 0, requests: arrived, errors: spec.users - arrived },
    firstCallbackSec: sec(first),
    cliExitSec: sec(exited),
    lastCallbackSec: sec(last),
    cli,
  };
}
