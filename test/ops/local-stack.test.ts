import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/child-process.ts';
import { freePort, REPO_ROOT } from '@connect/local-services';
import { eventually, nablaSignatureVerifies, startReceiver, userOf } from '../worker/callback-receiver.ts';

const run = promisify(execFile);
const database = `stack_test_${Date.now().toString(36)}`;

/** Every stack this file starts: one a failed assertion left running is stopped (Ctrl-C's SIGINT) before the database goes. */
const stacks: ChildProcess[] = [];
/** PostgreSQL databases of stacks this file started besides `database`, dropped at the end. */
const extraDatabases: string[] = [];
/** Every STACK_DIR this file made (settings, logs, FerretDB's state), removed at the end. */
const dirs: string[] = [];
const stackDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'stack-'));
  dirs.push(dir);
  return dir;
};
afterAll(async () => {
  for (const child of stacks.filter((c) => c.exitCode === null && c.signalCode === null)) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGINT');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
  }
  for (const db of [database, ...extraDatabases]) await run('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-d', 'postgres', '-qc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]).catch(() => undefined);
  // Best effort: a stack that would not stop may still be writing there, and the cause is what matters.
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      console.log(`[local stack] could not remove ${dir}: ${(err as Error).message}`);
    }
  }
});

describe('pnpm stack: the whole system in one command on a machine without Docker', () => {
  it('comes up, writes its settings for the CLI, prints a copy-paste block that runs as printed and shows the verified callback of this run, reuses its demo data, delivers to a target of one\'s own given in DOWNSTREAM_TARGETS too, and stops on Ctrl-C and on SIGTERM to pnpm', async () => {
    const dir = stackDir();
    const port = await freePort();
    const start = (env: Record<string, string> = {}) => {
      const childEnv: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), STACK_DIR: dir, STACK_DATABASE: database, ...env };
      if (env.QUEUE_PREFIX === undefined) delete childEnv.QUEUE_PREFIX;
      const child = spawn('pnpm', ['-s', 'stack'], {
        cwd: REPO_ROOT,
        env: childEnv,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // its own process group, so the test can send Ctrl-C's SIGINT to the group as a terminal does
      });
      stacks.push(child);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      return { child, output: () => out, exited };
    };

    const first = start();
    await waitFor(() => first.output().includes('ready in'), 120_000, 'the stack to be ready');
    const out = first.output();
    expect(out).toContain(`base URL      http://localhost:${port}/v1/connect/server`);
    expect(out).toContain('registered a demo organization');
    const clientId = /client id\s+(\S+)/.exec(out)![1]!;
    // The settings the CLI reads in another terminal, while the stack runs.
    const envFile = readFileSync(join(dir, 'env'), 'utf8');
    expect(envFile).toContain(`PUBLIC_BASE_URL='http://localhost:${port}'`);
    for (const name of ['MONGO_URL', 'REDIS_URL', 'QUEUE_PREFIX', 'DOWNSTREAM_TARGETS']) expect(envFile).toMatch(new RegExp(`^${name}='`, 'm'));
    expect(envFile).toContain(`QUEUE_PREFIX='connect-${database}'`);

    // The copy-paste block, run as printed: token, create, and this run's verified callback.
    const runBlock = async (printed: string) => {
      const block = printed.slice(printed.indexOf('  TOKEN=$('), printed.indexOf('Ctrl-C stops everything.'));
      // From another terminal: none of the stack's settings there, not even STACK_DIR, which the block carries itself.
      const env: Record<string, string | undefined> = { ...process.env };
      for (const name of ['MONGO_URL', 'REDIS_URL', 'QUEUE_PREFIX', 'PUBLIC_BASE_URL', 'PORT', 'STACK_DIR']) delete env[name];
      const { stdout } = await run('bash', ['-c', `set -euo pipefail\n${block}`], { cwd: REPO_ROOT, env });
      const ehrId = /"external_provider_id":"(ehr-\d+)"/.exec(stdout)?.[1];
      expect(ehrId, stdout).toBeDefined();
      return { ehrId, callbacks: JSON.parse(stdout.slice(stdout.indexOf('{\n'))).callbacks };
    };
    const firstRun = await runBlock(out);
    expect(firstRun.callbacks).toEqual([expect.objectContaining({ msg: 'verified callback', type: 'user.created', external_provider_id: firstRun.ehrId })]);

    // A second `pnpm stack` on the same folder (another port) refuses to start and touches none of
    // the running one's files: it overwrote state.json, the key pair and the logs, and at its stop
    // removed the env file the first one, still running, had written for `pnpm cli`.
    const files = () => Object.fromEntries(readdirSync(dir).sort().map((f) => [f, readFileSync(join(dir, f), 'utf8')]));
    const before = files();
    const twice = start({ PORT: String(await freePort()) });
    const code = await Promise.race([twice.exited, new Promise((r) => setTimeout(() => r('still running'), 60_000))]);
    expect(code, twice.output()).toBe(1);
    const runningPid = Number(readFileSync(join(dir, 'stack.pid'), 'utf8'));
    expect(() => process.kill(runningPid, 0), 'stack.pid names the running stack').not.toThrow();
    expect(twice.output()).toContain(`[stack] failed: a pnpm stack is already running on ${dir} (PID ${runningPid})`);
    expect(twice.output()).toMatch(/run a second one beside it with a folder, a port and a database of its own: STACK_DIR=\S+ PORT=\d+ STACK_DATABASE=\S+ pnpm stack/);
    expect(twice.output()).not.toContain('building/starting FerretDB');
    expect(files()).toEqual(before);

    // The second stack it suggests (README: "To run a second stack beside the first"), run as
    // printed while the first runs: up on its own port, the first one still answering on its.
    const suggested = /of its own: (STACK_DIR=(\S+) PORT=(\d+) STACK_DATABASE=(\S+) pnpm stack)/.exec(twice.output());
    expect(suggested, twice.output()).not.toBeNull();
    const [, command, besideDir, besidePort, besideDatabase] = suggested!;
    expect([besideDir, besideDatabase]).toEqual([`${dir}-2`, `${database}_2`]);
    // The README's example is this suggestion for the default folder, port and database.
    expect(readFileSync(join(REPO_ROOT, 'README.md'), 'utf8')).toContain('`STACK_DIR=.local/stack-2 PORT=3001 STACK_DATABASE=connect_local_2 pnpm stack`');
    dirs.push(besideDir!);
    extraDatabases.push(besideDatabase!);
    const besideEnv: NodeJS.ProcessEnv = { ...process.env };
    delete besideEnv.QUEUE_PREFIX;
    const beside = spawn('bash', ['-c', command!], { cwd: REPO_ROOT, env: besideEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    stacks.push(beside);
    let besideOut = '';
    beside.stdout.on('data', (d: Buffer) => (besideOut += d.toString()));
    beside.stderr.on('data', (d: Buffer) => (besideOut += d.toString()));
    const besideExited = new Promise((r) => beside.once('exit', r));
    await waitFor(() => besideOut.includes('ready in'), 120_000, 'the second stack to be ready');
    expect(besideOut).toContain(`base URL      http://localhost:${besidePort}/v1/connect/server`);
    expect((await fetch(`http://127.0.0.1:${besidePort}/readyz`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);
    process.kill(-beside.pid!, 'SIGINT');
    await besideExited;
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 'the first stack outlives the second').toBe(200);

    // pnpm exits on the signal itself; the stack script behind it finishes its shutdown sequence.
    process.kill(-first.child.pid!, 'SIGINT');
    await first.exited;
    await waitFor(() => first.output().includes('[stack] stopped'), 60_000, 'the stack to stop');
    await waitFor(async () => fetch(`http://127.0.0.1:${port}/livez`).then(() => false, () => true), 10_000, 'the API to be gone');
    expect(existsSync(join(dir, 'env')), 'the env file of a stopped stack is removed').toBe(false);
    expect(existsSync(join(dir, 'stack.pid')), 'the pid file of a stopped stack is removed').toBe(false);
    // A stack killed with -9 leaves its pid file: a dead PID there does not stop the next one.
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    writeFileSync(join(dir, 'stack.pid'), `${dead.pid}\n`);

    // The second run also delivers to a receiver of the operator's own, on a queue prefix of the operator's choosing.
    const mine = await startReceiver();
    const prefix = `own-${database}`;
    const ownTargets = JSON.stringify([{ name: 'mine', url: mine.url, secrets: ['mine-secret'] }]);
    const second = start({ DOWNSTREAM_TARGETS: ownTargets, QUEUE_PREFIX: prefix, WORKER_RETRY_SCHEDULE: '1s,2s' });
    await waitFor(() => second.output().includes('ready in'), 120_000, 'the stack to be ready again');
    expect(readFileSync(join(dir, 'env'), 'utf8')).toContain(`QUEUE_PREFIX='${prefix}'`);
    // The worker's delivery settings too, so jobs the CLI adds retry as the worker's own do.
    expect(readFileSync(join(dir, 'env'), 'utf8')).toContain(`WORKER_RETRY_SCHEDULE='1s,2s'`);
    expect(second.output()).toMatch(/targets\s+demo-receiver, mine\n/);
    // The hint for another terminal names the STACK_DIR this stack runs on.
    expect(second.output()).toContain(`; there, run \`STACK_DIR=${dir} pnpm cli …\``);
    // In the shell that started the stack, its DOWNSTREAM_TARGETS still exported: the CLI sees the
    // running worker's whole list, not that part of it (nor, with DOWNSTREAM_TARGETS_FILE, two lists).
    for (const exported of [{ DOWNSTREAM_TARGETS: ownTargets }, { DOWNSTREAM_TARGETS_FILE: join(dir, 'no-such-targets.json') }]) {
      const env: Record<string, string | undefined> = { ...process.env, STACK_DIR: dir, ...exported };
      for (const name of ['MONGO_URL', 'REDIS_URL', 'QUEUE_PREFIX']) delete env[name];
      const { stdout, stderr } = await run(process.execPath, ['packages/cli/bin/cli.js', 'targets', 'list'], { cwd: REPO_ROOT, env });
      expect(JSON.parse(stdout).targets.map((t: { name: string }) => t.name), stderr).toEqual(['demo-receiver', 'mine']);
      expect(stderr).toContain(`its targets (those the running worker delivers to) instead of ${Object.keys(exported)[0]} from the environment`);
    }
    expect(second.output()).toContain('reusing the demo organization');
    expect(second.output()).toContain(clientId);
    // Same database, same receiver.log (appended): the block shows this run's callback only.
    const secondRun = await runBlock(second.output());
    expect(secondRun.ehrId).not.toBe(firstRun.ehrId);
    expect(secondRun.callbacks).toEqual([expect.objectContaining({ external_provider_id: secondRun.ehrId })]);
    await eventually(() => mine.accepted().some((c) => userOf(c) === secondRun.ehrId && c.body.type === 'user.created'), 30_000);
    expect(nablaSignatureVerifies(mine.accepted().find((c) => userOf(c) === secondRun.ehrId)!, 'mine-secret')).toBe(true);
    await mine.close();
    const { stdout: all } = await run('pnpm', ['-s', 'stack', 'callbacks'], { cwd: REPO_ROOT, env: { ...process.env, STACK_DIR: dir } });
    expect(JSON.parse(all).callbacks.map((c: { external_provider_id: string }) => c.external_provider_id)).toEqual([secondRun.ehrId]);
    // SIGTERM to pnpm alone, as a supervisor or a script that started it sends it: it reaches the
    // stack script, which stops everything it started before pnpm exits 0.
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(second.output()).toContain('[stack] stopped');
    expect(existsSync(join(dir, 'stack.pid'))).toBe(false);
    const { stdout: processes } = await run('ps', ['-eo', 'args']);
    expect(processes.split('\n').filter((p) => p.includes(database))).toEqual([]);
  }, 300_000);
});

describe('pnpm stack: a target of one\'s own named as the demo one', () => {
  it('stops before starting anything, naming where the name was given (the worker named an index of a list the operator never wrote)', async () => {
    const dir = stackDir();
    const file = join(dir, 'targets.json');
    writeFileSync(file, JSON.stringify([{ name: 'demo-receiver', url: 'http://127.0.0.1:9/', secrets: ['x'] }]));
    const failed = await run(process.execPath, ['--import', 'tsx', 'scripts/local-stack.ts'], {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: String(await freePort()), STACK_DIR: dir, STACK_DATABASE: database, DOWNSTREAM_TARGETS_FILE: file },
    }).then(
      () => ({ code: 0, stdout: '' }),
      (err: { code: number; stdout: string }) => err,
    );
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain(`[stack] failed: DOWNSTREAM_TARGETS_FILE (${file}): [0].name: "demo-receiver" is the stack's own demo target; give yours another name`);
    expect(failed.stdout).not.toContain('building/starting FerretDB');
  }, 60_000);
});

