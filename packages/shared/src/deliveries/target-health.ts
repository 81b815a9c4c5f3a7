import { randomUUID } from 'node:crypto';
import type { Collection } from 'mongodb';
import { isDuplicateKeyError, type TargetStateDoc } from '../models/models.ts';
import type { RedisClient } from '../events/redis-connection.ts';
import { formatDuration } from '../duration.ts';
import { LuaScript } from '../events/lua-script.ts';
import type { DeliveryPolicy } from './delivery-policy.ts';

/**
 * The health of each target, shared by every worker process: one Redis hash
 * per target, changed only by the Lua scripts below so that two processes
 * recording outcomes at once cannot lose a count or a state change (Redis runs
 * a script atomically). The states (docs/delivery.md):
 *
 * - `healthy`: deliveries go out; retryable failures are counted.
 * - `failing`: `failureThreshold` consecutive retryable failures. Deliveries are
 *   held (not attempted, their retry schedule not spent); one probe at a time,
 *   every `probeIntervalMs` doubling to `probeMaxIntervalMs`; the first 2xx
 *   makes the target healthy again.
 * - `paused`: an operator's hold. `disabled`: `410 Gone`, or failing for longer
 *   than `disableAfterMs`. In both, nothing is attempted until `resume`.
 *
 * A `Retry-After` on a 429/503 sets `hold_until`: no delivery to that target
 * starts before it, whatever the state.
 *
 * The held states (`paused`, `disabled`) are also kept in MongoDB (`HeldStates`),
 * written before Redis (and removed before a resume) so that a Redis that lost
 * its data gets them back: a target whose hash has no state is seeded from
 * there the first time a delivery asks to go (`admit`), or the Redis loss
 * recovery restores it, whichever comes first. The rest (counts, probes,
 * Retry-After holds) is not kept: a target that was failing starts healthy and
 * fails again within the threshold.
 */
export const TARGET_STATES = ['healthy', 'failing', 'paused', 'disabled'] as const;
export type TargetState = (typeof TARGET_STATES)[number];

export interface TargetHealthView {
  name: string;
  state: TargetState;
  consecutive_failures: number;
  failing_since: string | null;
  last_success_at: string | null;
  /** Why the target is disabled or paused, when it is. */
  reason: string | null;
  hold_until: string | null;
}

/**
 * What a delivery may do now: go, go as the one probe, or wait (ms) and stay held.
 * `restored`: this call put a held state from MongoDB back into a Redis that had
 * lost it, so the caller pauses the target's queue again.
 */
export type Admission = { kind: 'send' } | { kind: 'probe'; token: string } | { kind: 'hold'; ms: number; state: TargetState | 'retry-after'; restored?: boolean };

export type HeldState = 'paused' | 'disabled';

/** The held states in MongoDB, one row per held target (`target_states`). */
export class HeldStates {
  constructor(
    private readonly rows: Collection<TargetStateDoc>,
    private readonly now: () => number = Date.now,
  ) {}

  async get(target: string): Promise<{ state: HeldState; reason: string } | null> {
    const row = await this.rows.findOne({ _id: target });
    return row ? { state: row.state, reason: row.reason } : null;
  }

  /**
   * Two upserts of one target's row at once (two deliveries answered 410 together, a resume beside
   * them) can both insert: the loser gets a duplicate key, once the row is there. It is then an
   * update, which the same write, again, makes (it failed its job as an internal error before).
   */
  async set(target: string, state: HeldState, reason: string): Promise<void> {
    const write = () => this.rows.replaceOne({ _id: target }, { state, reason, changed_at: new Date(this.now()) }, { upsert: true });
    try {
      await write();
    } catch (err) {
      if (!isDuplicateKeyError(err)) throw err;
      await write();
    }
  }

  /** Only where no row is (a deployment from before this mirror: its Redis state is copied once). */
  async setIfAbsent(target: string, state: HeldState, reason: string): Promise<void> {
    await this.rows.updateOne({ _id: target }, { $setOnInsert: { state, reason, changed_at: new Date(this.now()) } }, { upsert: true }).catch((err: unknown) => {
      // Another process inserted it first: there is a row, which is all this asks.
      if (!isDuplicateKeyError(err)) throw err;
    });
  }

  async clear(target: string): Promise<void> {
    await this.rows.deleteOne({ _id: target });
  }
}

export interface Transition {
  from: TargetState;
  to: TargetState;
}

const ADMIT = new LuaScript(`
local h = redis.call('HMGET', KEYS[1], 'state', 'hold_until', 'next_probe_at')
if not h[1] and ARGV[4] == '1' then return {'unseeded', 0} end
local state = h[1] or 'healthy'
local now = tonumber(ARGV[1])
if state == 'paused' or state == 'disabled' then return {state, 1000} end
local hold = tonumber(h[2] or '0') or 0
if hold > now then return {'retry-after', hold - now} end
if state == 'failing' then
  local nextp = tonumber(h[3] or '0') or 0
  if now < nextp then return {'failing', nextp - now} end
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[2]) then return {'probe', 0} end
  -- A probe is in flight: look again within a second, not when its lock would expire (a
  -- worker sleeps out the whole hold, so a long one would outlive the probe's answer).
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl < 200 then ttl = 200 end
  if ttl > 1000 then ttl = 1000 end
  return {'failing', ttl}
end
return {'send', 0}
`);

