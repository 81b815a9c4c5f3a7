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

export async function printCallbacks(argv: string[], dir: string): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { wait: { type: 'string' }, timeout: { type: 'string', default: '30' } } });
  const logFile = join(dir, 'receiver.log');
  const deadline = Date.now() + Number(values.timeout) * 1000;
  for (;;) {
    const all = thisRun(logFile);
    const callbacks = values.wait ? all.filter((c) => c.external_provider_id === values.wait) : all;
    if (!values.wait || callbacks.length > 0) {
      process.stdout.write(`${JSON.stringify({ callbacks }, null, 2)}\n`);
      return 0;
    }
    if (Date.now() > deadline) {
      process.stdout.write(`${JSON.stringify({ error: { kind: 'unavailable', message: `no verified callback for ${values.wait} within ${values.timeout} s (is pnpm stack running? see ${logFile})` } }, null, 2)}\n`);
      return 1;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
