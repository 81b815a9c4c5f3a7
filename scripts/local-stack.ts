/**
 * `pnpm stack`: the whole system on a machine without Docker or MongoDB, in one
 * command. Builds FerretDB if needed and runs it on the local PostgreSQL
 * (database `connect_local`, kept between runs), uses the local Redis (or starts
 * one), starts the demo receiver, the API and the worker, registers a demo
 * organization and OAuth client on the first run (key pair under .local/stack/,
 * git-ignored), writes its settings to .local/stack/env (read by `pnpm cli`
 * when MONGO_URL is not set; removed when the stack stops), and prints what to
 * copy-paste. Ctrl-C stops everything. Its PID is in .local/stack/stack.pid while
 * it runs: a second `pnpm stack` on the same STACK_DIR refuses to start (it would
 * overwrite the first one's files); a stale one (a kill -9) is taken over.
 *
 * `pnpm -s stack callbacks [--wait ID] [--timeout S]` prints the callbacks this run's
 * demo receiver verified (scripts/stack-callbacks.ts). `pnpm stack --help` describes
 * both; any other argument is a usage error (one JSON document, exit 2), nothing started.
 *
 * Environment: PORT (API, default 3000), STACK_DIR (default .local/stack),
 * STACK_DATABASE (PostgreSQL database for FerretDB, default connect_local),
 * QUEUE_PREFIX (default connect-<STACK_DATABASE>), REDIS_URL, LOG_LEVEL (API and worker, default info),
 * DOWNSTREAM_TARGETS or DOWNSTREAM_TARGETS_FILE (targets of one's own, delivered to
 * beside the demo receiver).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import mongoose from 'mongoose';
import { createModels, deliveryPolicyEnvShape, emailUniquenessFrom, ensureIndexes, registerClient, registerOrganization } from '@connect/shared';
import { freePort, REPO_ROOT, redisAnswers, startFerretDb, startPrivateRedis, stopChild, waitForPort, type RunningService } from '@connect/local-services';

const started = Date.now();
const dir = process.env.STACK_DIR ?? join(REPO_ROOT, '.local', 'stack');
/** A path as printed: relative to the repository when inside it, else absolute (a STACK_DIR elsewhere read `../../tmp/...`). */
const shown = (path: string) => {
  const rel = relative(REPO_ROOT, resolve(path));
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : resolve(path);
};
/** `pnpm -s stack callbacks` reads $STACK_DIR too: printed with it when it is not the default. */
const callbacksCommand = process.env.STACK_DIR ? `STACK_DIR=${resolve(process.env.STACK_DIR)} pnpm -s stack callbacks` : 'pnpm -s stack callbacks';
const apiPort = Number(process.env.PORT ?? 3000);
const say = (msg: string) => process.stdout.write(`[stack] ${msg}\n`);
// Whoever read our output may be gone (a closed terminal, a killed parent): stopping must still
// stop every child, so a write to a closed pipe is dropped instead of ending the process half-way.
process.stdout.on('error', () => undefined);
process.stderr.on('error', () => undefined);

interface State {
  organization_id: string;
  client_id: string;
  callback_secret: string;
  admin_token: string;
}

/**
 * The operator's own targets, given as to the API and worker (DOWNSTREAM_TARGETS, or
 * DOWNSTREAM_TARGETS_FILE), delivered to beside the demo receiver. Their fields are checked
 * by the API and worker at start, as always; here only that they are a JSON array.
 */
function ownTargets(): { name?: unknown }[] {
  const file = process.env.DOWNSTREAM_TARGETS_FILE;
  let raw = process.env.DOWNSTREAM_TARGETS;
  if (file) {
    try {
      raw = readFileSync(file, 'utf8');
    } catch (err) {
      throw new Error(`DOWNSTREAM_TARGETS_FILE (${file}) cannot be read: ${(err as Error).message}`);
    }
  }
  if (raw === undefined || raw.trim() === '') return [];
  const from = file ? `DOWNSTREAM_TARGETS_FILE (${file})` : 'DOWNSTREAM_TARGETS';
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new Error(`${from} is not JSON: give a JSON array of targets ({"name", "url", "secrets"}), delivered to beside the demo receiver`);
  }
  if (!Array.isArray(parsed)) throw new Error(`${from} must be a JSON array of targets ({"name", "url", "secrets"})`);
  // The worker would refuse the two names and blame the combined list's index, which the operator never wrote.
  const taken = (parsed as { name?: unknown }[]).findIndex((t) => t !== null && typeof t === 'object' && t.name === DEMO_TARGET);
  if (taken >= 0) throw new Error(`${from}: [${taken}].name: "${DEMO_TARGET}" is the stack's own demo target; give yours another name`);
  return parsed as { name?: unknown }[];
}

