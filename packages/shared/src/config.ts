import { createPrivateKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { MongoClient } from 'mongodb';
import { ConnectionString } from 'mongodb-connection-string-url';
import { z } from 'zod';
import { parseDuration, parseDurationList } from './duration.ts';
import { parseRedisUrl } from './events/redis-connection.ts';
import { scrubText } from './logger.ts';
import { ConfigError, MIN_RSA_BITS, TARGET_NAME, TARGET_NAME_RULE, urlWithoutSecrets, withoutCredentials, type ConfigProblem } from './input-rules.ts';

export { ConfigError, TARGET_NAME, TARGET_NAME_RULE, type ConfigProblem };

/**
 * Configuration is parsed once, at start, from the environment into a frozen typed
 * object, by one zod schema per process over `process.env`. Every bad or missing
 * value is reported at once, one line per variable naming it (docs/operations.md), which the
 * entry points print before anything listens: an operator fixes the whole list in
 * one go instead of one restart per mistake.
 *
 * The pieces are exported so each process composes its schema from the shared
 * parts (`sharedEnvShape`) and its own (`apiEnvShape`, the worker's options):
 * `parseEnv(z.object({...sharedEnvShape, ...own}), env)`.
 */

type Env = Record<string, string | undefined>;

/**
 * Parses `env` with `schema` (an object keyed by variable name) and returns the
 * result, or throws one ConfigError listing every variable with a problem (the
 * first problem of each, so one line per variable).
 */
export function parseEnv<T extends z.ZodType>(schema: T, env: Env): z.output<T> {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = new Map<string, string>();
  for (const issue of parsed.error.issues) {
    const variable = String(issue.path[0] ?? 'configuration');
    if (!problems.has(variable)) problems.set(variable, issue.message);
  }
  throw new ConfigError([...problems].map(([variable, problem]) => ({ variable, problem })));
}

/** Unset and blank are the same: "use the default". Values are trimmed. */
const blankToUndefined = (v: unknown) => (typeof v === 'string' ? (v.trim() === '' ? undefined : v.trim()) : v);

/** An optional variable: `inner` checks a value when one is set; `fallback` otherwise. */
export function envOptional<T extends z.ZodType>(inner: T) {
  return z.preprocess(blankToUndefined, inner.optional());
}

/** A variable that must be set (not blank). */
export function envRequired<T extends z.ZodType<unknown, string>>(inner: T) {
  return z.preprocess(blankToUndefined, z.string({ error: (iss) => (iss.input === undefined ? 'is required' : 'must be text') }).pipe(inner));
}

/** A whole number from `min` to `max`; `fallback` when unset. */
export function envInteger(min: number, max: number, fallback: number) {
  const rule = `must be a whole number from ${min} to ${max}`;
  return envOptional(
    z
      .string()
      .regex(/^\d+$/, { error: (iss) => `${rule}, got "${String(iss.input)}"` })
      .transform(Number)
      .refine((n) => n >= min && n <= max, { error: (iss) => `${rule}, got ${String(iss.input)}` }),
  ).transform((v) => v ?? fallback);
}

/** A decimal number above `min` (exclusive) and at most `max`, in `unit`; `fallback` when unset. */
export function envDecimal(min: number, max: number, unit: string, fallback: number) {
  const rule = `must be a number of ${unit} above ${min}, at most ${max}`;
  return envOptional(
    z
      .string()
      .regex(/^\d+(\.\d+)?$/, { error: (iss) => `${rule}, got "${String(iss.input)}"` })
      .transform(Number)
      .refine((n) => n > min && n <= max, { error: (iss) => `${rule}, got ${String(iss.input)}` }),
  ).transform((v) => v ?? fallback);
}

/** A duration with a unit (`500ms`, `30s`, `10m`, `2h`, `5d`; duration.ts), in ms; `undefined` when unset. */
export function envDuration() {
  return envOptional(
    z.string().transform((raw, ctx) => {
      try {
        return parseDuration(raw);
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    }),
  );
}

/** A comma-separated list of at most `maxLength` durations (`5s,1m,5m`), in ms; `undefined` when unset. */
export function envDurationList(maxLength: number) {
  return envOptional(
    z.string().transform((raw, ctx) => {
      try {
        const list = parseDurationList(raw);
        if (list.length <= maxLength) return list;
        ctx.addIssue({ code: 'custom', message: `at most ${maxLength} waits` });
      } catch (err) {
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
      }
      return z.NEVER;
    }),
  );
}

/** A URL with one of `protocols` (e.g. "https:"). */
export function envUrl(protocols: string[]) {
  return z.string().superRefine((value, ctx) => {
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      ctx.addIssue({ code: 'custom', message: `must be a URL (${protocols.join(' or ')}), got "${urlWithoutSecrets(value)}"` });
      return;
    }
    if (!protocols.includes(parsed.protocol)) ctx.addIssue({ code: 'custom', message: `must use ${protocols.join(' or ')}, got "${parsed.protocol}"` });
  });
}

/** One of `values`; `fallback` when unset. */
export function envEnum<const V extends readonly [string, ...string[]]>(values: V, fallback: V[number]) {
  return envOptional(z.string().refine((v): v is V[number] => values.includes(v), { error: (iss) => `must be one of ${values.join(', ')}, got "${String(iss.input)}"` })).transform(
    (v) => (v ?? fallback) as V[number],
  );
}

/**
 * `whsec_` + standard base64 as the Standard Webhooks libraries load it: padded, canonical (what
 * decodes encodes back to the same text). Node's decoder takes `whsec_abc` or an unpadded secret,
 * which the official Go library refuses, so a receiver given the same string could verify nothing.
 */
function isWhsecSecret(secret: string): boolean {
  const encoded = /^whsec_([A-Za-z0-9+/]+={0,2})$/.exec(secret)?.[1];
  return encoded !== undefined && encoded.length % 4 === 0 && Buffer.from(encoded, 'base64').toString('base64') === encoded;
}

export const downstreamTargetSchema = z
  .object({
    name: z.string().regex(TARGET_NAME, TARGET_NAME_RULE),
    // zod's own message is "Invalid URL" for ftp:// as for garbage; the value is not echoed (it may carry a token).
    url: z.url({ protocol: /^https?$/, error: 'must be an http or https URL' }),
    secrets: z.array(z.string().min(1).refine((v) => v.trim() !== '', 'must not be blank (spaces only)')).min(1, 'at least one secret'),
    scheme: z.enum(['nabla-connect', 'standard-webhooks']).default('nabla-connect'),
    timeout_ms: z.number().int().min(100).max(120_000).default(10_000),
  })
  .strict()
  .superRefine((t, ctx) => {
    // fetch would take them off without a word: the receiver would see no Authorization header.
    const url = URL.parse(t.url);
    if (url && (url.username || url.password)) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'must not carry credentials ("user:password@"): they would not be sent; a receiver authenticates callbacks by their signature' });
    }
    if (t.scheme === 'standard-webhooks') {
      t.secrets.forEach((s, i) => {
        if (!isWhsecSecret(s)) ctx.addIssue({ code: 'custom', path: ['secrets', i], message: 'standard-webhooks secrets are "whsec_" + padded standard base64 (e.g. "whsec_" + 24 random bytes in base64)' });
      });
    }
  });
