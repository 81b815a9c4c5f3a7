/**
 * Property-based test of docs/delivery.md's promises to a receiver, on the real API and two real
 * worker processes' worth of workers (in this process), over FerretDB and Redis. fast-check
 * generates, per run, a few users' random lifecycles (changes of settings, no-ops, deactivations,
 * reactivations, at random short intervals, the users at once) and how a sick target answers its
 * callbacks (an outage of consecutive 500s that makes it `failing`, then 200s mixed with 500, 503,
 * 429 with `Retry-After`, answers later than its timeout, a 410 Gone that disables it until an
 * operator resumes it, a 400 that refuses a callback for good: a dead letter, which an operator
 * replays once the queues are idle, as often as it takes), and whether a worker restarts, `targets resync` (plain or `--force`)
 * runs, and the API's link to Redis fails (connections reset, or a black hole, through Toxiproxy)
 * meanwhile: then events the API could not publish reach the targets through the worker's outbox
 * sweep, behind newer ones the API did publish. A second target always answers 200.
 * Once the API has answered every request, and both targets have accepted each user's newest
 * version, it checks what each target received, in arrival order, against the API's own answers:
 *
 * - the first callback about a user is its `user.created`, version 1, and no other `user.created`
 *   (by `request_uuid`) ever comes;
 * - never an older version after a newer one (after a `targets resync --force`, which treats the
 *   target as one that lost its data, from each `user.created` on); one version is always one event (one `request_uuid`)
 *   and its body is the user as the API answered at that version (Redis failing never costs a
 *   request its answer: the API accepts every change without it);
 * - the last callback accepted is the user's newest version (nothing lost, dead letters replayed), and
 *   the receiver never goes from a deactivation it accepted to an active user without the
 *   `user.reactivated` in between (coalescing drops updates, never a change of status; only a
 *   change of status the receiver itself refused is not sent again, and the next callback's
 *   `status` is then what it goes by);
 * - every callback is signed with the target's secret; the queues end empty, no dead letter left.
 *
 * A failure prints fast-check's `seed` and `path`; rerun exactly that case with
 * FC_SEED=<seed> FC_PATH=<path> pnpm exec vitest run test/worker/delivery-properties.test.ts
 */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { ReplayError, replayDelivery, resumeTarget, resyncTarget } from '@connect/shared';
import { getToken, http, postUser, registerTestClient, startTestApi, type TestApi } from '../support/harness.ts';
import { eventually, nablaSignatureVerifies, startReceiver, userOf, type Answer, type ReceivedCallback, type Receiver } from './callback-receiver.ts';
import { startTestWorker, type TestWorker } from './worker-under-test.ts';
import { startToxiproxy, type FaultName, type Proxy, type Toxiproxy } from '../faults/toxiproxy.ts';

/** Each run takes 2 to 8 s here (longest with a black hole, whose events wait for the sweep); FC_RUNS=60 hunts longer. */
const NUM_RUNS = Number(process.env.FC_RUNS ?? 8);
// A run that fails waits up to 3 minutes for its deliveries first; fast-check stops at the first failure.
vi.setConfig({ testTimeout: 200_000 + NUM_RUNS * 15_000 });
const SICK = 'sick';
const STEADY = 'steady';
const SECRETS = { [SICK]: 'sick-secret', [STEADY]: 'steady-secret' } as const;
/** The sick target's timeout; a "late" answer comes after it (the worker has given up by then). */
const SICK_TIMEOUT_MS = 400;
const NEXT = { 'x-nabla-api-version': 'x-nabla-next' };

// ---------------------------------------------------------------- what fast-check generates

/** `together`: sent at once with the op before it, not after its answer (the API orders them). */
type Op = ({ kind: 'settings'; locale: string; specialty: string | null } | { kind: 'same' } | { kind: 'deactivate' } | { kind: 'reactivate' }) & { pauseMs: number; together: boolean };

type Failure = 'error500' | 'unavailable503' | 'retryAfter429' | 'late';

interface Plan {
  users: Op[][];
  /** One of the two workers stops (gracefully, as on SIGTERM) while the users change, and a new one starts. */
  restartWorker: boolean;
  /** `targets resync sick [--force]` of the run's organization, while its users change, after `resyncAfterMs`. */
  resync: 'none' | 'plain' | 'force';
  resyncAfterMs: number;
  /** Consecutive 500s from the sick target, counted by the order its callbacks arrive in this run. */
  outage: { from: number; length: number };
  /** Answers after the outage, cycled; the even places are 200, so no more than one failure in a row comes from here. */
  cycle: (Failure | 'ok')[];
  /** The sick target's callback (by arrival) answered 410 Gone, if any: the target is disabled, then an operator resumes it. */
  gone: number | undefined;
  /** The sick target's callbacks (by arrival) answered 400: refused for good, each a dead letter until replayed. */
  refused: number[];
  /** The API's link to Redis fails `afterMs` into the run, for `forMs` (its rate limiter and its publish after each write). */
  redisFault: { kind: Extract<FaultName, 'resetPeer' | 'blackHole'>; afterMs: number; forMs: number } | undefined;
}

