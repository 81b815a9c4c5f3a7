/**
 * pnpm import-users --base-url URL --client-id ID --private-key-file F --file users.csv|users.ndjson
 *                   [--audience URL] [--concurrency 8] [--max-retries 8] [--report failed.ndjson] [--dry-run]
 *
 * Bulk upsert through the public API with @connect/client. The root script runs it
 * with a small young generation and a 96 MB old-space cap: the live heap is ~10 MB,
 * and without the caps V8 lets a fast dry run grow its RSS past 150 MB before it
 * collects (measured over 1,000,000 rows: 170 MB without, under 100 MB with). Progress on stderr (a
 * bar on a terminal, JSON lines otherwise); one JSON document on stdout:
 * {"total","created","updated","unchanged","failed","seconds"}, or
 * {"error":{"kind","message"}} with a non-zero exit. Interrupted (SIGINT, SIGTERM: Ctrl-C,
 * or pnpm forwarding them), it reads no more rows, gives the requests in flight 10 s to
 * finish, and prints the same document with "interrupted": true, exit 130.
 */
import { createWriteStream, fchmodSync, openSync, readFileSync, statSync } from 'node:fs';
import { finished } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { checkAudience, checkBaseUrl, ConnectClient, InvalidPrivateKeyError } from '@connect/client';
import { parseArgsProblem } from '@connect/shared/input-rules';
import { ImportAbortedError, importUsers, INTERRUPT_GRACE_MS, type ImportCounts } from './import-users.ts';
import { InputFileError, type ReadProgress } from './read-user-rows.ts';

const USAGE = `Usage: pnpm import-users --base-url URL --client-id ID --private-key-file F --file users.csv|users.ndjson
                         [--audience URL] [--concurrency 8] [--max-retries 8] [--report failed.ndjson] [--dry-run]

Upserts every row of the file through the API (POST /users), validating each row
with the API's schema first. CSV columns: provider_email, external_provider_id,
specialty, other_specialty_name, speech_locale, secondary_speech_locale (an empty
cell keeps the current value). NDJSON lines: a POST /users body or the same flat keys.

  --dry-run        validate only; nothing is sent (no credentials needed)
  --audience URL   the token endpoint's URL as the API knows itself (its PUBLIC_BASE_URL
                   + base path + /oauth/token), when --base-url reaches it by another
                   name (an internal host, a proxy); --base-url + /oauth/token by default
  --report F       write each failed row as a JSON line {line, error, row}
  --concurrency N  requests in flight, 1 to 256 (default 8)
  --max-retries N  retries of a request after a 429/502/503/504 or a network error,
                   0 to 20 (default 8)

Prints {"total","created","updated","unchanged","failed","seconds"} on stdout.
Interrupted (Ctrl-C, SIGTERM), it reads no more rows, lets the requests in flight
finish (at most 10 s, then they fail as "interrupted"), completes --report, and
prints the same document with "interrupted": true, exit 130.
Stops with {"error":{"kind":"unavailable",...}} when the API cannot be reached: at
the first row that fails so before the API has answered once, else after twice
--concurrency rows (at least 8) fail so in a row.
`;

class UsageError extends Error {}

function fail(kind: string, message: string): never {
  process.stdout.write(`${JSON.stringify({ error: { kind, message } })}\n`);
  // As the CLI's: 2 for what the operator typed or configured, 1 for everything else.
  process.exit(kind === 'usage' || kind === 'configuration' ? 2 : 1);
}

/**
 * A client message in the importer's words: the client names its own options (`baseUrl`,
 * "the audience option"), which the importer takes as --base-url and --audience.
 */
function inOptionNames(message: string): string {
  return message.replaceAll('the audience option', '--audience').replace(/\bbaseUrl\b/g, '--base-url');
}

function describe(c: ImportCounts): string {
  return `rows read before it stopped: ${c.total}, ${c.created} created, ${c.updated} updated, ${c.unchanged} unchanged, ${c.failed} failed`;
}

function maxRssMb(): number {
  // maxRSS is in kilobytes: the peak resident memory of this process over its whole run.
  return Math.round((process.resourceUsage().maxRSS / 1024) * 10) / 10;
}

