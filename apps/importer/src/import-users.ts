import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { AuthenticationError, ConnectApiError, ConnectNetworkError, EmailConflictError, EmailMismatchError, NotFoundError, RateLimitedError, ValidationError, type ConnectClient } from '@connect/client';
import { InputFileError, readUserRows, type RowError, type ReadProgress } from './read-user-rows.ts';

export interface ImportCounts {
  total: number;
  created: number;
  updated: number;
  unchanged: number;
  failed: number;
}

export interface ImportOptions {
  file: string;
  /** Absent for a dry run: rows are only validated. */
  client?: ConnectClient;
  concurrency: number;
  /** Where failed rows go, one JSON line each: `{line, error: {kind, message, errors?}, row}`. */
  report?: Writable;
  onProgress?: (counts: ImportCounts, read: ReadProgress) => void;
  /**
   * How many rows in a row may fail because the API could not be reached (the client's
   * retries spent) before the import stops; `unreachableLimit(concurrency)` by default.
   * Before the API has answered anything, the first such row stops it.
   */
  unreachableAfter?: number;
  /**
   * Stops the import (SIGINT/SIGTERM): no row is read once it aborts; the requests in flight
   * get `interruptGraceMs` to finish, then are abandoned and their rows fail (kind `interrupted`).
   */
  interrupt?: AbortSignal;
  /** 10 s by default. */
  interruptGraceMs?: number;
}

/** How long the requests in flight get to finish once the import is interrupted. */
export const INTERRUPT_GRACE_MS = 10_000;

/** The reason a request still in flight when the grace after an interrupt ran out was abandoned. */
export class InterruptedError extends Error {}

/**
 * Rows that may fail in a row, the API unreachable each time, before the import stops:
 * twice the concurrency (the rows in flight when the API went away all fail together,
 * and one more round of them found it still away), at least 8.
 */
export const unreachableLimit = (concurrency: number) => Math.max(8, 2 * concurrency);

/**
 * Failures that are the same for every row: credentials refused, the API unreachable.
 * The import stops rather than fail a million rows one by one; `counts` is where it stopped.
 */
export class ImportAbortedError extends Error {
  counts?: ImportCounts;
  constructor(
    readonly kind: string,
    message: string,
  ) {
    super(message);
  }
}

function rowErrorOf(err: unknown): RowError {
  if (err instanceof InterruptedError) return { kind: 'interrupted', message: err.message };
  if (err instanceof ValidationError) return { kind: 'validation', message: err.message, errors: err.errors };
  if (err instanceof EmailMismatchError) return { kind: 'email_mismatch', message: err.message };
  if (err instanceof EmailConflictError) return { kind: 'email_conflict', message: err.message };
  if (err instanceof RateLimitedError) return { kind: 'rate_limited', message: err.message };
  if (err instanceof NotFoundError) return { kind: 'not_found', message: err.message };
  if (err instanceof ConnectApiError) return { kind: 'api', message: `${err.status}: ${err.message}` };
  if (err instanceof ConnectNetworkError) return { kind: 'unavailable', message: err.message };
  return { kind: 'internal', message: (err as Error).message };
}

/**
 * Streams the file, validates each row with the server's schema, and upserts the
 * valid ones through the client SDK with at most `concurrency` requests in flight.
 * The reader is not asked for the next row while every slot is busy, so memory
 * stays flat however long the file is. Safe to run again: every call is an upsert.
 * Rows with the same external_provider_id are sent one after the other, in file order
 * (a row waits for the one before it with that id): the last row of the file wins, as it
 * would have at concurrency 1. Other rows are not held up.
 */
