import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.ts';

const base = { MONGO_URL: 'mongodb://127.0.0.1:27017/cp', REDIS_URL: 'redis://127.0.0.1:6379' };

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration from the environment (docs/operations.md)', () => {
  it('applies the documented defaults and derives the issuer and token URL', () => {
    const c = loadConfig(base);
    expect(c).toMatchObject({
      port: 3000,
      host: '0.0.0.0',
      basePath: '/v1/connect/server',
      publicBaseUrl: 'http://localhost:3000',
      issuer: 'http://localhost:3000/v1/connect/server',
      tokenEndpointUrl: 'http://localhost:3000/v1/connect/server/oauth/token',
      accessTokenTtlSeconds: 3600,
      logLevel: 'info',
      downstreamTargets: [],
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('parses DOWNSTREAM_TARGETS with defaults for scheme and timeout', () => {
    const c = loadConfig({ ...base, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'dictation', url: 'https://d.example.com/cb', secrets: ['s1', 's2'] }]) });
    expect(c.downstreamTargets).toEqual([{ name: 'dictation', url: 'https://d.example.com/cb', secrets: ['s1', 's2'], scheme: 'nabla-connect', timeout_ms: 10_000 }]);
  });

  it.each([
    [{ MONGO_URL: '' }, 'MONGO_URL'],
    [{ MONGO_URL: 'postgres://x' }, 'MONGO_URL'],
    [{ REDIS_URL: '' }, 'REDIS_URL'],
    [{ PORT: 'eighty' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ PUBLIC_BASE_URL: 'not a url' }, 'PUBLIC_BASE_URL'],
    [{ BASE_PATH: 'no-slash' }, 'BASE_PATH'],
    [{ ACCESS_TOKEN_TTL_SECONDS: '5' }, 'ACCESS_TOKEN_TTL_SECONDS'],
    [{ TOKEN_SIGNING_KEY: 'secret' }, 'TOKEN_SIGNING_KEY'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ QUEUE_PREFIX: 'has space' }, 'QUEUE_PREFIX'],
    [{ DOWNSTREAM_TARGETS: '{not json' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"ftp://x","secrets":["s"]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":[]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":["plain"],"scheme":"standard-webhooks"}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS: '[{"name":"a","url":"https://x","secrets":["s"]},{"name":"a","url":"https://y","secrets":["s"]}]' }, 'DOWNSTREAM_TARGETS'],
    [{ DOWNSTREAM_TARGETS_FILE: '/nonexistent/targets.json' }, 'DOWNSTREAM_TARGETS_FILE'],
    [{ ADMIN_TOKEN: 'short' }, 'ADMIN_TOKEN'],
  ])('%j names %s', (overrides, variable) => {
    const err = errorOf({ ...base, ...overrides } as Record<string, string>);
    expect(err.variable).toBe(variable);
    expect(err.message.startsWith(`${variable}: `)).toBe(true);
    expect(err.message).not.toContain('\n');
  });
});
