package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// FerretDB 1.x turns an equality filter into `_jsonb->$1 @> $2` and builds
// each MongoDB index as a btree over `(_jsonb->'field')`. A btree cannot answer
// `@>`, so every find, update and delete with a filter scans the whole table
// and its cost grows with the collection (20,000 users: ~300 ms per upsert).
//
// mirrorSQL installs, in the PostgreSQL database FerretDB uses, an event
// trigger that gives every such btree index a GIN twin over the same
// expressions. With the key known when the statement is planned (a custom
// plan; see customPlans), PostgreSQL answers the `@>` filter from the GIN
// index, as MongoDB answers it from its own index. Indexes made before the
// trigger existed get their twin at start. The twins are PostgreSQL's only:
// FerretDB's metadata and listIndexes do not see them, and a dropped
// collection drops them with its table. Development and test only: production
// runs on MongoDB, which needs none of this.
const mirrorSQL = `
SELECT pg_advisory_xact_lock(hashtext('connect_ferretdb_gin_mirror'));

CREATE OR REPLACE FUNCTION connect_ferretdb_gin_mirror_index(idx oid) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  tbl oid; nsp text; rel text; nkeys int; exprs text[] := '{}'; e text; k int;
BEGIN
  SELECT i.indrelid, n.nspname, c.relname, i.indnkeyatts
    INTO tbl, nsp, rel, nkeys
    FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid
    JOIN pg_am am ON am.oid = ic.relam
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE i.indexrelid = idx AND am.amname = 'btree';
  IF tbl IS NULL OR rel LIKE '\_ferretdb\_%' THEN RETURN; END IF;
  FOR k IN 1..nkeys LOOP
    e := pg_get_indexdef(idx, k, true);
    -- Only top-level fields: FerretDB pushes nothing else down.
    IF e !~ '^\(?_jsonb -> ''[^'']+''::text\)?$' THEN RETURN; END IF;
    exprs := exprs || ('(' || e || ')');
  END LOOP;
  IF array_length(exprs, 1) IS NULL THEN RETURN; END IF;
  EXECUTE format(
    'CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin (%s) WITH (fastupdate = off)',
    left(rel, 40) || '_' || left(md5(array_to_string(exprs, ',')), 12) || '_gin',
    nsp, rel, array_to_string(exprs, ', '));
END
$fn$;

CREATE OR REPLACE FUNCTION connect_ferretdb_gin_mirror() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE r record;
BEGIN
  FOR r IN SELECT objid FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE INDEX' LOOP
    PERFORM connect_ferretdb_gin_mirror_index(r.objid);
  END LOOP;
END
$fn$;

DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'connect_ferretdb_gin_mirror') THEN
    CREATE EVENT TRIGGER connect_ferretdb_gin_mirror ON ddl_command_end
      WHEN TAG IN ('CREATE INDEX') EXECUTE FUNCTION connect_ferretdb_gin_mirror();
  END IF;
  PERFORM connect_ferretdb_gin_mirror_index(i.indexrelid)
     FROM pg_index i
     JOIN pg_class c ON c.oid = i.indrelid
     JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE EXISTS (SELECT 1 FROM pg_class m WHERE m.relnamespace = n.oid AND m.relname = '_ferretdb_database_metadata');
END
$do$;
`

// installIndexMirror runs mirrorSQL once; FerretDB then keeps creating
// indexes as before and the trigger follows.
func installIndexMirror(ctx context.Context, pgURL string) error {
	conn, err := pgx.Connect(ctx, withoutPoolSettings(pgURL))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)

	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	// Simple protocol: several statements in one string.
	if _, err = tx.Exec(ctx, mirrorSQL, pgx.QueryExecModeSimpleProtocol); err != nil {
		return fmt.Errorf("index mirror: %w", err)
	}
	return tx.Commit(ctx)
}

// customPlans asks PostgreSQL to plan each of FerretDB's prepared statements
// with its parameters known. A generic plan cannot see which field
// `_jsonb->$1` names, so it can use no expression index at all.
func customPlans(pgURL string) (string, error) {
	u, err := url.Parse(pgURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	if q.Get("plan_cache_mode") == "" {
		q.Set("plan_cache_mode", "force_custom_plan")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// withoutPoolSettings drops the `pool_*` parameters FerretDB's connection pool
// reads (pool_max_conns, ...) from the URL: a single pgx connection sends every
// parameter it does not know to PostgreSQL as a setting, which refuses them
// (`unrecognized configuration parameter "pool_max_conns"`), and the mirror
// was then not installed, leaving every lookup a scan of its whole table.
func withoutPoolSettings(pgURL string) string {
	u, err := url.Parse(pgURL)
	if err != nil {
		return pgURL
	}
	q := u.Query()
	for name := range q {
		if strings.HasPrefix(name, "pool_") {
			q.Del(name)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}