function progressReporter(fileSize: number, started: number, dryRun: boolean): { update: (c: ImportCounts, r: ReadProgress) => void; stop: () => void } {
  // Rows finished: answered by the API, or (dry run) validated.
  const done = (c: ImportCounts) => (dryRun ? c.total : c.created + c.updated + c.unchanged + c.failed);
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { stream: process.stderr, format: 'import [{bar}] {percentage}% | {rows} rows | {rate} rows/s | ETA {eta_formatted} | failed {failed}', etaBuffer: 50 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(Math.max(1, fileSize), 0, { rows: 0, rate: 0, failed: 0 });
    return {
      update: (c, r) => bar.update(r.bytesRead, { rows: done(c), rate: Math.round(done(c) / Math.max(0.001, (Date.now() - started) / 1000)), failed: c.failed }),
      stop: () => bar.stop(),
    };
  }
  return {
    update: (c, r) => {
      const seconds = (Date.now() - started) / 1000;
      const fraction = fileSize > 0 ? r.bytesRead / fileSize : 1;
      process.stderr.write(
        `${JSON.stringify({
          event: 'progress',
          ...c,
          done: done(c),
          rows_per_second: Math.round(done(c) / Math.max(0.001, seconds)),
          percent: Math.round(fraction * 1000) / 10,
          eta_seconds: fraction > 0 ? Math.round((seconds / fraction) * (1 - fraction)) : null,
          rss_mb: Math.round(process.memoryUsage.rss() / 1048576),
        })}\n`,
      );
    },
    stop: () => {},
  };
}