const pauseArb = fc.integer({ min: 0, max: 80 });
const togetherArb = fc.boolean();
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('settings' as const), locale: fc.constantFrom('ENGLISH_US', 'ENGLISH_UK', 'FRENCH_FR', 'SPANISH_ES'), specialty: fc.constantFrom(null, 'CARDIOLOGY', 'UROLOGY'), pauseMs: pauseArb, together: togetherArb }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('same' as const), pauseMs: pauseArb, together: togetherArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('deactivate' as const), pauseMs: pauseArb, together: togetherArb }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('reactivate' as const), pauseMs: pauseArb, together: togetherArb }) },
);
const planArb: fc.Arbitrary<Plan> = fc.record({
  users: fc.array(fc.array(opArb, { minLength: 2, maxLength: 9 }), { minLength: 3, maxLength: 4 }),
  restartWorker: fc.boolean(),
  resync: fc.constantFrom<Plan['resync']>('none', 'none', 'plain', 'force'),
  resyncAfterMs: fc.integer({ min: 0, max: 400 }),
  outage: fc.record({ from: fc.integer({ min: 0, max: 25 }), length: fc.integer({ min: 0, max: 9 }) }),
  cycle: fc
    .array(fc.constantFrom<Failure | 'ok'>('ok', 'ok', 'error500', 'unavailable503', 'retryAfter429', 'late'), { minLength: 6, maxLength: 12 })
    .map((c) => c.map((a, i) => (i % 2 === 0 ? 'ok' : a))),
  gone: fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }),
  refused: fc.oneof({ weight: 2, arbitrary: fc.constant<number[]>([]) }, { weight: 1, arbitrary: fc.uniqueArray(fc.integer({ min: 0, max: 15 }), { minLength: 1, maxLength: 2 }) }),
  // A black hole holds the API's commands until it is lifted; one longer than the API's Redis command
  // timeout (3 s) makes its publishes fail, so those events reach the targets through the sweep.
  redisFault: fc.option(
    fc.oneof(
      fc.record({ kind: fc.constant('resetPeer' as const), afterMs: fc.integer({ min: 0, max: 300 }), forMs: fc.integer({ min: 200, max: 1500 }) }),
      fc.record({ kind: fc.constant('blackHole' as const), afterMs: fc.integer({ min: 0, max: 300 }), forMs: fc.integer({ min: 500, max: 5000 }) }),
    ),
    { nil: undefined, freq: 2 },
  ),
});

function answerOf(plan: Plan, n: number): Answer {
  if (n === plan.gone) {
    void resumeOnceDisabled();
    return { status: 410 };
  }
  if (plan.refused.includes(n)) return { status: 400 };
  if (n >= plan.outage.from && n < plan.outage.from + plan.outage.length) return { status: 500 };
  const a = plan.cycle[n % plan.cycle.length]!;
  switch (a) {
    case 'ok':
      return { status: 200, delayMs: n % 3 === 0 ? 15 : 0 };
    case 'error500':
      return { status: 500 };
    case 'unavailable503':
      return { status: 503 };
    case 'retryAfter429':
      return { status: 429, headers: { 'retry-after': '1' } };
    case 'late':
      return { status: 200, delayMs: SICK_TIMEOUT_MS + 300 };
  }
}

// ---------------------------------------------------------------- the stack

/** `targets resume sick`, as an operator would once the receiver is back: after the worker has disabled the target and paused its queue. */
async function resumeOnceDisabled(): Promise<void> {
  const admin = { health: workers[0]!.deps.health, queues: workers[0]!.deps.deliveries };
  await eventually(async () => (await admin.health.get(SICK)).state === 'disabled' && (await admin.queues.get(SICK)!.isPaused()), 30_000, 50);
  await resumeTarget(admin, SICK);
}

/**
 * Two workers on the same queues, as two processes would be. Retries come quickly and are many
 * (a burst of failures must not make a dead letter: that is another test's subject); a failing
 * target is probed every 0.3 to 1 s.
 */