export type DownstreamTarget = z.infer<typeof downstreamTargetSchema>;

/** The shortest secrets a worker starts with without a warning: an HMAC-SHA256 key of fewer bytes is guessable offline from one signed callback; the Standard Webhooks specification asks for 24 to 64 bytes. */
export const WEAK_SECRET_BYTES = { 'nabla-connect': 16, 'standard-webhooks': 24 } as const;

/**
 * The secrets of `targets` shorter than WEAK_SECRET_BYTES, named by target and place, never by
 * value. Taken all the same (receivers already configured with them must keep verifying); the
 * worker warns at start (docs/operations.md, "Changing a target: secrets, URL, name, scheme", Callback secrets).
 */
export function weakSecrets(targets: readonly DownstreamTarget[]): string[] {
  const out: string[] = [];
  for (const t of targets) {
    t.secrets.forEach((secret, i) => {
      const bytes = t.scheme === 'standard-webhooks' ? Buffer.from(secret.slice('whsec_'.length), 'base64').length : Buffer.byteLength(secret);
      const floor = WEAK_SECRET_BYTES[t.scheme];
      if (bytes < floor) out.push(`target "${t.name}": secrets[${i}] is ${bytes} bytes${t.scheme === 'standard-webhooks' ? ' once decoded' : ''}, under ${floor}`);
    });
  }
  return out;
}