async function main(): Promise<void> {
  // Any number of SIGINT/SIGTERM is one request to stop: Ctrl-C reaches the whole process group,
  // and pnpm forwards SIGINT, then SIGTERM, through bin/import-users.js. Without a handler the
  // process died with nothing on stdout and requests in flight lost.
  const interrupt = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupt.signal.aborted) return;
    process.stderr.write(`${JSON.stringify({ event: 'interrupted', signal, message: `no more rows are read; the requests in flight get ${INTERRUPT_GRACE_MS / 1000} s to finish` })}\n`);
    interrupt.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const options = {
    'base-url': { type: 'string' },
    'client-id': { type: 'string' },
    'private-key-file': { type: 'string' },
    audience: { type: 'string' },
    file: { type: 'string' },
    concurrency: { type: 'string', default: '8' },
    // More retries than the client's default: a long import outlives a rate-limit window
    // (Retry-After up to a minute) or a short outage, and a row should not fail for that.
    'max-retries': { type: 'string', default: '8' },
    report: { type: 'string' },
    'dry-run': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  } as const;
  let values;
  let tokens;
  try {
    ({ values, tokens } = parseArgs({ options, strict: true, allowPositionals: false, tokens: true }));
  } catch (err) {
    // parseArgs' own text names none of the options taken.
    return fail('usage', parseArgsProblem(err, 'pnpm import-users', options) ?? (err as Error).message);
  }
  // An option given twice is refused, as the CLI does: parseArgs keeps the last silently.
  const seen = new Set<string>();
  for (const token of tokens ?? []) {
    if (token.kind !== 'option') continue;
    if (seen.has(token.name)) return fail('usage', `--${token.name} is given twice`);
    seen.add(token.name);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  try {
    if (!values.file) throw new UsageError('--file is required');
    const concurrency = Number(values.concurrency);
    // Digits only, like --max-retries: Number() would take `1e1`, `0x10` and ` 8`.
    if (!/^\d+$/.test(values.concurrency!) || concurrency < 1 || concurrency > 256) throw new UsageError('--concurrency must be an integer from 1 to 256');
    const maxRetries = Number(values['max-retries']);
    if (!/^\d+$/.test(values['max-retries']!) || maxRetries > 20) throw new UsageError('--max-retries must be an integer from 0 to 20');
    let client: ConnectClient | undefined;
    if (!values['dry-run']) {
      for (const name of ['base-url', 'client-id', 'private-key-file'] as const) if (!values[name]) throw new UsageError(`--${name} is required (or use --dry-run)`);
      const baseUrl = values['base-url']!;
      // Checked before the key is read: a mistyped URL is the operator's usage error, before any row is read.
      try {
        checkBaseUrl(baseUrl);
      } catch (err) {
        throw new UsageError(`--base-url ${(err as Error).message.replace(/^baseUrl /, '')}`);
      }
      const audience = values.audience;
      if (audience !== undefined) {
        try {
          checkAudience(audience);
        } catch (err) {
          throw new UsageError(`--audience ${(err as Error).message.replace(/^audience /, '')}`);
        }
      }
      const keyFile = values['private-key-file']!;
      let pem: string;
      try {
        pem = readFileSync(keyFile, 'utf8');
      } catch {
        throw new UsageError(`cannot read --private-key-file ${keyFile}`);
      }
      try {
        client = new ConnectClient({ baseUrl, clientId: values['client-id']!, privateKey: pem, maxRetries, ...(audience !== undefined ? { audience } : {}) });
      } catch (err) {
        if (err instanceof InvalidPrivateKeyError) return fail('configuration', `--private-key-file ${keyFile} must be a PEM private key (PKCS#8 or PKCS#1); this file ${err.reason}`);
        return fail('configuration', (err as Error).message);
      }
    }
    let input: ReturnType<typeof statSync>;
    try {
      input = statSync(values.file);
    } catch {
      throw new UsageError(`no such file: ${values.file}`);
    }
    // A pipe or a device (`--file /dev/stdin`, `<(zcat users.csv.gz)`) is read like a file; a directory is not.
    if (input.isDirectory()) throw new UsageError(`--file ${values.file} is a directory`);
    const fileSize = input.size;
    // Opened here, synchronously: a report that cannot be written (no such directory, no
    // permission) is a usage error before any row is sent, not a stream error mid-run.
    let report: ReturnType<typeof createWriteStream> | undefined;
    if (values.report) {
      const reportFile = values.report;
      // Opening the report empties it: were it the input (by any path), the rows would be gone before a single one was read.
      const existing = statSync(reportFile, { throwIfNoEntry: false });
      if (existing && existing.dev === input.dev && existing.ino === input.ino) throw new UsageError(`--report ${reportFile} is the --file being imported; give the report another path`);
      let fd: number;
      try {
        // Owner-only: the report holds the failed rows as read, emails included (the mode given to
        // open applies to a new file only; an existing one is narrowed too).
        fd = openSync(reportFile, 'w', 0o600);
        fchmodSync(fd, 0o600);
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        throw new UsageError(`cannot write --report ${reportFile}: ${e.code === 'ENOENT' ? 'its directory does not exist' : e.message}`);
      }
      report = createWriteStream('', { fd });
      // A write that fails later (disk full) stops the run with one JSON document, not a stack trace.
      report.on('error', (err) => fail('internal', `cannot write --report ${reportFile}: ${err.message}`));
    }
    const started = Date.now();
    const progress = progressReporter(fileSize, started, values['dry-run']!);
    let counts: ImportCounts;
    try {
      counts = await importUsers({ file: values.file, client, concurrency, report, onProgress: progress.update, interrupt: interrupt.signal });
    } finally {
      progress.stop();
      if (report) {
        report.end();
        await finished(report);
      }
    }
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    // Last stderr line: the peak memory, so a run can be checked for staying flat.
    process.stderr.write(`${JSON.stringify({ event: 'done', max_rss_mb: maxRssMb(), rows_per_second: Math.round(counts.total / Math.max(0.1, seconds)) })}\n`);
    const interrupted = interrupt.signal.aborted;
    process.stdout.write(`${JSON.stringify({ total: counts.total, created: counts.created, updated: counts.updated, unchanged: counts.unchanged, failed: counts.failed, seconds, ...(interrupted ? { interrupted } : {}) })}\n`);
    // 128 + SIGINT, whichever signal it was: the shell's convention for "stopped by the user". Exits
    // at once: a token request abandoned by the rows that waited on it would hold the process open.
    if (interrupted) process.exit(130);
  } catch (err) {
    if (err instanceof UsageError) return fail('usage', err.message);
    if (err instanceof InputFileError) return fail('input', err.message);
    if (err instanceof ImportAbortedError) return fail(err.kind, `${err.kind === 'authentication' ? inOptionNames(err.message) : err.message}${err.counts ? ` (${describe(err.counts)})` : ''}`);
    return fail('internal', (err as Error).message);
  }
}

await main();