describe('pnpm stack: stopping when whoever read its output is gone', () => {
  it('a closed terminal (its stdout and stderr gone, then SIGHUP) still stops every process it started, and it exits 0; its LOG_LEVEL is passed on (a debug line in the API log)', async () => {
    const dir = stackDir();
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', 'scripts/local-stack.ts'], {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: String(port), STACK_DIR: dir, STACK_DATABASE: database, LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    stacks.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor(() => out.includes('ready in'), 120_000, 'the stack to be ready');
    // The stack set info over it before: a debug line (a request's "incoming request") shows it is taken.
    expect((await fetch(`http://127.0.0.1:${port}/livez`)).status).toBe(200);
    await waitFor(() => readFileSync(join(dir, 'api.log'), 'utf8').includes('"level":20'), 10_000, 'a debug line in api.log');
    // Our ends of its stdout and stderr closed: its next writes ("stopping…") fail with EPIPE.
    child.stdout!.destroy();
    child.stderr!.destroy();
    child.kill('SIGHUP');
    expect(await exited).toBe(0);
    const { stdout: processes } = await run('ps', ['-eo', 'args']);
    expect(processes.split('\n').filter((p) => p.includes(database))).toEqual([]);
    await waitFor(async () => fetch(`http://127.0.0.1:${port}/livez`).then(() => false, () => true), 10_000, 'the API to be gone');
  }, 180_000);
});

