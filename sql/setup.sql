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
-- Tables created later are picked up within about 30 seconds.
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
