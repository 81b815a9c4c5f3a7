import { isUtf8 } from 'node:buffer';
import { createReadStream } from 'node:fs';
import { parse } from 'csv-parse';
import { fieldErrorsOf, prototypeMembersIn, repeatedMembersIn, upsertProviderUserBodySchema, type UpsertProviderUserBody } from '@connect/shared/contract';
import { maskEmailsIn } from '@connect/shared/input-rules';

/** The CSV columns, in the order a template would list them. */
export const CSV_COLUMNS = ['provider_email', 'external_provider_id', 'specialty', 'other_specialty_name', 'speech_locale', 'secondary_speech_locale'] as const;
const FLAT_SETTINGS = ['specialty', 'other_specialty_name', 'speech_locale', 'secondary_speech_locale'] as const;

export interface RowError {
  kind: string;
  message: string;
  errors?: { path: string; message: string }[];
}

/** One row of the file: its line number (1-based, the header is line 1) and either a request body or why it is not one. */
export type UserRow = { line: number; raw: unknown } & ({ ok: true; body: UpsertProviderUserBody } | { ok: false; error: RowError });

/** A problem with the file as a whole (unreadable, not CSV, unknown columns): the import stops. */
export class InputFileError extends Error {}

/** The longest line (NDJSON) or record (CSV) read: a user row is a few hundred bytes, the API takes 64 KiB. */
export const MAX_LINE_CHARS = 1 << 20;

export interface ReadProgress {
  /** Bytes of the file read so far: with the file's size, the progress bar's fraction and ETA. */
  bytesRead: number;
}

/**
 * A flat row (CSV, or NDJSON with the same keys) as a POST /users body. An empty
 * cell is absent, which the API reads as "keep the current value"; settings are
 * sent only when a settings column has a value, and then need `speech_locale`
 * like any request.
 */
export function bodyOfFlatRow(row: Record<string, unknown>): Record<string, unknown> {
  const value = (key: string) => {
    const v = row[key];
    return typeof v === 'string' ? (v.trim() === '' ? undefined : v.trim()) : v === null ? undefined : v;
  };
  const body: Record<string, unknown> = {};
  // Other keys (provider_email, external_provider_id) are kept even when empty: they are
  // required, and the schema then says "must not be empty" rather than "received undefined".
  for (const [key, v] of Object.entries(row)) {
    if (!(FLAT_SETTINGS as readonly string[]).includes(key) && v !== undefined) body[key] = typeof v === 'string' && key !== 'external_provider_id' ? v.trim() : v;
  }
  if (FLAT_SETTINGS.some((k) => value(k) !== undefined)) {
    const settings: Record<string, unknown> = {};
    if (value('speech_locale') !== undefined) settings.speech_locale = value('speech_locale');
    if (value('secondary_speech_locale') !== undefined) settings.secondary_speech_locale = value('secondary_speech_locale');
    if (value('specialty') !== undefined) settings.specialty = { kind: value('specialty'), ...(value('other_specialty_name') !== undefined ? { other_specialty_name: value('other_specialty_name') } : {}) };
    else if (value('other_specialty_name') !== undefined) settings.specialty = { other_specialty_name: value('other_specialty_name') };
    body.settings = settings;
  }
  return body;
}

/** Validates with the server's own schema, so a row refused here would be refused by the API too. */
export function validateRow(line: number, raw: unknown): UserRow {
  const candidate = raw && typeof raw === 'object' && !Array.isArray(raw) && !('settings' in raw) ? bodyOfFlatRow(raw as Record<string, unknown>) : raw;
  const parsed = upsertProviderUserBodySchema.safeParse(candidate, { reportInput: true });
  if (parsed.success) return { line, raw, ok: true, body: parsed.data };
  // The API's own words ("unknown member", "is required", ...), one error per field.
  const errors = fieldErrorsOf(parsed.error.issues, [], true);
  return { line, raw, ok: false, error: { kind: 'validation', message: errors.map((e) => `${e.path || '(row)'}: ${e.message}`).join('; '), errors } };
}

const notUtf8 = (line: number): RowError => ({ kind: 'validation', message: `the row is not valid UTF-8 (line ${line}); save the file as UTF-8 (a Latin-1 or Windows-1252 export is not)` });

/** How many bytes at the end of `buf` begin a multi-byte UTF-8 sequence that the next chunk completes. */
function incompleteTail(buf: Buffer): number {
  for (let i = 1; i <= Math.min(3, buf.length); i++) {
    const b = buf[buf.length - i]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back for the lead byte
    const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return length > i ? i : 0;
  }
  return 0;
}

/**
 * Line numbers and bytes that are not UTF-8, by position in the file, found as the bytes
 * stream past: the parser would decode such bytes as U+FFFD without a word. It sees each
 * chunk before the parser does, so a record the parser yields has been checked. Records are
 * matched to lines by their byte range (the parser's `info.bytes`), not by the parser's own
 * line count: that one counts a CR LF inside a quoted cell, or a lone CR, as line breaks of
 * their own, and a row after such a cell was then matched with its neighbour's bad bytes (the
 * bad row imported with U+FFFD, a good one refused). Lines are counted as editors count them: a
 * line ends at LF, CR LF, or a CR alone (a classic Mac file).
 */
