import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '@connect/shared';
import { REPO_ROOT } from '@connect/local-services';

// Docker cannot run on this project's machines; this keeps the compose file honest
// against the configuration schema the processes validate at start.
// Compose files use YAML merge keys (<<: *app-env).
const compose = parse(readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true });
const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const services = compose.services as Record<string, any>;

describe('docker-compose.yml', () => {
  it('has MongoDB 8, Redis 7, api, worker and the demo receiver, each with a health check', () => {
    expect(Object.keys(services).sort()).toEqual(['api', 'mongo', 'receiver', 'redis', 'worker']);
    expect(services.mongo.image).toBe('mongo:8');
    expect(services.redis.image).toBe('redis:7');
    for (const [name, svc] of Object.entries(services)) expect(svc.healthcheck?.test, name).toBeDefined();
  });

  it('runs Redis with noeviction and AOF, as BullMQ needs', () => {
    const cmd = services.redis.command.join(' ');
    expect(cmd).toMatch(/--maxmemory-policy noeviction/);
    expect(cmd).toMatch(/--appendonly yes/);
  });

  it("gives the api and the worker an environment their configuration parsing accepts", () => {
    for (const name of ['api', 'worker']) {
      const env = services[name].environment as Record<string, string>;
      const config = loadConfig(env);
      expect(config.mongoUrl).toMatch(/^mongodb:\/\/mongo:27017\//);
      expect(config.redisUrl).toBe('redis://redis:6379');
      expect(config.downstreamTargets.length).toBeGreaterThan(0);
      expect(services[name].depends_on.mongo.condition).toBe('service_healthy');
      expect(services[name].depends_on.redis.condition).toBe('service_healthy');
      expect(services[name].command.join(' ')).toContain(`apps/${name}/src/main.ts`);
    }
    expect(services.api.ports).toContain('3000:3000');
    expect(loadConfig(services.api.environment).port).toBe(3000);
  });

  it('points the downstream target at the receiver service with the secret it verifies with', () => {
    const [target] = loadConfig(services.worker.environment).downstreamTargets;
    const url = new URL(target!.url);
    expect(url.hostname).toBe('receiver');
    expect(url.port).toBe(services.receiver.environment.PORT);
    expect(target!.secrets).toContain(services.receiver.environment.DEMO_RECEIVER_SECRET);
  });

  it('builds a multi-stage image that runs as a non-root user with a health check', () => {
    expect(dockerfile.match(/^FROM /gm)!.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(dockerfile).toContain('pnpm install --frozen-lockfile');
  });
});