export async function importUsers(options: ImportOptions): Promise<ImportCounts> {
  const counts: ImportCounts = { total: 0, created: 0, updated: 0, unchanged: 0, failed: 0 };
  const read: ReadProgress = { bytesRead: 0 };
  const inFlight = new Set<Promise<void>>();
  let aborted: ImportAbortedError | undefined;
  // The API answered at least once (any status); rows failed in a row with it unreachable.
  let answered = false;
  let unreachableInARow = 0;
  const unreachableAfter = options.unreachableAfter ?? unreachableLimit(options.concurrency);
  const onFailure = (err: unknown) => {
    if (err instanceof ConnectNetworkError) {
      unreachableInARow++;
      if (!aborted && (!answered || unreachableInARow >= unreachableAfter)) {
        const why = answered ? `${unreachableInARow} rows in a row failed so` : 'it has not answered once';
        aborted = new ImportAbortedError('unavailable', `the API could not be reached, the client's retries spent (${err.message}), and ${why}: the import stopped. Run it again once the API is up; rows already imported come back as unchanged`);
      }
      return;
    }
    if (err instanceof ConnectApiError) {
      answered = true;
      unreachableInARow = 0;
    }
    if (err instanceof AuthenticationError && !aborted) aborted = new ImportAbortedError('authentication', `the API refused the client's credentials: ${err.message}`);
  };

  const fail = async (line: number, error: RowError, row: unknown) => {
    counts.failed++;
    if (options.report && !options.report.write(`${JSON.stringify({ line, error, row })}\n`)) await once(options.report, 'drain');
  };
  // Interrupted: no more rows are read at once; the requests in flight are abandoned after the grace.
  const { interrupt } = options;
  const requests = new AbortController();
  let grace: NodeJS.Timeout | undefined;
  let interrupted: Promise<void> | undefined;
  if (interrupt) {
    interrupted = new Promise<void>((resolve) => {
      const onInterrupt = () => {
        grace = setTimeout(
          () => requests.abort(new InterruptedError(`the import was interrupted and the API had not answered within ${Math.round((options.interruptGraceMs ?? INTERRUPT_GRACE_MS) / 1000)} s: the request was abandoned; run the file again (rows already imported come back as unchanged)`)),
          options.interruptGraceMs ?? INTERRUPT_GRACE_MS,
        );
        resolve();
      };
      if (interrupt.aborted) onInterrupt();
      else interrupt.addEventListener('abort', onInterrupt, { once: true });
    });
  }
  const stopping = () => aborted !== undefined || interrupt?.aborted === true;
  // The last row sent (or waiting) for each external_provider_id still in flight.
  const lastOfId = new Map<string, Promise<void>>();
  const tick = setInterval(() => options.onProgress?.(counts, read), 1000);
  try {
    for await (const row of readUserRows(options.file, read)) {
      if (stopping()) break;
      const client = row.ok ? options.client : undefined;
      if (client) {
        // A slot first: a row read while the import stops is neither counted nor sent.
        while (inFlight.size >= options.concurrency && !stopping()) await Promise.race(interrupted ? [...inFlight, interrupted] : inFlight);
        if (stopping()) break;
      }
      counts.total++;
      if (!row.ok) {
        await fail(row.line, row.error, row.raw);
        continue;
      }
      if (!client) continue;
      const id = row.body.external_provider_id;
      const send = () =>
        client.upsertUser(row.body, { signal: requests.signal }).then(
          ({ outcome }) => {
            answered = true;
            unreachableInARow = 0;
            counts[outcome]++;
          },
          (err: unknown) => {
            onFailure(err);
            return fail(row.line, rowErrorOf(err), row.raw);
          },
        );
      // Same id as a row still in flight: sent once that one has its answer, so file order wins.
      const previous = lastOfId.get(id);
      const task: Promise<void> = (previous ? previous.then(send, send) : send()).finally(() => {
        inFlight.delete(task);
        if (lastOfId.get(id) === task) lastOfId.delete(id);
      });
      lastOfId.set(id, task);
      inFlight.add(task);
    }
    await Promise.all(inFlight);
  } catch (err) {
    // The file turned out unreadable part-way (a quote never closed, a line too long): the rows
    // already sent finish and are counted, and the stop says how far the import got.
    await Promise.allSettled(inFlight);
    if (!(err instanceof InputFileError) || counts.total === 0) throw err;
    const stop = new ImportAbortedError('input', `${err.message}: the import stopped there. Fix the file and run it again; rows already imported come back as unchanged`);
    stop.counts = { ...counts };
    throw stop;
  } finally {
    clearInterval(tick);
    clearTimeout(grace);
  }
  options.onProgress?.(counts, read);
  if (aborted) {
    aborted.counts = { ...counts };
    throw aborted;
  }
  return counts;
}
