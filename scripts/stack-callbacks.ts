/**
 * `pnpm -s stack callbacks [--wait EXTERNAL_PROVIDER_ID] [--timeout S]`: the callbacks
 * the demo receiver of the running `pnpm stack` verified, as one JSON document
 * `{"callbacks": [...]}`. Only this run's: the receiver log keeps earlier runs, so
 * it reads from the last "demo receiver listening" line on. With --wait it waits
 * (default 30 s) until a callback for that user has arrived, so a script can run
 * it right after the write that causes it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { maskEmail, parseArgsProblem } from '@connect/shared/input-rules';

interface LoggedCallback {
  msg: string;
  type?: string;
  request_uuid?: string;
  external_provider_id?: string;
  version?: number;
}

function thisRun(logFile: string): LoggedCallback[] {
  if (!existsSync(logFile)) return [];
  const lines = readFileSync(logFile, 'utf8').split('\n');
  const entries = lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as LoggedCallback];
    } catch {
      return [];
    }
  });
  let start = 0;
  entries.forEach((e, i) => {
    if (e.msg === 'demo receiver listening') start = i;
  });
  return entries.slice(start).filter((e) => e.msg === 'verified callback');
}

/** One JSON error document on stdout, as every command here prints them; returns the exit code. */
function fail(kind: 'usage' | 'unavailable', message: string): number {
  process.stdout.write(`${JSON.stringify({ error: { kind, message } }, null, 2)}\n`);
  return kind === 'usage' ? 2 : 1;
}

export const CALLBACKS_USAGE = 'pnpm -s stack callbacks [--wait EXTERNAL_PROVIDER_ID] [--timeout SECONDS]';

export const CALLBACKS_HELP = `usage: ${CALLBACKS_USAGE}

Prints the callbacks the demo receiver of the running \`pnpm stack\` verified in this
run, as one JSON document {"callbacks": [...]} on stdout (errors: {"error": {"kind",
"message"}}, exit 2 for a usage error, 1 otherwise). Reads $STACK_DIR (default
.local/stack), as the stack does: give it the same STACK_DIR.

  --wait ID      wait until a callback for this external provider id has arrived,
                 then print those for it (run it right after the write that causes it)
  --timeout S    how long --wait waits, in seconds (default 30, at most 3600)
  --help, -h     this text
`;

export async function printCallbacks(argv: string[], dir: string): Promise<number> {
  let values: { wait?: string; timeout: string; help?: boolean };
  const options = { wait: { type: 'string' }, timeout: { type: 'string', default: '30' }, help: { type: 'boolean', short: 'h' } } as const;
  try {
    ({ values } = parseArgs({ args: argv, options }));
  } catch (err) {
    return fail('usage', `${parseArgsProblem(err, 'pnpm -s stack callbacks', options) ?? (err as Error).message}; usage: ${CALLBACKS_USAGE}`);
  }
  if (values.help) {
    process.stdout.write(CALLBACKS_HELP);
    return 0;
  }
  const seconds = Number(values.timeout);
  if (!/^\d+(\.\d+)?$/.test(values.timeout) || !(seconds > 0 && seconds <= 3600)) return fail('usage', `--timeout must be a number of seconds from 0 to 3600, got "${values.timeout}"`);
  if (values.wait !== undefined && !values.wait.trim()) return fail('usage', '--wait needs an external provider id');
  const logFile = join(dir, 'receiver.log');
  // Without --wait there is nothing to wait for: no log means no stack ever ran with this STACK_DIR.
  if (!values.wait && !existsSync(logFile)) return fail('unavailable', `no pnpm stack has run with STACK_DIR ${dir} (no receiver.log there): start one with pnpm stack`);
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const all = thisRun(logFile);
    // The demo receiver logs an email-like id masked.
    const logged = values.wait?.includes('@') ? maskEmail(values.wait) : values.wait;
    const callbacks = values.wait ? all.filter((c) => c.external_provider_id === logged) : all;
    if (!values.wait || callbacks.length > 0) {
      process.stdout.write(`${JSON.stringify({ callbacks }, null, 2)}\n`);
      return 0;
    }
    if (Date.now() > deadline) return fail('unavailable', `no verified callback for ${values.wait} within ${values.timeout} s (is pnpm stack running? see ${logFile})`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
