/**
 * The database's limit: the same class of work as POST /users, done by one process
 * with the plain mongodb driver, N concurrent workers, each operation timed:
 * - create: insertOne of the document the API would store;
 * - update: one updateOne conditional on the user's version (filter by organization,
 *   external_provider_id and version; $set the settings, the version + 1 and the event),
 *   the API's write; the driver knows each version (it is the only writer of its
 *   users), so it needs no read first;
 * - no-op: one findOne by (organization, external_provider_id), the API's read that
 *   answers "nothing changed";
 * - read-update (information, no target): the findOne, then the conditional updateOne
 *   with the version it read: what the API does for a user it does not have in its cache
 *   of recent users (every user of the cold set) while it reads first. After a run of such
 *   updates it writes first instead, one findOneAndUpdate (docs/guarantees.md, "One-step
 *   updates"), which the cold-set update rows then measure. On FerretDB each is a round
 *   trip of its own.
 * Same indexes as the API: unique (organization_id, external_provider_id) and
 * (organization_id, email_normalized).
 */
import { randomUUID } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { outboxSlotOf } from '@connect/shared';
import { childMain, isMain } from './bench-child.ts';
import { externalId, LOCALE_A, LOCALE_B, seedUsers, settingsWith, storedUser } from './bench-users.ts';
import { inFlightFor, pacedLoop, pacedStats, statsOf, type RoundStats } from './round-stats.ts';

export interface DriverSpec {
  mongoUrl: string;
  op: 'create' | 'update' | 'noop' | 'read-update';
  concurrency: number;
  durationSec: number;
  rounds: number;
  warmupSec: number;
  userCount: number;
  /** Open loop: start operations at this rate (per second) instead of as fast as possible. */
  rate?: number;
  /** An organization whose `userCount` users (driverPrefix) are already stored; otherwise a new one, seeded here. */
  org?: string;
}

/** The users of a driver organization: `${org}-u-${i}` (driverSet). */
export const driverPrefix = (org: string) => `${org}-u`;

/**
 * The pool size comes with the URL (start-stack.ts MONGO_POOL_SIZE, the API's too):
 * more concurrency queues for a connection, as the API's requests do. An operation
 * without an answer in 10 s fails and its connection closes, which cancels it in
 * FerretDB and frees its PostgreSQL connections, instead of holding up the run (FerretDB
 * 1.24 holds one PostgreSQL connection for an update's read while it waits for a second
 * to write; the API's last requests of the scenario before can still be in flight).
 */

/** One client per database for the life of the process: specs run one after another in one child. */
const clients = new Map<string, Promise<MongoClient>>();
function clientFor(mongoUrl: string): Promise<MongoClient> {
  let c = clients.get(mongoUrl);
  if (!c) {
    c = new MongoClient(mongoUrl, { socketTimeoutMS: 10_000 }).connect().then(async (client) => {
      const users = client.db().collection('provider_users');
      await users.createIndex({ organization_id: 1, external_provider_id: 1 }, { unique: true });
      await users.createIndex({ organization_id: 1, email_normalized: 1 }, { unique: true });
      return client;
    });
    clients.set(mongoUrl, c);
  }
  return c;
}

/**
 * What this process knows of each organization's users, kept across runs: seeded at
 * version 1 with LOCALE_A, changed only by this process. The set is cycled in order,
 * where the last run stopped (as the load generator cycles the API's).
 */
const orgs = new Map<string, { versions: number[]; locales: boolean[]; cursor: number }>();

export async function runDriverBaseline(spec: DriverSpec): Promise<{ rounds: RoundStats[]; warmupRequests: number }> {
  const client = await clientFor(spec.mongoUrl);
  const users = client.db().collection('provider_users');
  const org = spec.org ?? `driver-${randomUUID().slice(0, 8)}`;
  const prefix = driverPrefix(org);
  if (spec.op !== 'create' && !spec.org) await seedUsers(users, org, prefix, 0, spec.userCount);
  let state = orgs.get(org);
  if (!state || state.versions.length !== spec.userCount) {
    state = { versions: new Array<number>(spec.userCount).fill(1), locales: new Array<boolean>(spec.userCount).fill(false), cursor: 0 };
    orgs.set(org, state);
  }
  const { versions, locales } = state;
  let created = 0;

  const operation = async (): Promise<void> => {
    const now = new Date();
    if (spec.op === 'create') {
      await users.insertOne(storedUser(org, `${prefix}-c`, created++, now) as never);
      return;
    }
    const i = state.cursor++ % spec.userCount;
    const filter = { organization_id: org, external_provider_id: externalId(prefix, i) };
    if (spec.op === 'noop') {
      if (!(await users.findOne(filter))) throw new Error(`driver: ${filter.external_provider_id} not found`);
      return;
    }
    const version = spec.op === 'read-update' ? ((await users.findOne(filter, { projection: { version: 1 } }))?.version as number) : versions[i]!;
    locales[i] = !locales[i];
    const res = await users.updateOne(
      { ...filter, version },
      {
        $set: {
          settings: settingsWith(locales[i] ? LOCALE_B : LOCALE_A),
          updated_at: now,
          outbox_slot: outboxSlotOf(now),
          version: version + 1,
          last_event: { id: randomUUID(), type: 'user.updated', occurred_at: now, version: version + 1 },
        },
      },
    );
    if (res.matchedCount !== 1) throw new Error(`driver: ${filter.external_provider_id} not at version ${version}`);
    versions[i] = version + 1;
  };

  const oneRound = async (seconds: number): Promise<RoundStats> => {
    const latencies: number[] = [];
    let errors = 0;
    const started = performance.now();
    const deadline = started + seconds * 1000;
    const timed = async () => {
      const t = performance.now();
      try {
        await operation();
        latencies.push(performance.now() - t);
      } catch {
        errors++;
      }
    };
    if (spec.rate) {
      // The same in-flight allowance as the load generator's offered rates.
      return pacedStats(await pacedLoop(spec.rate, inFlightFor(spec.rate), deadline, timed), latencies, errors);
    } else {
      await Promise.all(
        Array.from({ length: spec.concurrency }, async () => {
          while (performance.now() < deadline) await timed();
        }),
      );
    }
    return statsOf(latencies, (performance.now() - started) / 1000, errors);
  };

  const warmupRequests = spec.warmupSec > 0 ? (await oneRound(spec.warmupSec)).requests : 0;
  const rounds: RoundStats[] = [];
  for (let r = 0; r < spec.rounds; r++) rounds.push(await oneRound(spec.durationSec));
  return { rounds, warmupRequests };
}

if (isMain(import.meta.url)) await childMain(runDriverBaseline);
