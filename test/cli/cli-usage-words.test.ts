/**
 * A mistyped option, as the operator reads it: plain words naming the options the command takes,
 * one JSON document on stdout, exit 2. Node's parseArgs text (`Unknown option '--nme'. To specify
 * a positional argument starting with a '-', place it at the end of the command after '--', as in
 * '-- "--nme"`) named none of them and left a quote open. Nothing here needs a datastore.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '@connect/local-services';

const run = promisify(execFile);

async function usage(bin: string, args: string[]): Promise<{ code: number; json: { error: { kind: string; message: string } } }> {
  // No MONGO_URL and no stack file: a usage error is told before any setting is read.
  const env = { ...process.env, MONGO_URL: undefined, STACK_DIR: '/nonexistent-stack-dir' };
  try {
    const { stdout } = await run(process.execPath, [bin, ...args], { cwd: REPO_ROOT, env });
    return { code: 0, json: JSON.parse(stdout) };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, json: JSON.parse(e.stdout) };
  }
}

describe('pnpm cli: an option the command does not take', () => {
  it('names the option, the command and the options it takes; a missing value names the option', async () => {
    const cases: [string[], string][] = [
      [['org', 'create', '--nme', 'X'], 'unknown option --nme for "org create"; its options: --name, --api-version'],
      [['org', 'create', '--nme=X'], 'unknown option --nme for "org create"; its options: --name, --api-version'],
      [['org', 'list', '-x'], 'unknown option -x for "org list"; it takes no options'],
      [['org', 'create', '--name'], '--name needs a value'],
      [['org', 'create', '--name', '-dash'], '--name needs a value; one that starts with "-" is given as --name=-VALUE'],
    ];
    for (const [args, message] of cases) {
      const r = await usage('packages/cli/bin/cli.js', args);
      expect(r.json, args.join(' ')).toEqual({ error: { kind: 'usage', message } });
      expect(r.code).toBe(2);
    }
  }, 60_000);
});

describe('pnpm import-users: an option it does not take', () => {
  it('names the option and the options it takes', async () => {
    const r = await usage('apps/importer/bin/import-users.js', ['--fle', 'users.csv', '--dry-run']);
    expect(r.json).toEqual({
      error: {
        kind: 'usage',
        message: 'unknown option --fle for pnpm import-users; its options: --base-url, --client-id, --private-key-file, --audience, --file, --concurrency, --max-retries, --report, --dry-run, --help',
      },
    });
    expect(r.code).toBe(2);
    expect((await usage('apps/importer/bin/import-users.js', ['--file'])).json.error.message).toBe('--file needs a value');
  }, 60_000);
});