class Utf8LineCheck {
  /** Lines holding bad bytes not yet claimed by a record, in order: a few at most, the parser reads little ahead. */
  private readonly bad: { line: number; start: number }[] = [];
  /** Offsets of the line breaks (their last byte) pushed but not yet passed by lineAt (the parser reads little ahead), and how many were passed. */
  private newlines: number[] = [];
  private passed = 0;
  private passedLines = 0;
  /** Bytes pushed before the carried tail; the line being read, where it starts, and whether it is bad so far. */
  private offset = 0;
  private line = 1;
  private lineStart = 0;
  private lineBad = false;
  private carry: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): void {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    // Kept for the next chunk: a character cut by the chunk's end, or a CR whose LF may come next.
    const keep = incompleteTail(buf) || (buf[buf.length - 1] === CR ? 1 : 0);
    const end = buf.length - keep;
    // CR and LF never occur inside a multi-byte sequence: each piece between two breaks is checked alone.
    let lf = buf.indexOf(LF);
    let cr = buf.indexOf(CR);
    for (let start = 0; ; ) {
      if (lf !== -1 && lf < start) lf = buf.indexOf(LF, start);
      if (cr !== -1 && cr < start) cr = buf.indexOf(CR, start);
      const brk = lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
      const stop = brk === -1 || brk >= end ? end : brk;
      if (!this.lineBad && stop > start && !isUtf8(buf.subarray(start, stop))) this.lineBad = true;
      if (brk === -1 || brk >= end) break;
      const last = buf[brk] === CR && buf[brk + 1] === LF ? brk + 1 : brk;
      this.newlineAt(this.offset + last);
      start = last + 1;
    }
    this.offset += end;
    this.carry = Buffer.from(buf.subarray(end));
  }

  end(): void {
    // A CR last in the file ends its line; anything else carried is a character cut short.
    if (this.carry.length === 1 && this.carry[0] === CR) this.newlineAt(this.offset);
    else if (this.carry.length > 0) this.lineBad = true;
    if (this.lineBad) this.bad.push({ line: this.line, start: this.lineStart });
  }

  /** The line (1-based) of the byte at `offset`; offsets asked only ever grow. */
  lineAt(offset: number): number {
    let i = this.passed;
    while (i < this.newlines.length && this.newlines[i]! < offset) i++;
    this.passedLines += i - this.passed;
    this.passed = i;
    if (this.passed > 4096) {
      this.newlines = this.newlines.slice(this.passed);
      this.passed = 0;
    }
    return this.passedLines + 1;
  }

  /**
   * The first bad line among the bytes before `to` not claimed yet (the next record's: records
   * are claimed in order, and a line starts inside the record it belongs to), forgetting them.
   */
  claim(to: number): number | undefined {
    let found: number | undefined;
    while (this.bad.length > 0 && this.bad[0]!.start < to) {
      const bad = this.bad.shift()!;
      if (found === undefined) found = bad.line;
    }
    return found;
  }

  private newlineAt(offset: number): void {
    if (this.lineBad) this.bad.push({ line: this.line, start: this.lineStart });
    this.newlines.push(offset);
    this.line++;
    this.lineStart = offset + 1;
    this.lineBad = false;
  }
}

const CR = 13;
const LF = 10;

/** Rows of a CSV file with a header line, streamed: memory does not grow with the file. */
export async function* readCsvRows(path: string, progress: ReadProgress): AsyncGenerator<UserRow> {
  const file = createReadStream(path);
  const utf8 = new Utf8LineCheck();
  // Registered before the parser's own listeners (pipe): each chunk is checked before it is parsed.
  file.on('data', (chunk) => {
    progress.bytesRead += chunk.length;
    utf8.push(chunk as Buffer);
  });
  file.on('end', () => utf8.end());
  // Arrays, not `columns: true`: with named columns the parser silently drops a
  // row's extra cells, and a shifted row must be reported, not half-imported.
  // A row with too few or too many cells is that row's error, not the whole file's.
  const parser = file.pipe(parse({ bom: true, relax_column_count: true, skip_empty_lines: true, info: true, max_record_size: MAX_LINE_CHARS }));
  file.on('error', (err) => parser.destroy(err));
  let names: string[] | undefined;
  let lastLine = 0;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { bytes: number } }>) {
      // The record's bytes, its delimiter included; its line is the one it ends on (the delimiter's).
      const badLine = utf8.claim(info.bytes);
      const line = utf8.lineAt(info.bytes - 1);
      lastLine = line;
      if (!names) {
        if (badLine !== undefined) throw new InputFileError(`the header (line ${badLine}) is not valid UTF-8; save the file as UTF-8 (a Latin-1 or Windows-1252 export is not)`);
        names = headerOf(record);
        continue;
      }
      // Refused, not imported with U+FFFD in place of the bytes: an id the EHR will never send.
      if (badLine !== undefined) {
        yield { line, raw: record, ok: false, error: notUtf8(badLine) };
        continue;
      }
      if (record.length !== names.length) {
        yield { line, raw: record, ok: false, error: { kind: 'validation', message: `the row has ${record.length} cells, the header ${names.length}` } };
        continue;
      }
      yield validateRow(line, Object.fromEntries(names.map((n, i) => [n, record[i]])));
    }
  } catch (err) {
    if (err instanceof InputFileError) throw err;
    const e = err as Error & { lines?: number; code?: string };
    // csv-parse quotes the offending value, which may be a person's email. For a quote never
    // closed it names the file's last line; where the last good row ended says where to look.
    if (e.code === 'ENOENT') throw new InputFileError(`no such file: ${path}`);
    const where = [e.lines ? `line ${e.lines}` : '', lastLine ? `the last row read ends at line ${lastLine}` : ''].filter(Boolean).join('; ');
    throw new InputFileError(`${maskEmailsIn(e.message)}${where ? ` (${where})` : ''}`);
  }
}