const targetsSchema = z.array(downstreamTargetSchema).superRefine((targets, ctx) => {
  const seen = new Set<string>();
  for (const [i, t] of targets.entries()) {
    if (seen.has(t.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate target name "${t.name}"` });
    seen.add(t.name);
  }
});

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** The database used when MONGO_URL names none (the driver's own default would be `test`). */
export const DEFAULT_DATABASE = 'connect';

/**
 * A MongoDB connection string as the driver reads it: a seed list of several hosts
 * (`mongodb://a,b,c/connect?replicaSet=rs0`) and `mongodb+srv://` included, which a
 * WHATWG URL cannot parse. Without a database name it gets DEFAULT_DATABASE.
 */
function mongoUrlSchema() {
  return z.string().transform((value, ctx) => {
    let url: ConnectionString;
    try {
      url = new ConnectionString(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `must be a mongodb:// or mongodb+srv:// connection string (${(err as Error).message})` });
      return z.NEVER;
    }
    // The driver's own reading of the options (without connecting): an option it does not know or a
    // bad value (`?tls=maybe`, `?readPreference=bogus`, port 99999) failed only when a process opened
    // the connection, the CLI with a stack trace.
    try {
      new MongoClient(value);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: `is not a connection string the MongoDB driver accepts: ${withoutCredentials((err as Error).message)}` });
      return z.NEVER;
    }
    if (url.pathname !== '' && url.pathname !== '/') return value; // as written: no re-encoding of what the operator typed
    url.pathname = `/${DEFAULT_DATABASE}`;
    return url.toString();
  });
}

/** The algorithm access tokens are signed with for this key (docs/contract.md), or undefined for a kind that cannot sign them. */
export function accessTokenAlgOf(key: KeyObject): 'RS256' | 'ES256' | 'EdDSA' | undefined {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return 'RS256';
    case 'ec':
      return key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? 'ES256' : undefined;
    case 'ed25519':
      return 'EdDSA';
    default:
      return undefined;
  }
}

/** What is wrong with TOKEN_SIGNING_KEY, if anything: it must be a key accessTokenAlgOf accepts. */
export function signingKeyProblem(pem: string): string | undefined {
  let key;
  try {
    key = createPrivateKey(pem);
  } catch {
    return 'must be a PKCS#8 PEM private key (RSA, EC P-256 or Ed25519); this one could not be read';
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  // Accepted at start, such a key would fail every token request (jose refuses to sign RS256 with it).
  if (key.asymmetricKeyType === 'rsa' && bits < MIN_RSA_BITS) return `must be an RSA key of at least ${MIN_RSA_BITS} bits (RS256), got ${bits}`;
  if (accessTokenAlgOf(key)) return undefined;
  const kind = key.asymmetricKeyType;
  return `must be an RSA, EC P-256 or Ed25519 private key, got ${kind === 'ec' ? `EC ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trim() : kind}`;
}

/** PUBLIC_BASE_URL: the origin (and optional path prefix) clients reach; tokens' issuer is built on it. */
function publicBaseUrlSchema() {
  return envUrl(['http:', 'https:']).superRefine((value, ctx) => {
    const url = URL.canParse(value) ? new URL(value) : undefined;
    if (url && (url.search || url.hash || value.includes('?') || value.includes('#'))) {
      ctx.addIssue({ code: 'custom', message: `must not carry a query or fragment (the issuer is built on it), got "${urlWithoutSecrets(value)}" with one` });
    }
    if (url && (url.username || url.password)) ctx.addIssue({ code: 'custom', message: 'must not carry credentials' });
  });
}

function redisUrlSchema() {
  return z.string().superRefine((value, ctx) => {
    try {
      parseRedisUrl(value);
    } catch (err) {
      // Never the password (in the userinfo or a `?password=` query): the line goes to logs and terminals.
      ctx.addIssue({ code: 'custom', message: `${scrubText((err as Error).message)}, got "${urlWithoutSecrets(value)}"` });
    }
  });
}

/**
 * EMAIL_UNIQUENESS: what keeps a provider's email unique within its organization. `index` (the
 * default): a unique index on provider_users. `claims`: a claim per email in `email_claims`,
 * written before the user, for a cluster sharded on organization + external_provider_id, which
 * cannot keep that unique index (docs/guarantees.md, "Email claims").
 */
export const EMAIL_UNIQUENESS_MODES = ['index', 'claims'] as const;
export type EmailUniqueness = (typeof EMAIL_UNIQUENESS_MODES)[number];

/** Variables every process reads (the API, the worker, the CLI). */
export const sharedEnvShape = {
  MONGO_URL: envRequired(mongoUrlSchema()),
  REDIS_URL: envRequired(redisUrlSchema()),
  LOG_LEVEL: envEnum(LOG_LEVELS, 'info'),
  QUEUE_PREFIX: envOptional(z.string().regex(/^[A-Za-z0-9_{}:.-]{1,64}$/, { error: (iss) => `must be 1 to 64 of letters, digits, "_{}:.-", got "${String(iss.input)}"` })).transform(
    (v) => v ?? 'connect',
  ),
  DOWNSTREAM_TARGETS: envOptional(z.string()),
  DOWNSTREAM_TARGETS_FILE: envOptional(z.string()),
  EMAIL_UNIQUENESS: envEnum(EMAIL_UNIQUENESS_MODES, 'index'),
};

/** EMAIL_UNIQUENESS alone: for scripts that make the indexes before starting the processes that read it. */
export function emailUniquenessFrom(env: Env = process.env): EmailUniqueness {
  return parseEnv(z.object({ EMAIL_UNIQUENESS: sharedEnvShape.EMAIL_UNIQUENESS }), env).EMAIL_UNIQUENESS;
}

/**
 * TRUST_PROXY: whose `X-Forwarded-For` names the client (Fastify's trustProxy).
 * `false` (the default: the peer address is the client), `true` (any peer: only
 * behind a proxy that overwrites the header), a hop count, or addresses and
 * CIDR ranges of the proxies, comma-separated.
 */
function trustProxySchema() {
  const address = /^[0-9A-Fa-f:.]+(\/\d{1,3})?$/;
  return z.string().transform((raw, ctx): boolean | number | string[] => {
    const v = raw.trim();
    if (v === 'true' || v === 'false') return v === 'true';
    if (/^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 10) return Number(v);
    const list = v.split(',').map((a) => a.trim()).filter(Boolean);
    if (list.length > 0 && list.every((a) => address.test(a))) return list;
    ctx.addIssue({ code: 'custom', message: `must be true, false, a hop count 1 to 10, or the proxies' addresses or CIDR ranges, comma-separated (e.g. 10.0.0.0/8,127.0.0.1); got "${raw}"` });
    return z.NEVER;
  });
}