const WORKER_OPTIONS = { concurrency: 4, policy: { retryScheduleMs: Array.from({ length: 24 }, () => 150), probeIntervalMs: 300, probeMaxIntervalMs: 1000 } };

let api: TestApi;
let workers: TestWorker[] = [];
/** The workers' environment: the API's, with Redis reached directly (only the API's link goes through the proxy). */
let workerEnv: Record<string, string>;
let toxiproxy: Toxiproxy;
let apiRedis: Proxy;
/** The run's organization's token: each run has an organization of its own, which its resync walks. */
let token: string;
let targets: { name: string; url: string; secrets: string[]; timeout_ms: number }[];
let sick: Receiver;
let steady: Receiver;
/** The sick receiver's plan and count for the run under way. */
let current: { plan: Plan; seen: number; runId: string } | undefined;

beforeAll(async () => {
  sick = await startReceiver((req) => {
    // Callbacks of an earlier run (none are expected once it settled) are simply accepted.
    if (!current || !userOf(req)?.startsWith(current.runId)) return { status: 200 };
    return answerOf(current.plan, current.seen++);
  });
  steady = await startReceiver(() => ({ status: 200, delayMs: Math.random() < 0.3 ? 10 : 0 }));
  targets = [
    { name: SICK, url: sick.url, secrets: [SECRETS[SICK]], timeout_ms: SICK_TIMEOUT_MS },
    { name: STEADY, url: steady.url, secrets: [SECRETS[STEADY]], timeout_ms: 5000 },
  ];
  toxiproxy = await startToxiproxy();
  const direct = inject('redisUrl');
  const link = await toxiproxy.link('props-api-redis', direct);
  apiRedis = link.proxy;
  api = await startTestApi({ label: 'delivery_props', env: { DOWNSTREAM_TARGETS: JSON.stringify(targets), REDIS_URL: link.url } });
  workerEnv = { ...api.env, REDIS_URL: direct };
  workers = await Promise.all([startTestWorker(workerEnv, WORKER_OPTIONS), startTestWorker(workerEnv, WORKER_OPTIONS)]);
});

afterAll(async () => {
  await Promise.all(workers.map((w) => w.close()));
  await api?.close();
  await sick?.close();
  await steady?.close();
  await toxiproxy?.stop();
});

// ---------------------------------------------------------------- one run

interface Version {
  status: 'active' | 'deactivated';
  user: Record<string, unknown>;
}

/** Runs one user's lifecycle through the API; returns every version the API answered with. */
async function live(id: string, ops: Op[]): Promise<Map<number, Version>> {
  const email = `${id}@example.com`;
  const versions = new Map<number, Version>();
  const note = (status: number, body: Record<string, unknown>) => {
    expect([200, 201], JSON.stringify(body)).toContain(status);
    versions.set(body.version as number, { status: body.status as Version['status'], user: body });
  };
  let settings: Record<string, unknown> = { speech_locale: 'ENGLISH_US', specialty: null };
  const created = await postUser(api, token, { provider_email: email, external_provider_id: id, settings }, NEXT);
  note(created.status, created.body);
  // Ops marked `together` go out with the one before them, all at once.
  const batches: Op[][] = [];
  for (const op of ops) {
    if (op.together && batches.length > 0) batches.at(-1)!.push(op);
    else batches.push([op]);
  }
  for (const batch of batches) {
    await new Promise((r) => setTimeout(r, batch[0]!.pauseMs));
    const answers = await Promise.all(
      batch.map((op) => {
        if (op.kind === 'deactivate') return http(`${api.baseUrl}/users/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}`, ...NEXT } });
        if (op.kind === 'settings') settings = { speech_locale: op.locale, specialty: op.specialty === null ? null : { kind: op.specialty } };
        // 'same' and 'reactivate' send what the user has: a no-op on an active user, a reactivation on a deactivated one.
        return postUser(api, token, { provider_email: email, external_provider_id: id, settings }, NEXT);
      }),
    );
    for (const res of answers) note(res.status, res.body);
  }
  return versions;
}

/** A target's callbacks about one user as one line: `created v1 → 200, updated v4 → 500, …` (`-`: no answer). */
const trail = (calls: ReceivedCallback[]) => calls.map((c) => `${c.body.type.slice(5)} v${c.body.data.version} → ${c.answered ?? '-'}`).join(', ');

/** The properties of one target's callbacks about one user (arrival order), against the API's answers. */
/**
 * `wiped`: a `targets resync --force` ran, which treats the target as one that lost its data, so
 * from then on it may start again from `user.created` (the same id): the order holds from each
 * `user.created` on. Otherwise from the first callback on.
 */