const RELEASE_PROBE = new LuaScript(`
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
`);

const SUCCESS = new LuaScript(`
local now = ARGV[1]
local prev = redis.call('HGET', KEYS[1], 'state') or 'healthy'
local new = prev
redis.call('HSET', KEYS[1], 'last_success_at', now, 'consecutive_failures', 0)
if prev == 'failing' then
  new = 'healthy'
  redis.call('HSET', KEYS[1], 'state', 'healthy', 'changed_at', now)
  redis.call('HDEL', KEYS[1], 'failing_since', 'next_probe_at', 'probe_interval_ms', 'reason')
elseif redis.call('HEXISTS', KEYS[1], 'state') == 0 then
  redis.call('HSET', KEYS[1], 'state', 'healthy', 'changed_at', now)
end
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return {prev, new}
`);

const FAILURE = new LuaScript(`
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local disableAfter = tonumber(ARGV[5])
local probe = ARGV[6]
local prev = redis.call('HGET', KEYS[1], 'state') or 'healthy'
local new = prev
local cf = redis.call('HINCRBY', KEYS[1], 'consecutive_failures', 1)
if prev == 'healthy' and cf >= threshold then
  new = 'failing'
  redis.call('HSET', KEYS[1], 'state', 'failing', 'failing_since', now, 'probe_interval_ms', base, 'next_probe_at', now + base, 'changed_at', now, 'reason', ARGV[7])
elseif prev == 'failing' and probe ~= '' then
  local since = tonumber(redis.call('HGET', KEYS[1], 'failing_since') or now) or now
  if now - since >= disableAfter then
    new = 'disabled'
    redis.call('HSET', KEYS[1], 'state', 'disabled', 'changed_at', now, 'reason', ARGV[8])
    redis.call('HDEL', KEYS[1], 'next_probe_at', 'probe_interval_ms')
  else
    local iv = tonumber(redis.call('HGET', KEYS[1], 'probe_interval_ms') or base) or base
    iv = math.min(iv * 2, max)
    redis.call('HSET', KEYS[1], 'probe_interval_ms', iv, 'next_probe_at', now + iv, 'reason', ARGV[7])
  end
end
if probe ~= '' and redis.call('GET', KEYS[2]) == probe then redis.call('DEL', KEYS[2]) end
return {prev, new}
`);

/** ARGV: now, new state, reason. From any state to paused/disabled/healthy (operator or 410). */
const SET_STATE = new LuaScript(`
local prev = redis.call('HGET', KEYS[1], 'state') or 'healthy'
local now = ARGV[1]
if ARGV[2] == 'healthy' then
  redis.call('HSET', KEYS[1], 'state', 'healthy', 'consecutive_failures', 0, 'changed_at', now)
  redis.call('HDEL', KEYS[1], 'failing_since', 'next_probe_at', 'probe_interval_ms', 'hold_until', 'reason')
  redis.call('DEL', KEYS[2])
else
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'changed_at', now, 'reason', ARGV[3])
end
return {prev, ARGV[2]}
`);

/** ARGV: state, now, reason. Sets the state only where there is none (a Redis that lost its data); returns the state now. */
const SEED = new LuaScript(`
local prev = redis.call('HGET', KEYS[1], 'state')
if prev then return {prev, 0} end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'changed_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'reason', ARGV[3]) end
return {ARGV[1], 1}
`);

const HOLD = new LuaScript(`
local cur = tonumber(redis.call('HGET', KEYS[1], 'hold_until') or '0') or 0
if tonumber(ARGV[1]) > cur then redis.call('HSET', KEYS[1], 'hold_until', ARGV[1]) end
return 1
`);

