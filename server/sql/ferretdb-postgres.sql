-- What PostgreSQL needs so that FerretDB 1.24 answers Wiber's reads from indexes, and the
-- three counts without reading the collection. Run once per cluster, in the database
-- FerretDB uses, as the cluster's owner (event triggers need a superuser). Idempotent.
--
-- Why in PostgreSQL and not through FerretDB:
--  * FerretDB writes an equality filter as jsonb containment (`_jsonb->'f' @> '"v"'`).
--    The btree expression indexes it builds for `createIndexes` cannot serve `@>`; a GIN
--    index on the same expression can. FerretDB cannot create one, so we do.
--  * FerretDB 1.24 has no transactions and does not push `count` down. Counters kept by a
--    trigger change in the transaction that inserts the rows: a row the unique `_id`
--    index refuses (a redelivered message) rolls back with its count, so the counts are
--    exact, de-duplication included, whatever crashes.
--
-- How FerretDB lays a database out: one schema per database; one table per collection,
-- `<collection>_<hash>`, each with a unique btree on `(_jsonb->'_id')`; the mapping in
-- `<schema>._ferretdb_database_metadata`, one row per collection, inserted *after* the
-- collection's CREATE TABLE (so the table exists when its row arrives). Hence two hooks:
-- an event trigger puts a row trigger on every metadata table FerretDB creates, and that
-- row trigger equips each new collection's table. A table FerretDB recreates (after a
-- drop) gets a new metadata row, so it is equipped again.
--
-- Counts: collection `C` is counted when collection `C_counts` exists when `C` is created
-- (the server creates it first; it stays empty, an opt-in). The counters are rows of the
-- plain table `_wiber_counts` of the same schema, `(collection, key, n)` with key
-- `total`, `u:<user>` or `c:<conversation>`, and `(C, '$exact', <ms since>)` says the
-- counters have followed `C` since it was created: a reader that does not find it counts
-- the rows instead. A plain table, not a FerretDB collection: updating `n`, which no index
-- covers, is a HOT update in place (fillfactor 50 leaves the room), where a counter
-- document's update wrote a new jsonb version and an entry in each of its indexes.
-- Measured at 5,000 messages/s (three counters per message): PostgreSQL 0.26 cores
-- instead of 0.57, against 0.20 without counting at all.
-- Document layout (for the messages) is FerretDB's PJSON: `$s` carries field types.

-- Counts the rows one INSERT or DELETE statement changed in the messages table of
-- collection TG_ARGV[0], `TG_ARGV[1]` being +1 or -1.
CREATE OR REPLACE FUNCTION wiber_count_messages() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    collection text := TG_ARGV[0];
    sign bigint := TG_ARGV[1]::bigint;
BEGIN
    -- Counters dropped since (a dropped database keeps no table): count nothing rather
    -- than fail the write; the `$exact` marker is gone with them, so readers count rows.
    IF to_regclass(format('%I._wiber_counts', TG_TABLE_SCHEMA)) IS NULL THEN
        RETURN NULL;
    END IF;
    -- Keys in a fixed order: two writers touching the same counters lock them in the
    -- same order, so they wait for each other but never deadlock.
    EXECUTE format($q$
        INSERT INTO %I._wiber_counts AS c (collection, key, n)
        SELECT %L, k, sum(cnt) * %s
        FROM (
            SELECT 'total' AS k, count(*) AS cnt FROM wiber_changed
            UNION ALL
            SELECT 'c:' || (_jsonb->>'conversation'), count(*) FROM wiber_changed
            WHERE _jsonb ? 'conversation' GROUP BY 1
            UNION ALL
            -- A message to oneself counts once for its user.
            SELECT 'u:' || u, count(*) FROM (
                SELECT _jsonb->>'fromUser' AS u FROM wiber_changed
                UNION ALL
                SELECT _jsonb->>'toUser' FROM wiber_changed
                WHERE _jsonb->>'toUser' IS DISTINCT FROM _jsonb->>'fromUser'
            ) users
            WHERE u IS NOT NULL GROUP BY u
        ) per_key
        GROUP BY k
        ORDER BY k
        ON CONFLICT (collection, key) DO UPDATE SET n = c.n + EXCLUDED.n
    $q$, TG_TABLE_SCHEMA, collection, sign);
    RETURN NULL;
