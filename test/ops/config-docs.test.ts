/**
 * Every environment variable a process validates at start has a row in README.md's configuration
 * table, so an operator can find it: a variable added to a schema without its row fails here.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';
import { apiEnvShape, deliveryPolicyEnvShape, sharedEnvShape } from '@connect/shared';
import { workerEnvShape, workerHealthEnvShape } from '@connect/worker';

/** The names in the first column of README's tables: `| \`NAME\` |` or `| \`A\` / \`B\` |`. */
function documentedVariables(): Set<string> {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const names = new Set<string>();
  for (const [, cell] of readme.matchAll(/^\| ([^|]+) \|/gm)) for (const [, name] of cell!.matchAll(/`([A-Z][A-Z0-9_]+)`/g)) names.add(name!);
  return names;
}

describe('README.md documents every configuration variable', () => {
  it('each variable of the API, worker and shared schemas has a row in a README table', () => {
    const validated = Object.keys({ ...sharedEnvShape, ...apiEnvShape, ...deliveryPolicyEnvShape, ...workerEnvShape, ...workerHealthEnvShape });
    expect(validated.length).toBeGreaterThan(20);
    const documented = documentedVariables();
    expect(validated.filter((name) => !documented.has(name))).toEqual([]);
  });
});
