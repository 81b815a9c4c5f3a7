import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseRedisUrl } from './events/redis-connection.ts';

/**
 * Configuration is parsed once, at start, from the environment into a frozen typed
 * object. A bad or missing value throws a ConfigError naming the variable, which
 * the entry points print as one line before anything listens (docs/operations.md).
 */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

const WHSEC = /^whsec_[A-Za-z0-9+/]+={0,2}$/;

export const downstreamTargetSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'letters, digits, "_", "-" or ".", at most 64'),
    url: z.url({ protocol: /^https?$/ }),
    secrets: z.array(z.string().min(1)).min(1, 'at least one secret'),
    scheme: z.enum(['nabla-connect', 'standard-webhooks']).default('nabla-connect'),
    timeout_ms: z.number().int().min(100).max(120_000).default(10_000),
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.scheme === 'standard-webhooks') {
      t.secrets.forEach((s, i) => {
        if (!WHSEC.test(s)) ctx.addIssue({ code: 'custom', path: ['secrets', i], message: 'standard-webhooks secrets are "whsec_" + base64' });
      });
    }
  });
export type DownstreamTarget = z.infer<typeof downstreamTargetSchema>;

const targetsSchema = z.array(downstreamTargetSchema).superRefine((targets, ctx) => {
  const seen = new Set<string>();
  for (const [i, t] of targets.entries()) {
    if (seen.has(t.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate target name "${t.name}"` });
    seen.add(t.name);
  }
});

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

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
}

type Env = Record<string, string | undefined>;

function required(env: Env, name: string): string {
  const v = env[name]?.trim();
  if (!v) throw new ConfigError(name, 'is required');
  return v;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be a whole number from ${min} to ${max}, got ${n}`);
  return n;
}

function url(name: string, value: string, protocols: string[]): URL {
  let parsed: URL;
  try {
    parsed = new URL(value);
  } catch {
    throw new ConfigError(name, `must be a URL (${protocols.join(' or ')}), got "${value}"`);
  }
  if (!protocols.includes(parsed.protocol)) throw new ConfigError(name, `must use ${protocols.join(' or ')}, got "${parsed.protocol}"`);
  return parsed;
}

function parseTargets(env: Env): DownstreamTarget[] {
  let source = 'DOWNSTREAM_TARGETS';
  let raw = env.DOWNSTREAM_TARGETS?.trim();
  const file = env.DOWNSTREAM_TARGETS_FILE?.trim();
  if (raw && file) throw new ConfigError('DOWNSTREAM_TARGETS_FILE', 'set either DOWNSTREAM_TARGETS or DOWNSTREAM_TARGETS_FILE, not both');
  if (file) {
    source = 'DOWNSTREAM_TARGETS_FILE';
    try {
      raw = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(source, `cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  if (!raw) return [];
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new ConfigError(source, 'must be a JSON array of targets ({name, url, secrets, scheme?, timeout_ms?})');
  }
  const parsed = targetsSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length ? `[${issue.path.join('.')}] ` : '';
    throw new ConfigError(source, `${where}${issue.message}`);
  }
  return parsed.data;
}

export interface LoadConfigOptions {
  /** The CLI needs only MongoDB (and Redis for replays); servers need everything. */
  require?: { redis?: boolean };
}

export function loadConfig(env: Env = process.env, options: LoadConfigOptions = {}): Readonly<Config> {
  const mongoUrl = required(env, 'MONGO_URL');
  url('MONGO_URL', mongoUrl, ['mongodb:', 'mongodb+srv:']);
  const redisUrl = options.require?.redis === false ? (env.REDIS_URL?.trim() ?? '') : required(env, 'REDIS_URL');
  let redisCluster = false;
  if (redisUrl) {
    try {
      redisCluster = parseRedisUrl(redisUrl).kind === 'cluster';
    } catch (err) {
      throw new ConfigError('REDIS_URL', `${(err as Error).message}, got "${redisUrl}"`);
    }
  }

  const port = integer(env, 'PORT', 3000, 0, 65535);
  const host = env.HOST?.trim() || '0.0.0.0';

  const publicBase = env.PUBLIC_BASE_URL?.trim() || `http://localhost:${port}`;
  const publicBaseUrl = url('PUBLIC_BASE_URL', publicBase, ['http:', 'https:']).toString().replace(/\/+$/, '');

  const basePath = (env.BASE_PATH?.trim() || '/v1/connect/server').replace(/\/+$/, '');
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(basePath)) throw new ConfigError('BASE_PATH', `must be a path like /v1/connect/server, got "${env.BASE_PATH}"`);

  const accessTokenTtlSeconds = integer(env, 'ACCESS_TOKEN_TTL_SECONDS', 3600, 60, 86_400);

  const tokenSigningKey = env.TOKEN_SIGNING_KEY?.trim() || undefined;
  if (tokenSigningKey && !tokenSigningKey.includes('-----BEGIN PRIVATE KEY-----')) {
    throw new ConfigError('TOKEN_SIGNING_KEY', 'must be a PKCS#8 PEM private key (RSA, EC P-256 or Ed25519)');
  }

  const logLevel = (env.LOG_LEVEL?.trim() || 'info') as Config['logLevel'];
  if (!LOG_LEVELS.includes(logLevel)) throw new ConfigError('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}, got "${env.LOG_LEVEL}"`);

  const queuePrefix = env.QUEUE_PREFIX?.trim() || 'connect';
  if (!/^[A-Za-z0-9_{}:.-]{1,64}$/.test(queuePrefix)) throw new ConfigError('QUEUE_PREFIX', `must be 1 to 64 of letters, digits, "_{}:.-", got "${env.QUEUE_PREFIX}"`);
  // On Redis Cluster every key of a queue must hash to one slot: BullMQ needs the prefix in a hash tag.
  if (redisCluster && !/\{[^{}]+\}/.test(queuePrefix)) throw new ConfigError('QUEUE_PREFIX', `must contain a hash tag such as {connect} on Redis Cluster, got "${queuePrefix}"`);

  const adminToken = env.ADMIN_TOKEN?.trim() || undefined;
  if (adminToken !== undefined && adminToken.length < 16) throw new ConfigError('ADMIN_TOKEN', 'must be at least 16 characters');

  return Object.freeze({
    mongoUrl,
    redisUrl,
    port,
    host,
    publicBaseUrl,
    basePath,
    issuer: publicBaseUrl + basePath,
    tokenEndpointUrl: `${publicBaseUrl}${basePath}/oauth/token`,
    accessTokenTtlSeconds,
    tokenSigningKey,
    logLevel,
    queuePrefix,
    downstreamTargets: Object.freeze(parseTargets(env)),
    adminToken,
    rateLimitPerClient: integer(env, 'RATE_LIMIT_PER_CLIENT_PER_MINUTE', 6000, 0, 10_000_000),
    rateLimitTokenPerIp: integer(env, 'RATE_LIMIT_TOKEN_PER_IP_PER_MINUTE', 600, 0, 10_000_000),
  });
}