const HELP_FLAGS = new Set(['--help', '-h', 'help']);
/** The settings `pnpm stack` takes, all from the environment (it takes no options). */
const SETTINGS = 'PORT, STACK_DIR, STACK_DATABASE, QUEUE_PREFIX, REDIS_URL, LOG_LEVEL, DOWNSTREAM_TARGETS, DOWNSTREAM_TARGETS_FILE';

async function usageMessage(given: string): Promise<string> {
  const { CALLBACKS_USAGE } = await import('./stack-callbacks.ts');
  // A typo of the subcommand (`callback`, `callbaks`): said first.
  const meant = given !== 'callbacks' && /^call/.test(given) ? ' (did you mean `callbacks`?)' : '';
  return (
    `unknown argument "${given}"${meant}: the accepted forms are \`pnpm stack\` (starts the local stack; no arguments), ` +
    `\`${CALLBACKS_USAGE}\` and \`pnpm stack --help\`; its settings are environment variables (${SETTINGS}), e.g. \`PORT=3001 pnpm stack\``
  );
}

async function stackHelp(): Promise<string> {
  const { CALLBACKS_USAGE } = await import('./stack-callbacks.ts');
  return `usage: pnpm stack
       ${CALLBACKS_USAGE}

\`pnpm stack\` runs the whole system on this machine without Docker: FerretDB on the local
PostgreSQL, the local Redis (or one of its own), a demo receiver, the API and the worker. It
registers a demo organization and OAuth client on the first run (kept in STACK_DIR), writes
its settings to STACK_DIR/env for \`pnpm cli\` in another terminal, and prints what to
copy-paste. Ctrl-C stops everything. It refuses to start on a STACK_DIR whose stack is still
running: give a second one a folder, a port and a database of its own.

\`pnpm -s stack callbacks\` prints the callbacks this run's demo receiver verified
(\`pnpm -s stack callbacks --help\`).

Settings (environment variables):
  PORT                     the API's port (default 3000)
  STACK_DIR                the folder of its files (default .local/stack)
  STACK_DATABASE           the PostgreSQL database for FerretDB (default connect_local)
  QUEUE_PREFIX             the queue prefix (default connect-<STACK_DATABASE>)
  REDIS_URL                the Redis (default the local one on 6379, else one of its own)
  LOG_LEVEL                the API's and the worker's log level (default info)
  DOWNSTREAM_TARGETS, DOWNSTREAM_TARGETS_FILE
                           targets of one's own, delivered to beside the demo receiver
`;
}

const DEMO_TARGET = 'demo-receiver';
const stops: (() => Promise<void>)[] = [];
const children: ChildProcess[] = [];

function launch(name: string, script: string, env: Record<string, string>): ChildProcess {
  const log = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
  // The targets are in DOWNSTREAM_TARGETS, the demo receiver's with the operator's own (ownTargets).
  const { DOWNSTREAM_TARGETS_FILE: _file, ...inherited } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: REPO_ROOT,
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group: Ctrl-C reaches only this script, which then stops
    // the API before the worker and the datastores, in that order.
    detached: true,
  });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  child.once('exit', (code, signal) => {
    if (!stopping) say(`${name} exited (${code ?? signal}); see ${join(dir, `${name}.log`)}`);
  });
  children.push(child);
  stops.unshift(() => stopChild(child, 'SIGTERM', 30_000));
  return child;
}

const envFile = join(dir, 'env');
let envWritten: string | undefined;

/**
 * The settings of this stack, for `pnpm cli` and the README's commands in another
 * terminal (they read it when MONGO_URL is not set). Single-quoted values: the
 * file is also valid shell (`set -a; . .local/stack/env; set +a`).
 */
function writeEnvFile(env: Record<string, string>): void {
  const lines = Object.entries(env).map(([k, v]) => `${k}='${v.replaceAll("'", "'\\''")}'`);
  envWritten = `# Written by \`pnpm stack\` for the stack running now; removed when it stops.\n${lines.join('\n')}\n`;
  writeFileSync(envFile, envWritten, { mode: 0o600 });
}

/**
 * The PID of the stack running on this folder, written before anything starts and removed once
 * everything it started has stopped: a second `pnpm stack` on the same STACK_DIR overwrote the
 * first one's state.json, key pair and logs, and at its stop removed the env file the first one
 * (still running) had written for `pnpm cli`.
 */
const pidFile = join(dir, 'stack.pid');
let pidClaimed = false;

/** The PID in the pid file when it is a `pnpm stack` still running; undefined for none or a stale one (a kill -9). */
function runningStack(): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: alive, another user's.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  // After a kill -9 the PID may since name another program: on Linux its command line tells.
  if (existsSync('/proc/self/cmdline')) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('local-stack')) return undefined;
    } catch {
      return undefined;
    }
  }
  return pid;
}

