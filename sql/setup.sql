-- pgrealtime setup: applied by `pgrealtime serve` on every start (idempotent).
-- Safe to run by hand: psql "$DATABASE_URL" -f sql/setup.sql
--
-- The publications themselves are managed by pgrealtime (see below); this
-- file only creates the helper schema.

CREATE SCHEMA IF NOT EXISTS pgrealtime;

-- Resume checkpoint: every event after position is streamed again by the
-- slot after a restart (position is the last event published before the
-- transaction the slot's confirmed LSN points at).
CREATE TABLE IF NOT EXISTS pgrealtime.checkpoint (
    slot       text PRIMARY KEY,
    position   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- delivered: the last event delivered to subscribers before the checkpoint
-- was written. After a restart the slot streams the events after position
-- again (to rebuild the resume history); those up to delivered are not
-- delivered live a second time.
ALTER TABLE pgrealtime.checkpoint ADD COLUMN IF NOT EXISTS delivered text;

-- pgrealtime.broadcast sends a custom event to subscribers of
-- <collection>[.<record_id>]. It is transactional: the event travels through
-- the WAL, is delivered only if the calling transaction commits, and is
-- ordered with that transaction's row changes.
--
--   SELECT pgrealtime.broadcast('chat', 'typing', '{"user":"ann"}'::jsonb, 'room1');
CREATE OR REPLACE FUNCTION pgrealtime.broadcast(
    collection text,
    event      text,
    data       jsonb DEFAULT NULL,
    record_id  text  DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    payload jsonb;
BEGIN
    IF collection IS NULL OR collection = '' OR event IS NULL OR event = '' THEN
        RAISE EXCEPTION 'pgrealtime.broadcast: collection and event must be non-empty';
    END IF;
    payload := jsonb_build_object('collection', collection, 'event', event);
    IF record_id IS NOT NULL THEN
        payload := payload || jsonb_build_object('record_id', record_id);
    END IF;
    IF data IS NOT NULL THEN
        payload := payload || jsonb_build_object('data', data);
    END IF;
    PERFORM pg_logical_emit_message(true, 'pgrealtime', payload::text);
END;
$$;

-- Publications
-- ------------
-- By default pgrealtime creates and maintains two publications itself
-- (marked with COMMENT ... IS 'managed by pgrealtime'):
--   <publication>              every user table with a primary key or a
--                              replica identity, all actions;
--   <publication>_insert_only  tables with neither, WITH (publish =
--                              'insert, truncate'), because Postgres rejects
--                              UPDATE and DELETE on a table that is published
--                              for them without a replica identity.
-- A table created later joins the right one in the transaction that creates
-- it, through the event trigger below; without the trigger (the role may not
-- create event triggers) within a few seconds, by pgrealtime's re-sync.
--
-- To choose the tables yourself, create the publication before starting
-- pgrealtime, without the marker comment; pgrealtime then leaves it alone:
--
--   CREATE PUBLICATION pgrealtime FOR TABLE public.posts, public.comments;
--   -- a table without a primary key: either give it a replica identity
--   ALTER TABLE public.page_views REPLICA IDENTITY FULL;
--   ALTER PUBLICATION pgrealtime ADD TABLE public.page_views;
--   -- or publish only its inserts in a separate publication
--   -- CREATE PUBLICATION pgrealtime_insert_only FOR TABLE public.page_views
--   --     WITH (publish = 'insert, truncate');

-- New tables
-- ----------
-- The event trigger pgrealtime_publish_tables adds each table created (or
-- altered: a primary key or replica identity added or dropped) to the
-- right managed publication -- <publication> when it has a primary key or a
-- replica identity, <publication>_insert_only when it has neither -- at the
-- end of the command, in the same transaction. Rows written to a new table
-- are therefore streamed from its first row on, and an UPDATE of a table
-- that lost its key keeps working. Only publications carrying the 'managed
-- by pgrealtime' comment and owned by a role with REPLICATION (or a
-- superuser) are touched; a publication of yours is left alone. A
-- publication is locked until the transaction that changed it commits, so
-- concurrent transactions that create tables wait for each other. Rows
-- that CREATE TABLE ... AS or SELECT ... INTO writes while creating its table
-- are not streamed (the table is published at the end of that command).
--
-- Creating an event trigger needs a superuser (Postgres 15). When the role
-- applying this file is not one, this part is skipped and pgrealtime says so
-- when it starts; run this file once as a superuser to install it:
--   psql "postgres://postgres@host/db" -f sql/setup.sql
-- `pgrealtime teardown` removes the trigger with the last managed
-- publication of the database.
DO $setup$
BEGIN
    -- Both or neither: the sub-block rolls back the function when the event
    -- trigger cannot be created, and a role that does not own an installed
    -- function leaves it as it is.
    BEGIN
        CREATE OR REPLACE FUNCTION pgrealtime.publish_tables() RETURNS event_trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            rel      oid;
            tbl      text;
            eligible boolean;
            keyed    boolean;
            pub      record;
            want     boolean;
            member   boolean;
        BEGIN
            FOR rel IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands()
                       WHERE classid = 'pg_class'::regclass AND object_type = 'table' AND NOT in_extension
            LOOP
                -- The same rules as pgrealtime's re-sync (cdc/setup.go).
                SELECT format('%I.%I', n.nspname, c.relname),
                       c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
                         AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgrealtime')
                         AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%',
                       CASE c.relreplident
                         WHEN 'f' THEN true
                         WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
                         WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
                         ELSE false
                       END
                  INTO tbl, eligible, keyed
                  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.oid = rel;
                IF NOT FOUND THEN
                    CONTINUE;
                END IF;
                FOR pub IN
                    SELECT p.oid, p.pubname,
                           p.pubname LIKE '%\_insert\_only' AND EXISTS (
                               SELECT 1 FROM pg_publication m WHERE m.pubname = left(p.pubname, -length('_insert_only'))) AS insert_only
                      FROM pg_publication p JOIN pg_roles o ON o.oid = p.pubowner
                     WHERE obj_description(p.oid, 'pg_publication') = 'managed by pgrealtime'
                       AND NOT p.puballtables AND (o.rolsuper OR o.rolreplication)
                     ORDER BY p.pubname
                LOOP
                    want := eligible AND keyed <> pub.insert_only;
                    member := EXISTS (SELECT 1 FROM pg_publication_rel pr WHERE pr.prpubid = pub.oid AND pr.prrelid = rel);
                    CONTINUE WHEN want = member;
                    BEGIN
                        EXECUTE format('ALTER PUBLICATION %I %s TABLE ONLY %s', pub.pubname,
                                       CASE WHEN want THEN 'ADD' ELSE 'DROP' END, tbl);
                    EXCEPTION WHEN OTHERS THEN
                        -- Never fail the user's command: the re-sync retries.
                        RAISE WARNING 'pgrealtime: cannot % table % % publication %: %',
                            CASE WHEN want THEN 'add' ELSE 'drop' END, tbl,
                            CASE WHEN want THEN 'to' ELSE 'from' END, pub.pubname, SQLERRM;
                    END;
                END LOOP;
            END LOOP;
        END;
        $body$;
        IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'pgrealtime_publish_tables') THEN
            CREATE EVENT TRIGGER pgrealtime_publish_tables ON ddl_command_end
                WHEN TAG IN ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE')
                EXECUTE FUNCTION pgrealtime.publish_tables();
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pgrealtime: event trigger pgrealtime_publish_tables not installed (%): new tables are published by pgrealtime''s re-sync, a few seconds late; run sql/setup.sql once as a superuser to install it', SQLERRM;
    END;
END
$setup$;