export class TargetHealth {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly now: () => number = Date.now,
    /** Where the held states are kept beside Redis; without it (unit tests) Redis alone. */
    private readonly held?: HeldStates,
  ) {}

  private keys(target: string): [string, string] {
    return [`${this.prefix}:target-health:${target}`, `${this.prefix}:target-probe:${target}`];
  }

  /** Deletes what Redis holds of a target (`targets forget`); the held state kept in MongoDB is the caller's. */
  async forget(target: string): Promise<void> {
    await this.redis.del(...this.keys(target));
  }

  private async run(script: LuaScript, target: string, ...args: (string | number)[]): Promise<unknown> {
    return script.run(this.redis, this.keys(target), args);
  }

  /**
   * Whether a delivery may go out now. While failing, the first caller after
   * the probe time takes the probe lock (held `probeLockMs`, longer than the
   * request can take) and sends; everyone else is told how long to wait.
   */
  async admit(target: string, probeLockMs: number): Promise<Admission> {
    const token = randomUUID();
    // `unseeded` only while MongoDB may have a held state to give back (once per fresh Redis).
    const ask = async (askForSeed: boolean) => (await this.run(ADMIT, target, this.now(), probeLockMs, token, askForSeed ? '1' : '0')) as [string, number];
    let [kind, ms] = await ask(this.held !== undefined);
    let restored = false;
    if (kind === 'unseeded') {
      restored = (await this.restore(target)).restored;
      [kind, ms] = await ask(false);
    }
    if (kind === 'send') return { kind: 'send' };
    if (kind === 'probe') return { kind: 'probe', token };
    return { kind: 'hold', ms: Number(ms), state: kind as TargetState | 'retry-after', ...(restored ? { restored } : {}) };
  }

  /**
   * A target whose hash has no state (a fresh Redis, or one that lost its data) gets the
   * held state kept in MongoDB, or `healthy`. `restored` is true when this call put a
   * held state back: the caller pauses the target's queue, whose pause was lost too.
   * A state already there is left alone (a pause or resume that came first wins).
   */
  async restore(target: string): Promise<{ state: TargetState; restored: boolean }> {
    const kept = (await this.held?.get(target)) ?? null;
    const [state, set] = (await this.run(SEED, target, kept?.state ?? 'healthy', this.now(), kept?.reason ?? '')) as [TargetState, number];
    return { state, restored: set === 1 && kept !== null };
  }

  /**
   * A held state in Redis with no row in MongoDB (set before the rows existed) gets its
   * row, so a later loss of Redis keeps it. Run once per target when a worker starts.
   */
  async keepHeldState(target: string): Promise<void> {
    if (!this.held) return;
    const [state, reason] = await this.redis.hmget(this.keys(target)[0], 'state', 'reason');
    if (state === 'paused' || state === 'disabled') await this.held.setIfAbsent(target, state, reason ?? '');
  }

  async recordSuccess(target: string, probeToken?: string): Promise<Transition> {
    return transition(await this.run(SUCCESS, target, this.now(), probeToken ?? ''));
  }

  async recordFailure(target: string, policy: DeliveryPolicy, reason: string, probeToken?: string): Promise<Transition> {
    const disabledReason = `failing for longer than ${formatDuration(policy.disableAfterMs)}`;
    const t = transition(
      await this.run(
        FAILURE,
        target,
        this.now(),
        policy.failureThreshold,
        policy.probeIntervalMs,
        policy.probeMaxIntervalMs,
        policy.disableAfterMs,
        probeToken ?? '',
        reason,
        disabledReason,
      ),
    );
    // Kept after the fact (the script decides): should this write fail, the delivery is
    // retried as our own error and finds the target disabled in Redis all the same.
    if (t.to === 'disabled' && t.from !== 'disabled') await this.held?.set(target, 'disabled', disabledReason);
    return t;
  }

  /**
   * How long a delivery that was just held should stay away: until the next
   * probe or the end of a Retry-After, at least 200 ms (read-only: unlike
   * `admit`, never takes the probe lock).
   */
  async holdMs(target: string): Promise<number> {
    const [state, nextProbe, holdUntil] = await this.redis.hmget(this.keys(target)[0], 'state', 'next_probe_at', 'hold_until');
    if (state === 'paused' || state === 'disabled') return 1000;
    const until = Math.max(Number(nextProbe ?? 0), Number(holdUntil ?? 0));
    return Math.max(until - this.now(), 200);
  }

  /** Gives the probe lock back without an outcome (the probe could not run: our own error). */
  async releaseProbe(target: string, probeToken: string): Promise<void> {
    await this.run(RELEASE_PROBE, target, probeToken);
  }

  /** MongoDB first: a held state is kept before it takes effect, and forgotten before a resume does. */
  async setState(target: string, state: 'healthy' | HeldState, reason = ''): Promise<Transition> {
    if (state === 'healthy') await this.held?.clear(target);
    else await this.held?.set(target, state, reason);
    return transition(await this.run(SET_STATE, target, this.now(), state, reason));
  }

  /** No delivery to this target starts before `untilMs` (Retry-After on 429/503). */
  async holdUntil(target: string, untilMs: number): Promise<void> {
    await this.run(HOLD, target, Math.round(untilMs));
  }

  /** Read-only. A target with no state in Redis (not yet restored after a loss) shows the held state kept in MongoDB. */
  async get(target: string): Promise<TargetHealthView> {
    const h = await this.redis.hgetall(this.keys(target)[0]);
    const kept = h.state ? null : await this.held?.get(target);
    const iso = (v: string | undefined) => (v ? new Date(Number(v)).toISOString() : null);
    const holdUntil = Number(h.hold_until ?? 0);
    return {
      name: target,
      state: kept ? kept.state : (TARGET_STATES as readonly string[]).includes(h.state ?? '') ? (h.state as TargetState) : 'healthy',
      consecutive_failures: Number(h.consecutive_failures ?? 0),
      failing_since: iso(h.failing_since),
      last_success_at: iso(h.last_success_at),
      reason: kept ? kept.reason : h.reason || null,
      hold_until: holdUntil > this.now() ? new Date(holdUntil).toISOString() : null,
    };
  }
}

function transition(raw: unknown): Transition {
  const [from, to] = raw as [TargetState, TargetState];
  return { from, to };
}
