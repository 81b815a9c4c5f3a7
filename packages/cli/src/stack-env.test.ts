/**
 * Where the CLI looks for the settings `pnpm stack` writes, and what it takes from them.
 * The CLI's process tests point STACK_DIR at a folder of their own (a developer's running
 * stack keeps the default one); these show the default itself and the precedence rules.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { applyStackEnv, stackEnvPath } from './stack-env.ts';

/** The repository root, found as a newcomer would: the folder holding pnpm-workspace.yaml. */
function repositoryRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('no pnpm-workspace.yaml above this test');
    dir = up;
  }
  return dir;
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function stackDirWith(content: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'stack-env-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'env'), content);
  return dir;
}

describe('the local stack settings file', () => {
  it('is .local/stack/env in the repository without STACK_DIR, whatever the working directory', () => {
    expect(stackEnvPath({})).toBe(join(repositoryRoot(), '.local', 'stack', 'env'));
    const elsewhere = process.cwd();
    try {
      process.chdir(tmpdir());
      expect(stackEnvPath({})).toBe(join(repositoryRoot(), '.local', 'stack', 'env'));
    } finally {
      process.chdir(elsewhere);
    }
  });

  it('is $STACK_DIR/env when STACK_DIR is set', () => {
    expect(stackEnvPath({ STACK_DIR: '/srv/connect-stack' })).toBe('/srv/connect-stack/env');
  });

  it('fills only what the environment leaves unset, and says which variables it took', () => {
    const dir = stackDirWith('MONGO_URL=mongodb://127.0.0.1:27018/stack\nREDIS_URL=redis://127.0.0.1:6380/0\nQUEUE_PREFIX=connect-stack\n');
    const env: Record<string, string | undefined> = { STACK_DIR: dir, REDIS_URL: 'redis://127.0.0.1:6379/3', QUEUE_PREFIX: '  ' };
    const taken = applyStackEnv(env);
    expect(taken).toEqual({ file: join(dir, 'env'), used: ['MONGO_URL', 'QUEUE_PREFIX'], replaced: [] });
    expect(env).toMatchObject({ MONGO_URL: 'mongodb://127.0.0.1:27018/stack', REDIS_URL: 'redis://127.0.0.1:6379/3', QUEUE_PREFIX: 'connect-stack' });
  });

  it("gives the running stack's targets, whatever DOWNSTREAM_TARGETS or DOWNSTREAM_TARGETS_FILE the shell still exports for the stack (they were a part of that list: two lists were a configuration error, one a partial list)", () => {
    const stackTargets = JSON.stringify([
      { name: 'demo-receiver', url: 'http://127.0.0.1:40001/callbacks', secrets: ['s1'] },
      { name: 'mine', url: 'http://127.0.0.1:40002/', secrets: ['s2'] },
    ]);
    const dir = stackDirWith(`MONGO_URL=mongodb://127.0.0.1:27018/stack\nDOWNSTREAM_TARGETS='${stackTargets}'\nWORKER_RETRY_SCHEDULE=1s,2s\n`);
    const fromFile: Record<string, string | undefined> = { STACK_DIR: dir, DOWNSTREAM_TARGETS_FILE: '/tmp/mine.json' };
    const taken = applyStackEnv(fromFile);
    expect(taken?.replaced).toEqual(['DOWNSTREAM_TARGETS_FILE']);
    expect([...(taken?.used ?? [])].sort()).toEqual(['DOWNSTREAM_TARGETS', 'MONGO_URL', 'WORKER_RETRY_SCHEDULE']);
    expect(fromFile.DOWNSTREAM_TARGETS_FILE).toBeUndefined();
    expect(JSON.parse(fromFile.DOWNSTREAM_TARGETS!)).toHaveLength(2);

    const inline: Record<string, string | undefined> = { STACK_DIR: dir, DOWNSTREAM_TARGETS: JSON.stringify([{ name: 'mine', url: 'http://127.0.0.1:40002/', secrets: ['s2'] }]) };
    expect(applyStackEnv(inline)?.replaced).toEqual(['DOWNSTREAM_TARGETS']);
    expect(inline.DOWNSTREAM_TARGETS).toBe(stackTargets);
  });

  it('is not read at all when MONGO_URL is set, nor when the stack never wrote it', () => {
    const dir = stackDirWith('MONGO_URL=mongodb://127.0.0.1:27018/stack\nREDIS_URL=redis://127.0.0.1:6380/0\n');
    const withMongo: Record<string, string | undefined> = { STACK_DIR: dir, MONGO_URL: 'mongodb://db.example.org/connect' };
    expect(applyStackEnv(withMongo)).toBeUndefined();
    expect(withMongo.REDIS_URL).toBeUndefined();

    const empty = mkdtempSync(join(tmpdir(), 'stack-env-'));
    dirs.push(empty);
    const none: Record<string, string | undefined> = { STACK_DIR: empty };
    expect(applyStackEnv(none)).toBeUndefined();
    expect(none).toEqual({ STACK_DIR: empty });
  });
});
