import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { LOCAL_POSTGRES, startFerretDb, type RunningService } from '@connect/local-services';

/**
 * Our FerretDB build (tools/ferretdb) gives each FerretDB index a GIN twin, so
 * that FerretDB's equality lookups (`_jsonb->'field' @> value`, which its own
 * btree indexes cannot answer) stop reading whole tables. FerretDB only: on
 * MongoDB there is nothing to check, and the test says so.
 */
const onFerretDb = inject('mongoKind') === 'ferretdb';
if (!onFerretDb) console.log('[ferretdb index twins] skipped: the run uses MongoDB, which answers lookups from its own indexes');

const run = promisify(execFile);
const database = `gin_twins_${inject('runId')}`.replace(/[^a-z0-9_]/g, '_').slice(0, 60);
const psql = async (sql: string): Promise<string> =>
  (await run('psql', ['-h', LOCAL_POSTGRES.host, '-p', String(LOCAL_POSTGRES.port), '-U', LOCAL_POSTGRES.user, '-d', database, '-Atc', sql])).stdout.trim();

let ferret: RunningService;
let mongo: MongoClient;

beforeAll(async () => {
  if (!onFerretDb) return;
  // With a pool setting on the URL, as an operator may give: the twin installer's own connection
  // once sent it to PostgreSQL, which refused it, and FerretDB ran with no twin at all.
  ferret = await startFerretDb({ database, pgParams: { pool_max_conns: '8' } });
  mongo = await new MongoClient(`${ferret.url}twins`).connect();
  const users = mongo.db().collection('users');
  await users.createIndex({ org: 1, ext: 1 }, { unique: true });
  await users.insertMany(Array.from({ length: 5000 }, (_, i) => ({ org: 'o1', ext: `e${i}`, pad: 'x'.repeat(200) })));
  await psql('ANALYZE');
}, 120_000);

afterAll(async () => {
  await mongo?.close();
  await ferret?.stop();
});

describe.runIf(onFerretDb)('FerretDB lookups use an index (tools/ferretdb/indexes.go)', () => {
  it('every FerretDB index of a collection has a GIN twin over the same fields', async () => {
    const rows = (await psql("SELECT indexdef FROM pg_indexes WHERE schemaname = 'twins' AND tablename NOT LIKE '\\_ferretdb%'")).split('\n');
    const btree = rows.filter((d) => / USING btree /.test(d));
    const gin = rows.filter((d) => / USING gin /.test(d));
    expect(btree).toHaveLength(2); // _id and (org, ext)
    expect(gin).toHaveLength(2);
    expect(gin.some((d) => d.includes("(_jsonb -> 'org'::text)") && d.includes("(_jsonb -> 'ext'::text)"))).toBe(true);
    expect(gin.some((d) => d.includes("(_jsonb -> '_id'::text)"))).toBe(true);
  });

  it("PostgreSQL answers FerretDB's form of an equality lookup from the twin, not by reading the table", async () => {
    const table = await psql("SELECT tablename FROM pg_tables WHERE schemaname = 'twins' AND tablename NOT LIKE '\\_ferretdb%'");
    const plan = await psql(`EXPLAIN SELECT _jsonb FROM twins."${table}" WHERE _jsonb->'org' @> '"o1"' AND _jsonb->'ext' @> '"e4242"'`);
    console.log(`[ferretdb index twins] plan of a lookup by (org, ext) among 5,000 documents:\n${plan}`);
    expect(plan).toMatch(/Bitmap Index Scan on \S+_gin/);
    expect(plan).not.toMatch(/Seq Scan/);
    // And the lookup itself, through FerretDB, finds the document.
    expect(await mongo.db().collection('users').findOne({ org: 'o1', ext: 'e4242' })).toMatchObject({ ext: 'e4242' });
  });
});
