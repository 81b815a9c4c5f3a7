import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/** Every module `from` reaches through static imports and re-exports, with the bare packages they name. */
function importGraph(from: string, seen = new Set<string>(), packages = new Set<string>()): { files: Set<string>; packages: Set<string> } {
  if (seen.has(from)) return { files: seen, packages };
  seen.add(from);
  const source = readFileSync(from, 'utf8');
  for (const [, spec] of source.matchAll(/^(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)) {
    if (spec!.startsWith('.')) importGraph(resolve(dirname(from), spec!), seen, packages);
    else packages.add(spec!);
  }
  return { files: seen, packages };
}

describe('@connect/shared/contract', () => {
  it('reaches zod and nothing else: the SDKs never load mongoose, BullMQ or pino through it', () => {
    const { packages } = importGraph(join(dirname(fileURLToPath(import.meta.url)), 'contract.ts'));
    expect([...packages]).toEqual(['zod']);
  });
});