/**
 * How long a request may take, from routing to its answer, before the API gives up on it with a
 * 503 (apps/api/src/service-unavailable.ts says why). Here because the shutdown delay must leave
 * the grace period at least this much.
 */
export const REQUEST_DEADLINE_MS = 10_000;

/**
 * How long SIGTERM waits for the API's stop, from the signal: requests in flight, the relay's
 * last publishes. With the log written out, the whole stop fits Kubernetes' default 30 s.
 */
export const DEFAULT_API_SHUTDOWN_GRACE_MS = 25_000;

/** Variables of the API process. */
export const apiEnvShape = {
  PORT: envInteger(0, 65535, 3000),
  HOST: envOptional(z.string()).transform((v) => v ?? '0.0.0.0'),
  PUBLIC_BASE_URL: envOptional(publicBaseUrlSchema()),
  BASE_PATH: envOptional(z.string().transform((v) => v.replace(/\/+$/, '')).refine((v) => /^(\/[A-Za-z0-9._~-]+)+$/.test(v), { error: (iss) => `must be a path like /v1/connect/server, got "${String(iss.input)}"` })).transform(
    (v) => v ?? '/v1/connect/server',
  ),
  ACCESS_TOKEN_TTL_SECONDS: envInteger(60, 86_400, 3600),
  TOKEN_SIGNING_KEY: envOptional(
    z.string().superRefine((pem, ctx) => {
      const problem = pem.includes('-----BEGIN PRIVATE KEY-----') ? signingKeyProblem(pem) : 'must be a PKCS#8 PEM private key (RSA, EC P-256 or Ed25519)';
      if (problem) ctx.addIssue({ code: 'custom', message: problem });
    }),
  ),
  ADMIN_TOKEN: envOptional(z.string().min(16, 'must be at least 16 characters')),
  RATE_LIMIT_PER_CLIENT_PER_MINUTE: envInteger(0, 10_000_000, 6000),
  RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE: envInteger(0, 10_000_000, 600),
  TRUST_PROXY: envOptional(trustProxySchema()).transform((v) => v ?? false),
  API_SHUTDOWN_GRACE_MS: envInteger(1000, 600_000, DEFAULT_API_SHUTDOWN_GRACE_MS),
  API_SHUTDOWN_DELAY_MS: envInteger(0, 300_000, 0),
};

