import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bodyOfFlatRow, readUserRows, validateRow, type UserRow } from './read-user-rows.ts';

const dir = mkdtempSync(join(tmpdir(), 'read-user-rows-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function rowsOf(name: string, content: string | Buffer): Promise<UserRow[]> {
  const file = join(dir, name);
  writeFileSync(file, content);
  const rows: UserRow[] = [];
  for await (const row of readUserRows(file, { bytesRead: 0 })) rows.push(row);
  return rows;
}

describe('a flat CSV row as a POST /users body', () => {
  it('empty cells are absent (keep current), settings only when a settings cell has a value', () => {
    expect(bodyOfFlatRow({ provider_email: ' a@b.org ', external_provider_id: 'x', specialty: '', other_specialty_name: '', speech_locale: '', secondary_speech_locale: '' })).toEqual({ provider_email: 'a@b.org', external_provider_id: 'x' });
    expect(bodyOfFlatRow({ provider_email: 'a@b.org', external_provider_id: 'x', specialty: 'OTHER', other_specialty_name: 'Sports', speech_locale: 'ENGLISH_US', secondary_speech_locale: '' })).toEqual({
      provider_email: 'a@b.org',
      external_provider_id: 'x',
      settings: { speech_locale: 'ENGLISH_US', specialty: { kind: 'OTHER', other_specialty_name: 'Sports' } },
    });
  });

  it('is checked with the API schema: a specialty without speech_locale is refused naming the field', () => {
    const row = validateRow(7, { provider_email: 'a@b.org', external_provider_id: 'x', specialty: 'CARDIOLOGY', speech_locale: '' });
    expect(row).toMatchObject({ line: 7, ok: false, error: { kind: 'validation' } });
    expect(!row.ok && row.error.errors?.map((e) => e.path)).toEqual(['settings.speech_locale']);
  });

  it('an NDJSON line in the API shape is taken as is', () => {
    expect(validateRow(1, { provider_email: 'a@b.org', external_provider_id: 'x', settings: { speech_locale: 'FRENCH_FR' } })).toMatchObject({ ok: true, body: { settings: { speech_locale: 'FRENCH_FR' } } });
  });
});

describe('an empty external_provider_id says so', () => {
  it('an NDJSON line with the flat keys and "external_provider_id": "" is refused as "must not be empty", the shared schema\'s message', () => {
    const row = validateRow(3, { provider_email: 'a@b.org', external_provider_id: '' });
    expect(row).toMatchObject({ line: 3, ok: false, error: { kind: 'validation', message: 'external_provider_id: must not be empty' } });
    expect(!row.ok && row.error.errors).toEqual([{ path: 'external_provider_id', message: 'must not be empty' }]);
  });

  it('so is an empty external_provider_id cell in a CSV file', async () => {
    const [row] = await rowsOf('empty-id.csv', 'provider_email,external_provider_id,speech_locale\na@b.org,,ENGLISH_US\n');
    expect(!row!.ok && row!.error.errors).toEqual([{ path: 'external_provider_id', message: 'must not be empty' }]);
  });
});

describe('a UTF-8 byte order mark', () => {
  const bom = Buffer.from([0xef, 0xbb, 0xbf]);
  it('is not part of the first NDJSON line (as for CSV)', async () => {
    const lines = `${JSON.stringify({ provider_email: 'a@b.org', external_provider_id: 'x1' })}\n${JSON.stringify({ provider_email: 'b@b.org', external_provider_id: 'x2' })}\n`;
    const rows = await rowsOf('bom.ndjson', Buffer.concat([bom, Buffer.from(lines)]));
    expect(rows.map((r) => [r.line, r.ok])).toEqual([
      [1, true],
      [2, true],
    ]);
  });

  it('is stripped from a CSV header too', async () => {
    const rows = await rowsOf('bom.csv', Buffer.concat([bom, Buffer.from('provider_email,external_provider_id\na@b.org,x1\n')]));
    expect(rows.map((r) => r.ok)).toEqual([true]);
  });
});

describe('a row is refused in the API\'s words', () => {
  it('an NDJSON line with a member the API does not know names it ("foo: unknown member"), as POST /users would', () => {
    const row = validateRow(5, { provider_email: 'a@b.org', external_provider_id: 'x', settings: { speech_locale: 'ENGLISH_US' }, foo: 1 });
    expect(row).toMatchObject({ line: 5, ok: false, error: { kind: 'validation', message: 'foo: unknown member' } });
    expect(!row.ok && row.error.errors).toEqual([{ path: 'foo', message: 'unknown member' }]);
  });

  it('an NDJSON line giving a member twice, or holding __proto__, is refused naming it, as POST /users refuses it (JSON.parse kept the last value and imported it)', async () => {
    const rows = await rowsOf(
      'repeated.ndjson',
      [
        '{"provider_email":"nd1@example.com","external_provider_id":"a","external_provider_id":"b"}',
        '{"provider_email":"nd5@example.com","external_provider_id":"nd5","settings":{"speech_locale":"ENGLISH_US","speech_locale":"FRENCH_FR"}}',
        '{"provider_email":"nd6@example.com","external_provider_id":"nd6","__proto__":{"a":1}}',
        '{"provider_email":"nd7@example.com","external_provider_id":"nd7"}',
      ].join('\n'),
    );
    expect(rows.map((r) => (r.ok ? 'ok' : r.error.message))).toEqual([
      'external_provider_id: is given more than once',
      'settings.speech_locale: is given more than once',
      '__proto__: unknown member',
      'ok',
    ]);
  });

  it('a missing member "is required", as the API says it', () => {
    const row = validateRow(6, { external_provider_id: 'x', settings: { speech_locale: 'ENGLISH_US' } });
    expect(!row.ok && row.error.errors).toEqual([{ path: 'provider_email', message: 'is required' }]);
  });
});

describe('bytes that are not UTF-8 (a Latin-1 export, a cut file)', () => {
  // \xff\xfe is never UTF-8; \xc3\x28 is a lead byte followed by "(", not a continuation.
  const bad = [Buffer.from([0xff, 0xfe]), Buffer.from([0xc3, 0x28])];
  const message = (line: number) => expect.stringContaining(`not valid UTF-8 (line ${line})`);

  it('refuse that CSV row naming its line, and only it: before, the row was imported with U+FFFD in its id', async () => {
    const file = Buffer.concat([
      Buffer.from('provider_email,external_provider_id,speech_locale\na@b.org,ok-1,ENGLISH_US\nb@b.org,bad-'),
      bad[0]!,
      Buffer.from(',ENGLISH_US\nc@b.org,ok-2,ENGLISH_US\nd@b.org,"bad-'),
      bad[1]!,
      Buffer.from('\nstill the same cell",ENGLISH_US\ne@b.org,Jos\u00e9,ENGLISH_US\n'),
    ]);
    const rows = await rowsOf('latin1.csv', file);
    expect(rows.map((r) => [r.line, r.ok])).toEqual([
      [2, true],
      [3, false],
      [4, true],
      [6, false],
      [7, true],
    ]);
    expect(rows[1]).toMatchObject({ ok: false, error: { kind: 'validation', message: message(3) } });
    // A quoted cell over two lines: the record ends at line 6, the bad bytes are on line 5.
    expect(rows[3]).toMatchObject({ ok: false, error: { kind: 'validation', message: message(5) } });
    expect(rows[4]).toMatchObject({ ok: true, body: { external_provider_id: 'Jos\u00e9' } });
  });

  it('after a quoted cell holding a CR LF (which the CSV parser counts as two line breaks), the bad row is still the one refused, with the lines an editor shows', async () => {
    const file = Buffer.concat([
      Buffer.from('provider_email,external_provider_id\na@b.org,"two\r\nlines"\nb@b.org,"cr\ralone"\nc@b.org,bad-'),
      bad[0]!,
      Buffer.from('\nd@b.org,ok\n'),
    ]);
    const rows = await rowsOf('crlf-in-cell.csv', file);
    expect(rows.map((r) => [r.line, r.ok])).toEqual([
      [3, true],
      [5, true],
      [6, false],
      [7, true],
    ]);
    expect(rows[2]).toMatchObject({ ok: false, error: { kind: 'validation', message: message(6) } });
    expect(rows[0]).toMatchObject({ ok: true, body: { external_provider_id: 'two\r\nlines' } });
  });

  it('a classic Mac file (lines ended by CR alone): each row at its own line, the bad one refused naming it', async () => {
    const file = Buffer.concat([Buffer.from('provider_email,external_provider_id\ra@b.org,ok-1\rb@b.org,bad-'), bad[1]!, Buffer.from('\rc@b.org,ok-2\r')]);
    const rows = await rowsOf('mac.csv', file);
    expect(rows.map((r) => [r.line, r.ok])).toEqual([
      [2, true],
      [3, false],
      [4, true],
    ]);
    expect(rows[1]).toMatchObject({ ok: false, error: { kind: 'validation', message: message(3) } });
  });

  it('refuse that NDJSON line naming it, and only it', async () => {
    const line = (id: string | Buffer) => Buffer.concat([Buffer.from('{"provider_email":"a@b.org","external_provider_id":"'), Buffer.from(id), Buffer.from('"}\n')]);
    const rows = await rowsOf('latin1.ndjson', Buffer.concat([line('ok-1'), line(Buffer.concat([Buffer.from('x'), bad[0]!])), line(Buffer.concat([Buffer.from('y'), bad[1]!])), line('Jos\u00e9')]));
    expect(rows.map((r) => [r.line, r.ok])).toEqual([
      [1, true],
      [2, false],
      [3, false],
      [4, true],
    ]);
    expect(rows[1]).toMatchObject({ error: { kind: 'validation', message: message(2) } });
    expect(rows[2]).toMatchObject({ error: { kind: 'validation', message: message(3) } });
  });

  it('a CSV header that is not UTF-8 stops the import (input error) naming line 1', async () => {
    await expect(rowsOf('latin1-header.csv', Buffer.concat([Buffer.from('provider_email,external_provider_id'), bad[0]!, Buffer.from('\na@b.org,x\n')]))).rejects.toThrow(/header \(line 1\) is not valid UTF-8/);
  });

  it('a valid character cut by the 64 KiB read boundary is not taken for a bad byte (CSV and NDJSON)', async () => {
    // Rows of 3-byte characters, long enough to cross several chunk boundaries at every offset.
    const ids = Array.from({ length: 20_000 }, (_, i) => `\u20ac${i}\u20ac${'\u00e9'.repeat(i % 7)}`);
    const csv = await rowsOf('euro.csv', `provider_email,external_provider_id\n${ids.map((id) => `a@b.org,${id}`).join('\n')}\n`);
    expect(csv.filter((r) => !r.ok)).toEqual([]);
    expect(csv).toHaveLength(20_000);
    const ndjson = await rowsOf('euro.ndjson', ids.map((id) => JSON.stringify({ provider_email: 'a@b.org', external_provider_id: id })).join('\n'));
    expect(ndjson.filter((r) => !r.ok)).toEqual([]);
    expect(ndjson.map((r) => r.ok && r.body.external_provider_id)).toEqual(ids);
  });
});