function headerOf(record: string[]): string[] {
  const names = record.map((h) => h.trim());
  const unknown = names.filter((n) => !(CSV_COLUMNS as readonly string[]).includes(n));
  if (unknown.length > 0) {
    // A file without its header line has a row there: its values (an email among them) are masked,
    // and the message says what is missing.
    const noHeader = !names.some((n) => (CSV_COLUMNS as readonly string[]).includes(n));
    const hint = noHeader ? '; the first line must be the header naming the columns' : '';
    throw new InputFileError(`unknown CSV column(s) ${maskEmailsIn(unknown.join(', '))}; the columns are ${CSV_COLUMNS.join(', ')}${hint}`);
  }
  for (const required of ['provider_email', 'external_provider_id']) {
    if (!names.includes(required)) throw new InputFileError(`the CSV header has no ${required} column`);
  }
  return names;
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

/**
 * Lines of a file, pulled chunk by chunk. Not node:readline: its async iterator
 * queues every line of a chunk it has already read, and under a fast reader
 * the queue (and the RSS) grows; pulling chunks keeps at most one in memory.
 * Split as bytes and decoded line by line: `utf8` is false for a line that is not
 * valid UTF-8 (its `text` then has U+FFFD in place of the bad bytes).
 */
async function* linesOf(path: string, progress: ReadProgress): AsyncGenerator<{ text: string; utf8: boolean }> {
  let rest: Buffer = Buffer.alloc(0);
  let lines = 0;
  const decode = (bytes: Buffer) => {
    lines++;
    // A UTF-8 byte order mark (what some Windows tools write first) is not part of the first line.
    const line = lines === 1 && bytes.subarray(0, 3).equals(BOM) ? bytes.subarray(3) : bytes;
    return { text: line.toString('utf8'), utf8: isUtf8(line) };
  };
  for await (const chunk of createReadStream(path, { highWaterMark: 64 * 1024 }) as AsyncIterable<Buffer>) {
    progress.bytesRead += chunk.length;
    const buf = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10); nl !== -1; nl = buf.indexOf(10, start)) {
      yield decode(buf.subarray(start, nl));
      start = nl + 1;
    }
    rest = buf.subarray(start);
    // A file without line breaks (not NDJSON, or one huge value) would grow this line until the heap ran out.
    if (rest.length > MAX_LINE_CHARS) throw new InputFileError(`line ${lines + 1} is longer than ${MAX_LINE_CHARS / (1 << 20)} MiB; NDJSON is one JSON object per line`);
  }
  if (rest.length > 0) yield decode(rest);
}

/** Rows of an NDJSON file: one JSON object per line, either a POST /users body or the CSV's flat keys. */
export async function* readNdjsonRows(path: string, progress: ReadProgress): AsyncGenerator<UserRow> {
  let line = 0;
  try {
    for await (const { text, utf8 } of linesOf(path, progress)) {
      line++;
      if (text.trim() === '') continue;
      // Refused, not imported with U+FFFD in place of the bytes: an id the EHR will never send.
      if (!utf8) {
        yield { line, raw: text.slice(0, 200), ok: false, error: notUtf8(line) };
        continue;
      }
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        yield { line, raw: text.slice(0, 200), ok: false, error: { kind: 'validation', message: 'the line is not JSON' } };
        continue;
      }
      // What the API refuses in a body, refused here in its words: JSON.parse keeps the last of a
      // member given twice, and keeps `__proto__` as a member zod would name by what it holds.
      const refused = [...repeatedMembersIn(text), ...prototypeMembersIn(text)];
      if (refused.length > 0) {
        const message = refused.map((e) => `${e.path}: ${e.message}`).join('; ');
        yield { line, raw: text.slice(0, 200), ok: false, error: { kind: 'validation', message, errors: refused } };
        continue;
      }
      yield validateRow(line, raw);
    }
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new InputFileError(e.code === 'ENOENT' ? `no such file: ${path}` : e.message);
  }
}

export function readUserRows(path: string, progress: ReadProgress): AsyncGenerator<UserRow> {
  return /\.(nd)?jsonl?$/i.test(path) ? readNdjsonRows(path, progress) : readCsvRows(path, progress);
}