type Problem = { variable: string; problem: string };

/** The targets, from DOWNSTREAM_TARGETS or the file DOWNSTREAM_TARGETS_FILE names (never both). */
function readTargets(env: { DOWNSTREAM_TARGETS?: unknown; DOWNSTREAM_TARGETS_FILE?: unknown }): { targets: DownstreamTarget[] } | Problem {
  let variable = 'DOWNSTREAM_TARGETS';
  let raw = typeof env.DOWNSTREAM_TARGETS === 'string' ? env.DOWNSTREAM_TARGETS : undefined;
  const file = typeof env.DOWNSTREAM_TARGETS_FILE === 'string' ? env.DOWNSTREAM_TARGETS_FILE : undefined;
  if (raw && file) return { variable: 'DOWNSTREAM_TARGETS_FILE', problem: 'set either DOWNSTREAM_TARGETS or DOWNSTREAM_TARGETS_FILE, not both' };
  if (file) {
    variable = 'DOWNSTREAM_TARGETS_FILE';
    try {
      raw = readFileSync(file, 'utf8');
    } catch (err) {
      return { variable, problem: `cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? 'error'}` };
    }
  }
  if (!raw?.trim()) return { targets: [] };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return { variable, problem: 'must be a JSON array of targets ({name, url, secrets, scheme?, timeout_ms?})' };
  }
  const parsed = targetsSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `[${issue.path.join('.')}] ` : '';
    return { variable, problem: `${where}${issue.message}` };
  }
  return { targets: parsed.data };
}

/**
 * The checks across variables. They run even when a single variable is bad
 * (`when`), so they are listed with the others; hence the defensive types.
 */
function crossChecks(env: Record<string, unknown>, ctx: z.RefinementCtx): void {
  // On Redis Cluster every key of a queue must hash to one slot: BullMQ needs the prefix in a hash tag.
  let cluster = false;
  try {
    cluster = typeof env.REDIS_URL === 'string' && parseRedisUrl(env.REDIS_URL).kind === 'cluster';
  } catch {
    /* reported on REDIS_URL */
  }
  const prefix = typeof env.QUEUE_PREFIX === 'string' ? env.QUEUE_PREFIX : 'connect';
  if (cluster && !/\{[^{}]+\}/.test(prefix)) {
    ctx.addIssue({ code: 'custom', path: ['QUEUE_PREFIX'], message: `must contain a hash tag such as {connect} on Redis Cluster, got "${prefix}"` });
  }
  const targets = readTargets(env);
  if ('problem' in targets) ctx.addIssue({ code: 'custom', path: [targets.variable], message: targets.problem });
  // The delay is spent inside the grace period, which must still leave a request taken in its last
  // moment the time it may take (the request deadline) to finish.
  const grace = typeof env.API_SHUTDOWN_GRACE_MS === 'number' ? env.API_SHUTDOWN_GRACE_MS : DEFAULT_API_SHUTDOWN_GRACE_MS;
  const delay = typeof env.API_SHUTDOWN_DELAY_MS === 'number' ? env.API_SHUTDOWN_DELAY_MS : 0;
  if (delay > 0 && delay > grace - REQUEST_DEADLINE_MS) {
    ctx.addIssue({
      code: 'custom',
      path: ['API_SHUTDOWN_DELAY_MS'],
      message: `must leave API_SHUTDOWN_GRACE_MS (${grace}) at least the ${REQUEST_DEADLINE_MS} ms a request may take: at most ${Math.max(grace - REQUEST_DEADLINE_MS, 0)} here (or raise API_SHUTDOWN_GRACE_MS)`,
    });
  }
}