/** Takes the folder for this stack; the PID of the stack already running there instead, touching none of its files. */
function claimFolder(): number | undefined {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      // wx: of two stacks starting at the same moment, one gets the file.
      writeFileSync(pidFile, `${process.pid}\n`, { flag: 'wx' });
      pidClaimed = true;
      return undefined;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const running = runningStack();
    if (running !== undefined) return running;
    rmSync(pidFile, { force: true }); // stale: its stack was killed before it could remove it
  }
  return runningStack() ?? -1;
}

let stopping = false;
async function stopAll(code: number): Promise<void> {
  // A signal can come twice (Ctrl-C reaches pnpm and this process; a terminal closing sends SIGHUP
  // then more): a repeated one must not cut the sequence short.
  if (stopping) return;
  stopping = true;
  say('stopping…');
  // Only our own file: another stack may have started on this folder since.
  if (envWritten && existsSync(envFile) && readFileSync(envFile, 'utf8') === envWritten) rmSync(envFile);
  for (const stop of stops) await stop().catch(() => undefined);
  // Last: the folder is free once everything this stack started has stopped.
  if (pidClaimed && existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() === String(process.pid)) rmSync(pidFile);
  say('stopped');
  process.exit(code);
}
async function main(): Promise<void> {
  // Before anything starts: a malformed value stops the stack at once, naming the variable.
  const own = ownTargets();
  mkdirSync(dir, { recursive: true });
  const running = claimFolder();
  if (running !== undefined) {
    const other = running > 0 ? `(PID ${running})` : '(another one is starting there at this moment)';
    say(
      `failed: a pnpm stack is already running on ${shown(dir)} ${other}; nothing was started and none of its files were touched. ` +
        `Stop it first (Ctrl-C in its terminal${running > 0 ? `, or kill ${running}` : ''}), or run a second one beside it with a folder, a port and a database of its own: ` +
        `STACK_DIR=${shown(dir)}-2 PORT=${apiPort + 1} STACK_DATABASE=${process.env.STACK_DATABASE ?? 'connect_local'}_2 pnpm stack`,
    );
    process.exit(1);
  }
  const database = process.env.STACK_DATABASE ?? 'connect_local';
  say(`building/starting FerretDB on the local PostgreSQL (database ${database})…`);
  const ferret: RunningService = await startFerretDb({ database, keepDatabase: true });
  stops.unshift(ferret.stop);
  const mongoUrl = `${ferret.url}connect`;

  // REDIS_URL chooses the Redis (a machine shared with others); else the local one, else one of its own.
  let redisUrl = process.env.REDIS_URL?.trim() || 'redis://127.0.0.1:6379';
  if (!process.env.REDIS_URL?.trim() && !(await redisAnswers(6379))) {
    const redis = await startPrivateRedis();
    stops.unshift(redis.stop);
    redisUrl = redis.url;
  }

  const statePath = join(dir, 'state.json');
  const privateKeyPath = join(dir, 'ehr-private.pem');
  const conn = await mongoose.createConnection(mongoUrl).asPromise();
  const models = createModels(conn);
  // The mode the API and the worker it starts read from this environment.
  await ensureIndexes(models, undefined, emailUniquenessFrom(process.env));
  let state: State | undefined = existsSync(statePath) ? JSON.parse(readFileSync(statePath, 'utf8')) : undefined;
  if (state && !(await models.OAuthClient.exists({ _id: state.client_id, enabled: true }))) state = undefined;
  if (!state || !existsSync(privateKeyPath)) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(privateKeyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    writeFileSync(join(dir, 'ehr-public.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    const org = await registerOrganization(models, { name: 'Demo clinic' });
    const client = await registerClient(models, { organizationId: org._id, publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() });
    state = {
      organization_id: org._id,
      client_id: client._id,
      callback_secret: randomBytes(24).toString('hex'),
      admin_token: randomBytes(24).toString('hex'),
    };
    writeFileSync(statePath, JSON.stringify(state, null, 2), { mode: 0o600 });
    say(`registered a demo organization and OAuth client (kept in ${shown(dir)} for the next run)`);
  } else {
    say('reusing the demo organization and OAuth client from the last run');
  }
  await conn.close();

  const receiverPort = await freePort();
  launch('receiver', 'scripts/demo-receiver.ts', { PORT: String(receiverPort), HOST: '127.0.0.1', DEMO_RECEIVER_SECRET: state.callback_secret });
  await waitForPort(receiverPort);

  const baseUrl = `http://localhost:${apiPort}`;
  const env = {
    MONGO_URL: mongoUrl,
    REDIS_URL: redisUrl,
    PORT: String(apiPort),
    HOST: '127.0.0.1',
    PUBLIC_BASE_URL: baseUrl,
    // One prefix per database unless one is given: two stacks on one Redis must not take each other's jobs.
    QUEUE_PREFIX: process.env.QUEUE_PREFIX ?? `connect-${database}`,
    LOG_LEVEL: process.env.LOG_LEVEL ?? 'info',
    ADMIN_TOKEN: state.admin_token,
    DOWNSTREAM_TARGETS: JSON.stringify([{ name: DEMO_TARGET, url: `http://127.0.0.1:${receiverPort}/callbacks`, secrets: [state.callback_secret] }, ...own]),
  };
  writeEnvFile({
    MONGO_URL: env.MONGO_URL,
    REDIS_URL: env.REDIS_URL,
    QUEUE_PREFIX: env.QUEUE_PREFIX,
    PUBLIC_BASE_URL: env.PUBLIC_BASE_URL,
    // So `pnpm cli user get` shows the same per-target sync as GET /users/{id}.
    DOWNSTREAM_TARGETS: env.DOWNSTREAM_TARGETS,
    // The worker's delivery settings given to this stack, so jobs the CLI adds (replay, recover,
    // resync) get the attempts and schedule the worker's own have.
    ...Object.fromEntries(Object.keys(deliveryPolicyEnvShape).flatMap((k) => (process.env[k]?.trim() ? [[k, process.env[k]!]] : []))),
  });
  launch('worker', 'apps/worker/src/main.ts', env);
  launch('api', 'apps/api/src/main.ts', env);
  for (;;) {
    const ok = await fetch(`http://127.0.0.1:${apiPort}/readyz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (children.some((c) => c.exitCode !== null)) return stopAll(1);
    await new Promise((r) => setTimeout(r, 200));
  }
  const base = `${baseUrl}/v1/connect/server`;
  const keyFile = privateKeyPath.startsWith(REPO_ROOT) ? privateKeyPath.slice(REPO_ROOT.length + 1) : privateKeyPath;
  process.stdout.write(`
[stack] ready in ${((Date.now() - started) / 1000).toFixed(1)} s
  base URL      ${base}
  client id     ${state.client_id}
  organization  ${state.organization_id}
  private key   ${keyFile}
  docs          ${baseUrl}/docs
  dashboard     ${baseUrl}/admin/queues   (any user name; the password is admin_token in ${shown(statePath)})
  targets       demo-receiver${own.map((t) => `, ${String(t.name)}`).join('')}
  logs          ${dir}/{api,worker,receiver}.log

Settings for \`pnpm cli\` in another terminal: ${envFile} (read when MONGO_URL is not set${process.env.STACK_DIR ? `; there, run \`STACK_DIR=${resolve(process.env.STACK_DIR)} pnpm cli …\`` : ''}).

Get a token, create a user, and see this run's verified callback for it:

  TOKEN=$(pnpm -s exec tsx scripts/request-token.ts --client-id ${state.client_id} --private-key-file ${keyFile} --token-url ${base}/oauth/token | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')
  EHR_ID=ehr-$(date +%s)
  curl -s -w '\\n' ${base}/users -H "Authorization: Bearer $TOKEN" -H "X-Nabla-Api-Version: 2026-03-23" -H "Content-Type: application/json" \\
    -d '{"provider_email":"'$EHR_ID'@example.com","external_provider_id":"'$EHR_ID'","settings":{"speech_locale":"ENGLISH_US"}}'
  ${callbacksCommand} --wait $EHR_ID

Ctrl-C stops everything.
`);
}

// pnpm passes a literal `--` through when called as `pnpm stack -- ...`.
const argv = process.argv.slice(2).filter((a, i) => !(i === 0 && a === '--'));
if (argv[0] === 'callbacks') {
  process.exitCode = await (await import('./stack-callbacks.ts')).printCallbacks(argv.slice(1), dir);
} else if (argv.length > 0 && HELP_FLAGS.has(argv[0]!)) {
  process.stdout.write(await stackHelp());
} else if (argv.length > 0) {
  // Anything else started a whole second stack on the same folder (a typo of `callbacks`, an option
  // meant as a setting): nothing starts, and the accepted forms are named.
  process.stdout.write(`${JSON.stringify({ error: { kind: 'usage', message: await usageMessage(argv[0]!) } }, null, 2)}\n`);
  process.exitCode = 2;
} else {
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  // A closed terminal: Node's default would exit at once and leave the children (own process groups) running.
  process.on('SIGHUP', () => void stopAll(0));
  main().catch((err) => {
    say(`failed: ${(err as Error).message}`);
    void stopAll(1);
  });
}