describe('pnpm stack: arguments', () => {
  it('anything but `callbacks` (a typo of it, an option meant as a setting) is a usage error naming the accepted forms, exit 2, and starts nothing (it started a whole second stack); --help prints plain text, exit 0', async () => {
    const dir = join(stackDir(), 'never-started');
    const port = await freePort();
    // A timeout: without the check each of these starts a stack, which the timeout's SIGTERM stops.
    const stack = (args: string[]) =>
      run('pnpm', ['-s', 'stack', ...args], { cwd: REPO_ROOT, timeout: 60_000, env: { ...process.env, STACK_DIR: dir, PORT: String(port), STACK_DATABASE: database } }).then(
        ({ stdout }) => ({ code: 0, stdout }),
        (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
      );
    for (const args of [['bogus'], ['callback', '--wait', 'X'], ['--port', '3001'], ['--', 'bogus']]) {
      const r = await stack(args);
      expect(r.stdout, args.join(' ')).not.toContain('[stack]');
      const given = args[0] === '--' ? args[1] : args[0];
      expect(JSON.parse(r.stdout), args.join(' ')).toEqual({
        error: { kind: 'usage', message: expect.stringContaining(`unknown argument "${given}"`) },
      });
      const { message } = JSON.parse(r.stdout).error;
      for (const form of ['`pnpm stack`', '`pnpm -s stack callbacks [--wait EXTERNAL_PROVIDER_ID] [--timeout SECONDS]`', 'PORT=3001 pnpm stack']) expect(message).toContain(form);
      expect(r.code).toBe(2);
    }
    expect((await stack(['callbaks'])).stdout).toContain('(did you mean `callbacks`?)');
    expect(existsSync(dir), 'nothing started: its folder was not even made').toBe(false);

    const help = await stack(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: pnpm stack\n/);
    expect(help.stdout).toContain('STACK_DIR');
    const callbacksHelp = await stack(['callbacks', '--help']);
    expect(callbacksHelp.code).toBe(0);
    expect(callbacksHelp.stdout).toMatch(/^usage: pnpm -s stack callbacks \[--wait EXTERNAL_PROVIDER_ID\] \[--timeout SECONDS\]\n/);
    expect(callbacksHelp.stdout).toContain('--timeout S');
    expect(existsSync(dir)).toBe(false);
  }, 120_000);
});

describe('pnpm -s stack callbacks: errors are one JSON document with a non-zero exit', () => {
  it('an unknown option, --wait without a value and a bad --timeout are usage errors (exit 2); with no stack ever run there it says so (exit 1) and creates nothing', async () => {
    const dir = join(stackDir(), 'never-started');
    const callbacks = (args: string[]) =>
      run('pnpm', ['-s', 'stack', 'callbacks', ...args], { cwd: REPO_ROOT, env: { ...process.env, STACK_DIR: dir } }).then(
        ({ stdout }) => ({ code: 0, stdout }),
        (err: { code: number; stdout: string }) => ({ code: err.code, stdout: err.stdout }),
      );
    for (const [args, message] of [
      [['--bogus'], /^unknown option --bogus for pnpm -s stack callbacks; its options: --wait, --timeout, --help; usage: pnpm -s stack callbacks/],
      [['--wait'], /^--wait needs a value; usage: /],
      [['--timeout', 'soon'], /--timeout must be a number of seconds/],
    ] as const) {
      const r = await callbacks([...args]);
      expect(JSON.parse(r.stdout), args.join(' ')).toEqual({ error: { kind: 'usage', message: expect.stringMatching(message) } });
      expect(r.code).toBe(2);
    }
    const none = await callbacks([]);
    expect(JSON.parse(none.stdout)).toEqual({ error: { kind: 'unavailable', message: expect.stringContaining('no pnpm stack has run with STACK_DIR') } });
    expect(none.code).toBe(1);
    expect(existsSync(dir)).toBe(false);
  }, 60_000);
});
