import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * Every module `from` reaches through static imports and re-exports, with the bare packages
 * they name. `import type` / `export type` lines load nothing at run time and are skipped;
 * dynamic `import()` is not followed (that is how a module defers a heavy dependency).
 */
export function importGraph(from: string, seen = new Set<string>(), packages = new Set<string>()): { files: Set<string>; packages: Set<string> } {
  if (seen.has(from)) return { files: seen, packages };
  seen.add(from);
  const source = readFileSync(from, 'utf8');
  for (const [, spec] of source.matchAll(/^(?:import|export)\s(?!type\s)[^'"]*?from\s+'([^']+)'/gm)) {
    if (spec!.startsWith('.')) importGraph(resolve(dirname(from), spec!), seen, packages);
    else packages.add(spec!);
  }
  return { files: seen, packages };
}