export interface Config {
  mongoUrl: string;
  redisUrl: string;
  port: number;
  host: string;
  publicBaseUrl: string;
  basePath: string;
  /** PUBLIC_BASE_URL + BASE_PATH: the issuer of access tokens and an accepted assertion audience. */
  issuer: string;
  /** The token endpoint URL: the audience the public sample client puts in its assertions. */
  tokenEndpointUrl: string;
  accessTokenTtlSeconds: number;
  tokenSigningKey: string | undefined;
  logLevel: (typeof LOG_LEVELS)[number];
  queuePrefix: string;
  downstreamTargets: readonly DownstreamTarget[];
  adminToken: string | undefined;
  /** Requests per minute per OAuth client on {base} routes other than the token endpoint (0: off). */
  rateLimitPerClient: number;
  /** Token requests per minute per client IP (0: off). */
  rateLimitTokenPerIp: number;
  /** Fastify's trustProxy: who may say, in X-Forwarded-For, which IP the client has. */
  trustProxy: boolean | number | string[];
  /** EMAIL_UNIQUENESS: a unique index, or email claims (for a cluster sharded on organization + external id). */
  emailUniqueness: EmailUniqueness;
  /** API_SHUTDOWN_GRACE_MS: the bound on the whole stop after SIGTERM. */
  shutdownGraceMs: number;
  /** API_SHUTDOWN_DELAY_MS: how long the API keeps serving, not ready, before it closes its listener. */
  shutdownDelayMs: number;
}

export interface LoadConfigOptions {
  /** The CLI needs only MongoDB (and Redis for replays); servers need everything. */
  require?: { redis?: boolean };
}

/** The schema of the API's (and the worker's) shared configuration: every variable above, in one object. */
export function configSchema(options: LoadConfigOptions = {}) {
  const shape = {
    ...sharedEnvShape,
    ...apiEnvShape,
    ...(options.require?.redis === false ? { REDIS_URL: envOptional(redisUrlSchema()) } : {}),
  };
  return z
    .object(shape)
    .superRefine((env, ctx) => crossChecks(env as Record<string, unknown>, ctx), { when: () => true })
    .transform((env): Config => {
      const found = readTargets(env);
      const downstreamTargets = 'targets' in found ? found.targets : [];
      // Through URL: the same spelling of the origin whatever the operator typed (case, trailing slash).
      const publicBaseUrl = (env.PUBLIC_BASE_URL ? new URL(env.PUBLIC_BASE_URL).toString() : `http://localhost:${env.PORT}`).replace(/\/+$/, '');
      return {
        mongoUrl: env.MONGO_URL,
        redisUrl: env.REDIS_URL ?? '',
        port: env.PORT,
        host: env.HOST,
        publicBaseUrl,
        basePath: env.BASE_PATH,
        issuer: publicBaseUrl + env.BASE_PATH,
        tokenEndpointUrl: `${publicBaseUrl}${env.BASE_PATH}/oauth/token`,
        accessTokenTtlSeconds: env.ACCESS_TOKEN_TTL_SECONDS,
        tokenSigningKey: env.TOKEN_SIGNING_KEY,
        logLevel: env.LOG_LEVEL,
        queuePrefix: env.QUEUE_PREFIX,
        downstreamTargets: Object.freeze(downstreamTargets),
        adminToken: env.ADMIN_TOKEN,
        rateLimitPerClient: env.RATE_LIMIT_PER_CLIENT_PER_MINUTE,
        rateLimitTokenPerIp: env.RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE,
        trustProxy: env.TRUST_PROXY,
        emailUniqueness: env.EMAIL_UNIQUENESS,
        shutdownGraceMs: env.API_SHUTDOWN_GRACE_MS,
        shutdownDelayMs: env.API_SHUTDOWN_DELAY_MS,
      };
    });
}

export function loadConfig(env: Env = process.env, options: LoadConfigOptions = {}): Readonly<Config> {
  return Object.freeze(parseEnv(configSchema(options), env));
}