END
$fn$;

-- Equips the table of a collection FerretDB has just registered.
CREATE OR REPLACE FUNCTION wiber_equip_collection() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    collection text := NEW._jsonb->>'_id';
    tbl text := NEW._jsonb->>'table';
    counts_table text;
    field text;
BEGIN
    IF collection IS NULL OR tbl IS NULL
       OR to_regclass(format('%I.%I', TG_TABLE_SCHEMA, tbl)) IS NULL THEN
        RETURN NULL;
    END IF;
    -- Index names are the table's (unique per schema, at most 63 bytes).
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb->%L))',
                   left(tbl, 40) || '_wiber__id_gin', TG_TABLE_SCHEMA, tbl, '_id');
    IF collection LIKE '%\_counts' THEN
        RETURN NULL;
    END IF;
    FOREACH field IN ARRAY ARRAY['conversation', 'participants'] LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I USING gin ((_jsonb->%L))',
                       left(tbl, 40) || '_wiber_' || lower(field) || '_gin',
                       TG_TABLE_SCHEMA, tbl, field);
    END LOOP;
    -- The API's pages, read in SQL (see `wiber_model::reads::sql`): one btree per page
    -- shape, key then (timestamp, _id), so a page is an index range read in order, its
    -- LIMIT and OFFSET counted in the index. jsonb values, not casts: an index
    -- expression that could fail (a non-numeric timestamp) would fail the insert. The
    -- cluster's C locale makes jsonb strings compare bytewise, as MongoDB's do.
    FOREACH field IN ARRAY ARRAY['conversation', 'fromUser', 'toUser'] LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I '
                       '((_jsonb->%L), (_jsonb->''timestamp''), (_jsonb->''_id''))',
                       left(tbl, 35) || '_wiber_' || lower(field) || '_page',
                       TG_TABLE_SCHEMA, tbl, field);
    END LOOP;
    EXECUTE format('SELECT m._jsonb->>''table'' FROM %I._ferretdb_database_metadata m '
                   'WHERE m._jsonb->''_id'' = to_jsonb(%L::text)',
                   TG_TABLE_SCHEMA, collection || '_counts')
        INTO counts_table;
    IF counts_table IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE IF NOT EXISTS %I._wiber_counts ('
                   'collection text NOT NULL, key text NOT NULL, n bigint NOT NULL, '
                   'PRIMARY KEY (collection, key)) WITH (fillfactor = 50)', TG_TABLE_SCHEMA);
    EXECUTE format('CREATE OR REPLACE TRIGGER wiber_count_insert AFTER INSERT ON %I.%I '
                   'REFERENCING NEW TABLE AS wiber_changed FOR EACH STATEMENT '
                   'EXECUTE FUNCTION wiber_count_messages(%L, %L)',
                   TG_TABLE_SCHEMA, tbl, collection, '1');
    EXECUTE format('CREATE OR REPLACE TRIGGER wiber_count_delete AFTER DELETE ON %I.%I '
                   'REFERENCING OLD TABLE AS wiber_changed FOR EACH STATEMENT '
                   'EXECUTE FUNCTION wiber_count_messages(%L, %L)',
                   TG_TABLE_SCHEMA, tbl, collection, '-1');
    -- The collection is new, so its counts start at zero; `$exact` vouches for them.
    EXECUTE format('DELETE FROM %I._wiber_counts WHERE collection = %L',
                   TG_TABLE_SCHEMA, collection);
    EXECUTE format('INSERT INTO %I._wiber_counts (collection, key, n) VALUES (%L, %L, %s)',
                   TG_TABLE_SCHEMA, collection, '$exact',
                   (extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    RETURN NULL;
END
$fn$;

-- Puts the row trigger on every metadata table FerretDB creates (one per database).
CREATE OR REPLACE FUNCTION wiber_watch_metadata() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
        IF r.object_identity LIKE '%._ferretdb_database_metadata' THEN
            EXECUTE format('CREATE OR REPLACE TRIGGER wiber_equip AFTER INSERT ON %s '
                           'FOR EACH ROW EXECUTE FUNCTION wiber_equip_collection()',
                           r.object_identity);
        END IF;
    END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS wiber_watch_metadata;
CREATE EVENT TRIGGER wiber_watch_metadata ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION wiber_watch_metadata();