function checkTarget(target: keyof typeof SECRETS, id: string, calls: ReceivedCallback[], accepted: ReceivedCallback[], versions: Map<number, Version>, wiped: boolean): void {
  const where = `${target}, ${id}: ${trail(calls)}`;
  const newest = Math.max(...versions.keys());
  expect(calls.length, where).toBeGreaterThan(0);
  expect(calls[0]!.body, where).toMatchObject({ type: 'user.created', data: { version: 1 } });
  expect(new Set(calls.filter((c) => c.body.type === 'user.created').map((c) => c.body.request_uuid)).size, where).toBe(1);
  const idOfVersion = new Map<number, string>();
  for (let i = 0; i < calls.length; i++) {
    const { body } = calls[i]!;
    const startsAgain = wiped && body.type === 'user.created';
    if (i > 0 && !startsAgain) expect(body.data.version, `never older after newer: ${where}`).toBeGreaterThanOrEqual(calls[i - 1]!.body.data.version);
    expect(idOfVersion.get(body.data.version) ?? body.request_uuid, where).toBe(body.request_uuid);
    idOfVersion.set(body.data.version, body.request_uuid);
    const answered = versions.get(body.data.version);
    expect(answered, `a version the API never answered with: ${where}`).toBeDefined();
    expect(body.data.user, where).toMatchObject(answered!.user);
    expect(body.data.organization_id, where).toBeDefined();
    expect(nablaSignatureVerifies(calls[i]!, SECRETS[target]), where).toBe(true);
  }
  const last = accepted.at(-1)!;
  expect(last.body.data.version, `the newest version is the last accepted: ${where}`).toBe(newest);
  // What the receiver believes, callback after callback: never active again after a deactivation
  // it accepted unless a reactivation came in between. A change of status it refused (400) is not
  // sent again in front of newer events; the next callback it accepts says the status itself.
  let believesDeactivated = false;
  let refusedChange = false;
  for (const c of calls) {
    const isChange = c.body.type === 'user.deactivated' || c.body.type === 'user.reactivated';
    if (!accepted.includes(c)) {
      if (isChange && c.answered === 400) refusedChange = true;
      continue;
    }
    if (refusedChange) {
      believesDeactivated = c.body.data.user.status === 'deactivated';
      refusedChange = false;
    } else if (c.body.type === 'user.deactivated') believesDeactivated = true;
    else if (c.body.type === 'user.reactivated' || c.body.type === 'user.created') believesDeactivated = false;
    else expect(believesDeactivated, `an update of an active user after a deactivation, no reactivation between: ${where}`).toBe(false);
    expect(c.body.data.user.status, where).toBe(believesDeactivated ? 'deactivated' : 'active');
  }
  expect(believesDeactivated, where).toBe(versions.get(newest)!.status === 'deactivated');
}

