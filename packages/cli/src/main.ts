/**
 * `pnpm cli <command>`: operator commands over the same domain code as the API.
 * Every command prints exactly one JSON document on stdout, its result or
 * `{"error": {"kind", "message"}}` with a non-zero exit; `--help` prints plain
 * text and exits 0; logs and notices go to stderr only (docs/operations.md).
 *
 * To add a command: write a `Command` (command.ts) in a file of your own and add
 * it to COMMANDS (commands.ts). Dispatch picks the command whose words start argv.
 */
import { parseArgs } from 'node:util';
import type { Config, RedisClient } from '@connect/shared';
import { parseArgsProblem } from '@connect/shared/input-rules';
import { CliError, redactUrl, toCliError, type CliContext, type Command } from './command.ts';
import { COMMANDS } from './commands.ts';
import { probeDatastore, singleHostOf } from './datastore-probe.ts';
import { applyStackEnv, hasLocalStack, stackEnvPath } from './stack-env.ts';

const HELP_FLAGS = new Set(['--help', '-h']);

function usageLine(c: Command): string {
  return `pnpm cli ${c.name}${c.synopsis ? ` ${c.synopsis}` : ''}`;
}

function globalHelp(): string {
  return `Connect Provisioning operator commands.

usage:
${COMMANDS.map((c) => `  ${usageLine(c)}`).join('\n')}

Every command prints one JSON document on stdout: its result, or
{"error": {"kind", "message"}} with exit code 2 (kinds usage, configuration)
or 1 (unavailable, not_found, conflict, internal). Notices go to stderr.
Settings come from the environment (MONGO_URL, REDIS_URL, QUEUE_PREFIX,
PUBLIC_BASE_URL, DOWNSTREAM_TARGETS, ...); without MONGO_URL the CLI reads
.local/stack/env, written by a running \`pnpm stack\`.

\`pnpm cli COMMAND --help\` describes one command.
`;
}

function commandHelp(c: Command): string {
  return `usage: ${usageLine(c)}\n\n${c.description}\n`;
}

/** The command whose words start argv (the longest such), and the arguments after them. */
function findCommand(argv: string[]): { command?: Command; rest: string[]; prefix: Command[] } {
  let best: Command | undefined;
  for (const c of COMMANDS) {
    const words = c.name.split(' ');
    if (words.every((w, i) => argv[i] === w) && (!best || words.length > best.name.split(' ').length)) best = c;
  }
  if (best) return { command: best, rest: argv.slice(best.name.split(' ').length), prefix: [] };
  // `pnpm cli client --help`: the commands of that noun.
  return { rest: argv, prefix: COMMANDS.filter((c) => c.name.startsWith(`${argv[0]} `)) };
}

function print(doc: unknown): void {
  process.stdout.write(`${JSON.stringify(doc, null, 2)}\n`);
}

function fail(err: CliError): void {
  print({ error: { kind: err.kind, message: err.message, ...err.extra } });
  process.exitCode = err.kind === 'usage' || err.kind === 'configuration' ? 2 : 1;
}

/**
 * The command's arguments, checked before anything else is read: unknown options,
 * an option given twice, stray positionals, then the command's own checks.
 */
function parseInput(command: Command, rest: string[]): unknown {
  const options = command.options ?? {};
  const parse = () => {
    try {
      return parseArgs({ args: rest, allowPositionals: true, strict: true, options, tokens: true });
    } catch (err) {
      // parseArgs' own text names no option the command takes and leaves a quote open.
      const problem = parseArgsProblem(err, `"${command.name}"`, options);
      if (problem === undefined) throw err;
      throw new CliError('usage', problem);
    }
  };
  const { values, positionals, tokens } = parse();
  const seen = new Set<string>();
  for (const t of tokens) {
    if (t.kind !== 'option' || options[t.name]?.multiple) continue;
    if (seen.has(t.name)) throw new CliError('usage', `--${t.name} is given twice; give it once`);
    seen.add(t.name);
  }
  if (positionals.length > (command.positionals ?? 0)) throw new CliError('usage', `unexpected argument "${positionals[command.positionals ?? 0]}"; usage: ${usageLine(command)}`);
  return command.parse({ values, positionals });
}

