/**
 * `pnpm stack` writes the settings of the system it runs (MONGO_URL, REDIS_URL,
 * QUEUE_PREFIX, PUBLIC_BASE_URL, DOWNSTREAM_TARGETS) to `.local/stack/env`, so
 * the README's commands work in a second terminal with nothing to export. The
 * CLI reads that file only when MONGO_URL is not set, and a variable set in the
 * environment wins over the file's (the CLI says on stderr which it took), but for
 * the targets: the file holds the list the running worker delivers to (the demo
 * receiver's and those given to the stack by DOWNSTREAM_TARGETS or
 * DOWNSTREAM_TARGETS_FILE, still exported in the shell that started it), so it
 * replaces both, or `pnpm cli` would see a part of the list, or two lists.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnv } from 'node:util';

/** The repository root, from packages/cli/src or packages/cli/dist alike. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** A checkout with `pnpm stack` (scripts/local-stack.ts), not the production image built without it. */
export function hasLocalStack(): boolean {
  return existsSync(join(REPO_ROOT, 'scripts', 'local-stack.ts'));
}

/** Where the stack writes its settings: $STACK_DIR/env, by default .local/stack/env. */
export function stackEnvPath(env: Record<string, string | undefined>): string {
  return join(env.STACK_DIR ?? join(REPO_ROOT, '.local', 'stack'), 'env');
}

export interface StackEnv {
  /** The file, relative to the repository when inside it. */
  file: string;
  /** The variables taken from it (those the environment did not set, and the targets). */
  used: string[];
  /** Variables of the environment the file's targets replaced. */
  replaced: string[];
}

const TARGET_VARIABLES = ['DOWNSTREAM_TARGETS', 'DOWNSTREAM_TARGETS_FILE'];

/** Fills `env` from the stack's file when MONGO_URL is not set; says what it took. */
export function applyStackEnv(env: Record<string, string | undefined>): StackEnv | undefined {
  if (env.MONGO_URL?.trim()) return undefined;
  const path = stackEnvPath(env);
  if (!existsSync(path)) return undefined;
  const values = parseEnv(readFileSync(path, 'utf8'));
  const used: string[] = [];
  const replaced: string[] = [];
  if (values.DOWNSTREAM_TARGETS !== undefined) {
    for (const key of TARGET_VARIABLES) {
      if (env[key]?.trim()) replaced.push(key);
      delete env[key];
    }
  }
  for (const [key, value] of Object.entries(values)) {
    if (env[key]?.trim()) continue;
    env[key] = value;
    used.push(key);
  }
  const rel = relative(process.cwd(), path);
  return { file: rel.startsWith('..') ? path : rel, used, replaced };
}