describe('random lifecycles, a sick target and a steady one, two workers', () => {
  it('each target gets user.created first and once, never an older version after a newer, the right status, and ends at the newest version', async () => {
    const stats = { runs: 0, users: 0, requests: 0, restarts: 0, resyncs: 0, sickCallbacks: 0, sickFailed: 0, sickGone: 0, redisFaults: 0, unpublished: 0, sweptPasses: 0, sickRefused: 0, replayed: 0 };
    await fc.assert(
      fc.asyncProperty(planArb, async (plan) => {
        const runId = `dp${stats.runs++}-${Date.now().toString(36)}`;
        current = { plan, seen: 0, runId };
        const ids = plan.users.map((_, i) => `${runId}-u${i}`);
        const clinic = await registerTestClient(api.models);
        token = await getToken(api, clinic);
        const resync = async () => {
          if (plan.resync === 'none') return;
          await new Promise((r) => setTimeout(r, plan.resyncAfterMs));
          const w = workers[0]!.deps;
          await resyncTarget({ store: w.store, queues: w.deliveries, targets }, { target: SICK, organizationId: clinic.organization._id, force: plan.resync === 'force' });
          stats.resyncs++;
        };
        const restart = async () => {
          if (!plan.restartWorker) return;
          await new Promise((r) => setTimeout(r, 100));
          await workers[1]!.close();
          workers[1] = await startTestWorker(workerEnv, WORKER_OPTIONS);
          stats.restarts++;
        };
        const redisFault = async () => {
          if (!plan.redisFault) return;
          await new Promise((r) => setTimeout(r, plan.redisFault!.afterMs));
          await apiRedis.inject(plan.redisFault.kind);
          try {
            await new Promise((r) => setTimeout(r, plan.redisFault!.forMs));
          } finally {
            await apiRedis.heal();
          }
          stats.redisFaults++;
        };
        const [lives] = await Promise.all([Promise.all(plan.users.map((ops, i) => live(ids[i]!, ops))), restart(), resync(), redisFault()]);
        stats.users += ids.length;
        stats.requests += plan.users.reduce((a, ops) => a + ops.length + 1, 0);
        // Dead letters (callbacks the sick target refused for good) are replayed, as an operator would,
        // once nothing else moves: every user's newest version accepted, or a dead letter of the user.
        const queuesIdle = async () => {
          for (const name of [SICK, STEADY]) {
            const counts = await workers[0]!.deps.deliveries.get(name)!.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
            expect(counts, name).toMatchObject({ waiting: 0, active: 0, delayed: 0, prioritized: 0 });
          }
        };
        const deadLetters = () => api.models.Delivery.find({ external_provider_id: { $in: ids }, status: 'failed' }).lean();
        for (let replays = 0; plan.refused.length > 0; replays++) {
          await eventually(
            async () => {
              await queuesIdle();
              const failedUsers = new Set((await deadLetters()).map((d) => d.external_provider_id));
              for (const [i, id] of ids.entries()) {
                const newest = Math.max(...lives[i]!.keys());
                const done = (r: Receiver) => r.accepted().some((c) => userOf(c) === id && c.body.data.version === newest);
                expect(done(steady) && (done(sick) || failedUsers.has(id)), `${id}: ${trail(sick.received.filter((c) => userOf(c) === id))}`).toBe(true);
              }
            },
            120_000,
            200,
          );
          const failed = await deadLetters();
          if (failed.length === 0) break;
          expect(replays, 'dead letters replayed again and again').toBeLessThan(10);
          const w = workers[0]!.deps;
          for (const d of failed) {
            // A row the processor marked superseded meanwhile (a newer version went out) is not replayed: fine.
            const replayed = await replayDelivery({ store: w.store, queues: w.deliveries, targets }, d._id).then(
              () => true,
              (err: unknown) => {
                if (!(err instanceof ReplayError)) throw err;
                return false;
              },
            );
            if (replayed) stats.replayed++;
          }
        }
        // Settled: every target accepted every user's newest version, and the queues hold nothing more.
        await eventually(
          () => {
            for (const [i, id] of ids.entries()) {
              const newest = Math.max(...lives[i]!.keys());
              for (const [name, r] of [[SICK, sick], [STEADY, steady]] as const) {
                const accepted = r.accepted().some((c) => userOf(c) === id && c.body.data.version === newest);
                expect(accepted, `${name} ${id} newest v${newest}: ${trail(r.received.filter((c) => userOf(c) === id))}`).toBe(true);
              }
            }
          },
          120_000,
          200,
        );
        await eventually(queuesIdle, 60_000);
        expect(await deadLetters(), 'no dead letter left').toEqual([]);
        for (const [name, r] of [
          [SICK, sick],
          [STEADY, steady],
        ] as const) {
          for (const [i, id] of ids.entries()) {
            const calls = r.received.filter((c) => userOf(c) === id);
            checkTarget(name, id, calls, r.accepted().filter((c) => userOf(c) === id), lives[i]!, name === SICK && plan.resync === 'force');
          }
        }
        const sickCalls = sick.received.filter((c) => userOf(c)?.startsWith(runId));
        stats.sickCallbacks += sickCalls.length;
        stats.sickFailed += sickCalls.filter((c) => c.answered === null || c.answered >= 300).length;
        stats.sickGone += sickCalls.filter((c) => c.answered === 410).length;
        stats.sickRefused += sickCalls.filter((c) => c.answered === 400).length;
      }),
      {
        numRuns: NUM_RUNS,
        // No shrinking: each try is seconds of real deliveries; the failing plan, its seed and path are printed as found.
        endOnFailure: true,
        ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
        ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
      },
    );
    // What the runs covered, so a run that exercised little shows it.
    stats.unpublished = api.logs.lines.filter((l) => l.includes('event not published yet')).length;
    stats.sweptPasses = workers.flatMap((w) => w.logs.lines).filter((l) => l.includes('outbox sweep published events')).length;
    const failing = workers.some((w) => w.logs.lines.some((l) => l.includes(`target ${SICK} is now failing`)));
    console.log(`[delivery-properties] ${JSON.stringify(stats)}; the sick target went failing in some run: ${failing}`);
    expect(stats.sickFailed).toBeGreaterThan(0);
  });
});