/**
 * SIGINT and SIGTERM for a command that stops cleanly (`stopNotice`), taken over as
 * soon as the command is known, before its settings, drivers and datastores load
 * (seconds): a signal then aborts the returned signal instead of ending the process
 * with nothing on stdout. Both, and any repeat, are one request: pnpm forwards a
 * Ctrl-C to the CLI as SIGINT and then SIGTERM, and a terminal's Ctrl-C reaches the
 * process group too. A signal before main.ts runs (node and tsx starting, well under a
 * second) still ends the process the default way; SIGKILL remains for "stop now".
 */
function stopOnSignals(notice: string): AbortSignal {
  const stop = new AbortController();
  const onSignal = () => {
    if (!stop.signal.aborted) process.stderr.write(`\n${notice}\n`);
    stop.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return stop.signal;
}

/**
 * How long the early probe gives a datastore to accept a connection and answer its question:
 * with the CLI's own start (0.5 s idle, 1.5 s on a busy machine) within the contract's 5 s, and
 * longer than the drivers' own bound (datastores.ts, 2 s), so no datastore they accept is refused.
 */
const PROBE_BUDGET_MS = 2_500;

/**
 * Rejects with `unavailable` as soon as the datastore's early probe finds it refusing or silent
 * (datastore-probe.ts); never settles otherwise. The budget runs from the command's start, beside
 * the drivers' load, so a silent host is told within the contract's 5 s however long that takes.
 */
function downEarly(name: 'MongoDB' | 'Redis', variable: 'MONGO_URL' | 'REDIS_URL', from: (variable: string) => string): Promise<never> {
  const url = process.env[variable];
  const kind = name === 'MongoDB' ? 'mongodb' : 'redis';
  const target = singleHostOf(url, kind);
  const down = new Promise<never>((_, reject) => {
    if (!target) return;
    void probeDatastore(target, kind, PROBE_BUDGET_MS).then((verdict) => {
      const where = `${name} at ${redactUrl(url!)}`;
      const budget = `${PROBE_BUDGET_MS / 1000} s`;
      if (verdict.kind === 'refused') reject(new CliError('unavailable', `${where} is unavailable${from(variable)}: ${verdict.error.message}`));
      else if (verdict.kind === 'silent') {
        const what = verdict.connected ? `it accepted a connection but did not answer ${name === 'MongoDB' ? 'a hello' : 'a PING'} within ${budget}` : `no connection within ${budget}`;
        reject(new CliError('unavailable', `${where} is unavailable${from(variable)}: ${what} (timed out)`));
      }
    });
  });
  down.catch(() => undefined); // told by a race below, or found again by the drivers
  return down;
}

async function runCommand(command: Command, args: unknown, stop: AbortSignal): Promise<unknown> {
  const mongoUrlSet = Boolean(process.env.MONGO_URL?.trim());
  const stackEnv = applyStackEnv(process.env);
  if (stackEnv) {
    const instead = stackEnv.replaced.length > 0 ? `; its targets (those the running worker delivers to) instead of ${stackEnv.replaced.join(' and ')} from the environment` : '';
    process.stderr.write(`cli: MONGO_URL is not set; using ${stackEnv.used.join(', ')} from ${stackEnv.file} (written by pnpm stack)${instead}\n`);
  }
  // Where a datastore's URL came from, when it was the stack's file: a hint for its `unavailable` error.
  const from = (variable: string) => (stackEnv?.used.includes(variable) ? ` (from ${stackEnv.file}: is \`pnpm stack\` running?)` : '');
  // The drivers load only now: help and usage errors never wait for them (command.ts). A datastore
  // that refuses connections, or never answers, is told while they load and connect, not seconds
  // after (datastore-probe.ts). Each probe's verdict counts until its driver has connected.
  const mongoDown = downEarly('MongoDB', 'MONGO_URL', from);
  const redisDown = command.needsRedis ? downEarly('Redis', 'REDIS_URL', from) : new Promise<never>(() => undefined);
  const eitherDown = Promise.race([mongoDown, redisDown]);
  eitherDown.catch(() => undefined);
  const [{ createModels, loadConfig }, { connectMongo, connectRedis }] = await Promise.race([Promise.all([import('@connect/shared'), import('./datastores.ts')]), eitherDown]);
  let config: Readonly<Config>;
  try {
    config = loadConfig(process.env, { require: { redis: false } });
  } catch (err) {
    const e = toCliError(err);
    // Only when the settings came from nowhere (no MONGO_URL and no stack file), and only in a
    // checkout, where `pnpm stack` exists: the production image has no such command.
    if (e.extra.variable === 'MONGO_URL' && !mongoUrlSet && !stackEnv && hasLocalStack()) {
      const file = process.env.STACK_DIR ? stackEnvPath(process.env) : '.local/stack/env';
      e.message += ` (or start \`pnpm stack\`, which writes ${file} for the CLI)`;
    }
    throw e;
  }
  // Bounded waits: with the database down the CLI answers `unavailable` within 5 s, start-up included.
  const conn = await Promise.race([connectMongo(config.mongoUrl, from('MONGO_URL'), command.operationTimeoutMs), eitherDown]);
  let redis: Promise<RedisClient> | undefined;
  try {
    // Indexes are the API's to create at start; the CLI only reads and writes documents.
    const ctx: CliContext = {
      config,
      stop,
      models: createModels(conn),
      redis: () =>
        (redis ??= Promise.race([
          connectRedis(config).catch((err: CliError) => {
            err.message += from('REDIS_URL');
            throw err;
          }),
          redisDown,
        ])),
    };
    return await command.run(args, ctx);
  } finally {
    await conn.close().catch(() => undefined);
    (await redis?.catch(() => undefined))?.disconnect();
  }
}

async function main(argv: string[]): Promise<void> {
  if (argv.length === 0) throw new CliError('usage', 'no command given; `pnpm cli --help` lists them');
  if (HELP_FLAGS.has(argv[0]!) || argv[0] === 'help') {
    const { command, prefix } = findCommand(argv.slice(1));
    process.stdout.write(command ? commandHelp(command) : prefix.length ? prefix.map(commandHelp).join('\n') : globalHelp());
    return;
  }
  const { command, rest, prefix } = findCommand(argv);
  if (argv.some((a) => HELP_FLAGS.has(a))) {
    if (command) return void process.stdout.write(commandHelp(command));
    if (prefix.length) return void process.stdout.write(prefix.map(commandHelp).join('\n'));
  }
  if (!command) {
    const known = prefix.length ? `; ${argv[0]} commands: ${prefix.map((c) => c.name).join(', ')}` : '; `pnpm cli --help` lists them';
    // The words before the first option: a flag (`bogus --help`) is not part of the command's name.
    const firstOption = argv.findIndex((a) => a.startsWith('-'));
    const words = firstOption > 0 ? argv.slice(0, Math.min(firstOption, 2)) : argv.slice(0, firstOption === 0 ? 1 : 2);
    throw new CliError('usage', `unknown command "${words.join(' ')}"${known}`);
  }
  const stop = command.stopNotice ? stopOnSignals(command.stopNotice) : new AbortController().signal;
  // Arguments first: a usage error needs no settings and no database.
  const args = parseInput(command, rest);
  print(await runCommand(command, args, stop));
}

// pnpm passes a literal `--` through when called as `pnpm cli -- ...`.
const args = process.argv.slice(2).filter((a, i) => !(i === 0 && a === '--'));
try {
  await main(args);
} catch (err) {
  const e = toCliError(err);
  // A bug: stdout stays one JSON document; the stack goes to stderr for whoever debugs it.
  if (e.kind === 'internal') process.stderr.write(`${(err as Error)?.stack ?? String(err)}\n`);
  fail(e);
}
// Exit once stdout is flushed: a driver's lingering timer must not keep a script waiting.
process.stdout.write('', () => process.exit());
