import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseEnv } from 'node:util';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '@connect/shared';
import { workerHealthPort } from '@connect/worker';
import { imageNodeOptions, REPO_ROOT } from '@connect/local-services';

// Docker cannot run on this project's machines; this keeps the compose file and the
// Dockerfile honest, statically, against the configuration the processes validate at
// start and the files the build produces.
const rawCompose = readFileSync(join(REPO_ROOT, 'docker-compose.yml'), 'utf8');
const envExample: Record<string, string> = <Record<string, string>>parseEnv(readFileSync(join(REPO_ROOT, '.env.example'), 'utf8'));

/** Compose's own interpolation (`${X}`, `${X:-default}`, `${X:?error}`) with the given .env values. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(/\$\{([A-Z_][A-Z0-9_]*)(?::([-?])([^}]*))?\}/g, (_m, name: string, op: string | undefined, arg: string) => {
    const v = env[name];
    if (v) return v;
    if (op === '?') throw new Error(`compose would stop: ${name}: ${arg}`);
    return op === '-' ? arg : '';
  });
}

// Compose files use YAML merge keys (<<: *app-env).
const compose = parse(interpolate(rawCompose, envExample), { merge: true });
const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const services = compose.services as Record<string, any>;
const longRunning = Object.keys(services).filter((n) => !services[n].profiles);

describe('docker-compose.yml', () => {
  it('has MongoDB 8, Redis 7, api, worker and the demo receiver, each with a health check, and a cli service outside `up`', () => {
    expect(longRunning.sort()).toEqual(['api', 'mongo', 'receiver', 'redis', 'worker']);
    expect(services.mongo.image).toBe('mongo:8');
    expect(services.redis.image).toBe('redis:7');
    for (const name of longRunning) expect(services[name].healthcheck?.test, name).toBeDefined();
    expect(services.cli.profiles).toEqual(['tools']);
  });

  it('calls MongoDB healthy only when it is a writable primary, not when rs.initiate() returned', () => {
    const [kind, shell, ...args] = services.mongo.healthcheck.test as string[];
    expect([kind, shell]).toEqual(['CMD', 'mongosh']);
    const script = args[args.indexOf('--eval') + 1]!;
    expect(script).toContain("rs.initiate({_id: 'rs0'");
    // mongosh exits 0 whatever the last expression is worth: the answer must be quit()'s code.
    expect(script).toMatch(/quit\(db\.hello\(\)\.isWritablePrimary \? 0 : 1\)\s*$/);
    expect(services.mongo.command).toEqual(['--replSet', 'rs0', '--bind_ip_all']);
  });

  it('runs Redis with noeviction and AOF, as BullMQ needs', () => {
    const cmd = services.redis.command.join(' ');
    expect(cmd).toMatch(/--maxmemory-policy noeviction/);
    expect(cmd).toMatch(/--appendonly yes/);
  });

  it('gives the api, the worker and the cli an environment their configuration parsing accepts, and runs the build with node', () => {
    for (const name of ['api', 'worker', 'cli']) {
      const env = services[name].environment as Record<string, string>;
      const config = loadConfig(env);
      expect(config.mongoUrl).toMatch(/^mongodb:\/\/mongo:27017\//);
      expect(config.redisUrl).toBe('redis://redis:6379');
      expect(config.downstreamTargets.length).toBeGreaterThan(0);
      expect(services[name].depends_on.mongo.condition).toBe('service_healthy');
      // The cli too: its queue commands (targets pause/resume/resync, deliveries replay/recover) need Redis.
      expect(services[name].depends_on.redis.condition).toBe('service_healthy');
    }
    for (const name of ['api', 'worker']) {
      expect(services[name].command).toEqual(['node', `apps/${name}/dist/main.js`]);
      expect(existsSync(join(REPO_ROOT, 'apps', name, 'src', 'main.ts'))).toBe(true);
    }
    expect(services.receiver.command).toEqual(['node', 'scripts/demo-receiver.js']);
    expect(JSON.stringify(services)).not.toMatch(/tsx/);
    expect(services.api.ports).toContain('3000:3000');
    expect(loadConfig(services.api.environment).port).toBe(3000);
  });

  it("checks the worker's health on its /healthz endpoint (503 without MongoDB or Redis), not on the process being alive", () => {
    const port = workerHealthPort(services.worker.environment);
    expect(port).toBeGreaterThan(0);
    const check = (services.worker.healthcheck.test as string[]).join(' ');
    expect(check).toContain(`http://127.0.0.1:${port}/healthz`);
    expect(check).toMatch(/r\.ok\?0:1/);
    expect(check).not.toContain('process.kill');
  });

  it('reads its secrets from .env (compose stops without them); .env.example holds local-only defaults and .env is never committed', () => {
    for (const name of ['ADMIN_TOKEN', 'DEMO_CALLBACK_SECRET']) {
      expect(rawCompose).toMatch(new RegExp(`\\$\\{${name}:\\?[^}]*\\.env`));
      expect(envExample[name]).toMatch(/local-only/);
    }
    expect(() => interpolate(rawCompose, {})).toThrow(/compose would stop/);
    expect(loadConfig(services.api.environment).adminToken).toBe(envExample.ADMIN_TOKEN);
    const [target] = loadConfig(services.worker.environment).downstreamTargets;
    expect(target!.secrets).toEqual([envExample.DEMO_CALLBACK_SECRET]);
    expect(readFileSync(join(REPO_ROOT, '.gitignore'), 'utf8').split('\n')).toContain('.env');
    expect(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8').split('\n')).toContain('.env');
    const tracked = execFileSync('git', ['ls-files', '.env', '.env.example'], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(tracked).toEqual(['.env.example']);
  });

  it('points the downstream target at the receiver service with the secret it verifies with', () => {
    const [target] = loadConfig(services.worker.environment).downstreamTargets;
    const url = new URL(target!.url);
    expect(url.hostname).toBe('receiver');
    expect(url.port).toBe(services.receiver.environment.PORT);
    expect(target!.secrets).toContain(services.receiver.environment.DEMO_RECEIVER_SECRET);
  });

  it('runs the CLI with `docker compose run`, a public key coming on stdin (--public-key-file -)', () => {
    expect(services.cli.entrypoint).toEqual(['node', 'packages/cli/dist/main.js']);
    expect(rawCompose).toContain('docker compose run --rm -T cli client create --org <ORG_ID> --public-key-file - < ehr-public.pem');
  });
});

describe('Dockerfile', () => {
  it('builds in one stage and runs the compiled output with node as a non-root user with a health check, without tsx, tests or dev dependencies', () => {
    const stages = dockerfile.match(/^FROM .*$/gm)!;
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/RUN pnpm install --frozen-lockfile && pnpm build/);
    expect(dockerfile).toMatch(/RUN \.\/scripts\/stage-image\.sh \/app/);
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM ')).split('\n').filter((l) => !l.startsWith('#')).join('\n');
    expect(runtime).toMatch(/^COPY --from=build \/app \/app$/m);
    expect(runtime).not.toMatch(/^COPY (?!--from=build)/m);
    expect(runtime).toMatch(/^USER node$/m);
    expect(runtime).toMatch(/^HEALTHCHECK /m);
    expect(imageNodeOptions()).toEqual(expect.arrayContaining(['--conditions=built', '--max-old-space-size=1024']));
    expect(runtime).toMatch(/NODE_OPTIONS="--conditions=built --max-old-space-size=1024"/);
    expect(runtime).toMatch(/^CMD \["node", "apps\/api\/dist\/main\.js"\]$/m);
    expect(runtime).not.toMatch(/tsx|pnpm/);
    // What stage-image.sh installs: production dependencies of the three apps only.
    expect(readFileSync(join(REPO_ROOT, 'scripts', 'stage-image.sh'), 'utf8')).toMatch(/pnpm install --prod --frozen-lockfile/);
  });

  it('runs the built API and worker with the same NODE_OPTIONS locally (start:*:built) as in the image, heap cap included', () => {
    const scripts = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const app of ['api', 'worker']) {
      // exec: node is the process pnpm signals, so SIGTERM to pnpm is a graceful shutdown (test/process/root-scripts-sigterm.test.ts).
      expect(scripts[`start:${app}:built`]).toBe(`exec node ${imageNodeOptions().join(' ')} apps/${app}/dist/main.js`);
    }
  });
});
