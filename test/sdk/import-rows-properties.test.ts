/**
 * Property-based test of the importer's CSV reading (`pnpm import-users --file users.csv`): for
 * random files, every data row comes back once, in order, with the line number an operator
 * would look at (where the row ends; a quoted cell may span lines; LF, CR LF and CR alone each end
 * a line, as in an editor), its cells exactly as
 * written (commas, quotes, line breaks and any Unicode inside quoted cells), and a row holding
 * bytes that are not UTF-8 refused naming the line they are on, without touching its
 * neighbours. Files are large enough to cross the reader's 64 KiB chunks, where the UTF-8
 * check and the parser each keep their own count of lines.
 *
 * A failure prints fast-check's seed and path; FC_SEED=… FC_PATH=… replays it, FC_RUNS=N runs longer.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { readUserRows, type UserRow } from '@connect/importer';

const NUM_RUNS = Number(process.env.FC_RUNS ?? 60);
const dir = mkdtempSync(join(tmpdir(), 'import-rows-props-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const COLUMNS = ['provider_email', 'external_provider_id', 'speech_locale', 'other_specialty_name'] as const;

interface Row {
  cells: string[];
  /** A byte that is not UTF-8 at the start of the id cell (the row's first line). */
  badByte: boolean;
}

/** Text a cell may hold: mostly plain, sometimes what CSV must quote, sometimes anything. */
const cellText = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[a-z0-9._-]{1,24}$/) },
  { weight: 2, arbitrary: fc.string({ unit: fc.constantFrom('a', 'b', ',', '"', '\n', '\r\n', '\r', ' ', ';', 'é', '😀', '\t'), minLength: 1, maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme', minLength: 1, maxLength: 16 }) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('x', 'y', ' '), minLength: 200, maxLength: 900 }) },
);
const rowArb: fc.Arbitrary<Row> = fc.record({
  cells: fc.tuple(
    fc.stringMatching(/^[a-z]{1,10}@example\.(com|org)$/),
    cellText,
    fc.constantFrom('', 'ENGLISH_US', 'FRENCH_FR', 'NOT_A_LOCALE'),
    fc.oneof(fc.constant(''), cellText),
  ),
  badByte: fc.boolean().map((b) => b && Math.random() < 0.3),
});
const fileArb = fc.record({
  // Large sizes too: a few hundred rows, some of 1 KB, cross the reader's 64 KiB chunks.
  rows: fc.array(rowArb, { minLength: 1, maxLength: 400, size: 'large' }),
  // LF, CR LF, and a classic Mac file's CR alone.
  eol: fc.constantFrom('\n', '\r\n', '\r'),
  bom: fc.boolean(),
  finalEol: fc.boolean(),
});

/** Line breaks as an editor counts them: LF, CR LF, or a CR alone. */
const breaksIn = (text: string) => (text.match(/\r\n|\r|\n/g) ?? []).length;

/** RFC 4180: a cell with a comma, quote or line break (or a space at either end) is quoted, its quotes doubled. */
const quoted = (cell: string) => (/[",\r\n]|^\s|\s$/.test(cell) ? `"${cell.replaceAll('"', '""')}"` : cell);

/** The file's bytes, and where each row ends (the line csv-parse reports) and starts. */
function fileOf(f: { rows: Row[]; eol: string; bom: boolean; finalEol: boolean }): { bytes: Buffer; lines: { start: number; end: number }[] } {
  const parts: Buffer[] = [];
  if (f.bom) parts.push(Buffer.from([0xef, 0xbb, 0xbf]));
  parts.push(Buffer.from(COLUMNS.join(',') + f.eol));
  let line = 2;
  const lines: { start: number; end: number }[] = [];
  f.rows.forEach((row, i) => {
    const text = row.cells.map(quoted).join(',');
    const breaks = breaksIn(text);
    lines.push({ start: line, end: line + breaks });
    line += breaks + 1;
    const [email, ...rest] = row.cells;
    // The id cell with a byte that is not UTF-8 in front (inside its quotes when it has them).
    const id = quoted(rest[0]!);
    const idBytes = row.badByte ? Buffer.concat(id.startsWith('"') ? [Buffer.from('"'), Buffer.from([0xff]), Buffer.from(id.slice(1))] : [Buffer.from([0xff]), Buffer.from(id)]) : Buffer.from(id);
    parts.push(Buffer.from(`${quoted(email!)},`), idBytes, Buffer.from(`,${rest.slice(1).map(quoted).join(',')}`));
    if (i < f.rows.length - 1 || f.finalEol) parts.push(Buffer.from(f.eol));
  });
  return { bytes: Buffer.concat(parts), lines };
}

describe('the importer reading random CSV files', () => {
  it('gives every row once, in order, with its cells as written and the line it ends on; a row with bytes that are not UTF-8 is refused naming its line, and only it', async () => {
    let files = 0;
    let rowsSeen = 0;
    let refused = 0;
    let multiLine = 0;
    await fc.assert(
      fc.asyncProperty(fileArb, async (f) => {
        const { bytes, lines } = fileOf(f);
        const file = join(dir, `f${files++}.csv`);
        writeFileSync(file, bytes);
        const rows: UserRow[] = [];
        for await (const row of readUserRows(file, { bytesRead: 0 })) rows.push(row);
        expect(rows.map((r) => r.line)).toEqual(lines.map((l) => l.end));
        rows.forEach((row, i) => {
          const written = f.rows[i]!;
          const where = `row ${i + 1} (lines ${lines[i]!.start}-${lines[i]!.end})`;
          if (written.badByte) {
            expect(row.ok, where).toBe(false);
            expect(!row.ok && row.error.message, where).toContain(`line ${lines[i]!.start})`);
            refused++;
          } else {
            expect(row.raw, where).toEqual(Object.fromEntries(COLUMNS.map((name, c) => [name, written.cells[c]])));
            if (!row.ok) expect(row.error.message, where).not.toContain('UTF-8');
          }
          if (lines[i]!.end > lines[i]!.start) multiLine++;
        });
        rowsSeen += rows.length;
      }),
      {
        numRuns: NUM_RUNS,
        ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}),
        ...(process.env.FC_PATH ? { path: process.env.FC_PATH } : {}),
      },
    );
    console.log(`[import-rows-properties] ${files} files, ${rowsSeen} rows, ${refused} refused as not UTF-8, ${multiLine} spanning lines`);
  }, 120_000);
});
