-- Palisade event store schema, version 1. `__SCHEMA__` is replaced by the configured schema name.
CREATE SCHEMA IF NOT EXISTS __SCHEMA__;

CREATE TABLE IF NOT EXISTS __SCHEMA__.streams (
    name           text    PRIMARY KEY,
    version        bigint  NOT NULL,
    deleted        boolean NOT NULL DEFAULT false,
    -- versions up to this one belong to a life of the stream before it was deleted
    hidden_through bigint  NOT NULL DEFAULT 0
);

-- Global order for subscribers is (transaction_id, sequence). A reader only reads
-- below the oldest transaction that is still appending to this schema, so a late
-- commit can never land behind a position it has passed (see docs/adr/0002).
CREATE TABLE IF NOT EXISTS __SCHEMA__.events (
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    sequence       bigserial   NOT NULL,
    id             uuid        NOT NULL UNIQUE,
    stream         text        NOT NULL,
    version        bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    payload        bytea       NOT NULL,
    metadata       bytea       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transaction_id, sequence),
    UNIQUE (stream, version)
);

CREATE TABLE IF NOT EXISTS __SCHEMA__.snapshots (
    stream         text    PRIMARY KEY,
    version        bigint  NOT NULL,
    schema_version integer NOT NULL,
    payload        bytea   NOT NULL
);

CREATE TABLE IF NOT EXISTS __SCHEMA__.checkpoints (
    name       text   PRIMARY KEY,
    commit_id  bigint NOT NULL,
    sequence   bigint NOT NULL
);

-- One round trip per batch: lock the stream, check the expected version, insert
-- every event, move the stream. (Listeners are notified by a separate statement
-- pipelined right after it: a NOTIFY inside the append would hold a database-wide
-- lock until the commit is flushed and serialise concurrent appenders.) Raises PS410 for a deleted
-- stream and PS409 (detail: "<state> <version>") for a version mismatch, so a
-- failed append writes nothing.
-- expected kinds: 0 any, 1 no stream, 2 stream exists, 3 exact, 4 recreate
CREATE OR REPLACE FUNCTION __SCHEMA__.append(
    p_stream text, p_expected_kind integer, p_expected bigint,
    p_ids uuid[], p_types text[], p_schema_versions integer[], p_payloads bytea[], p_metadata bytea[]
) RETURNS TABLE (new_version bigint, commit_id bigint, last_sequence bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    cur_version bigint;
    cur_deleted boolean;
    state integer;
    last_seq bigint;
BEGIN
    -- Mark this transaction as an appender *before* it writes anything (and so
    -- before it has a transaction id): readers bound their horizon by appenders.
    PERFORM pg_advisory_xact_lock_shared(1886151026, __LOCKKEY__);
    -- Take the stream, still without a transaction id: an advisory lock does not
    -- assign one. So the appenders of one stream get their ids one after the
    -- other, in the order they write it, and the global order (by id) keeps the
    -- stream's versions in order. Waiting on the row lock below instead would let
    -- a waiter that already has an older id write the later versions (ADR 0002).
    PERFORM pg_advisory_xact_lock(hashtextextended('__SCHEMA__/' || p_stream, 0));
    INSERT INTO __SCHEMA__.streams (name, version) VALUES (p_stream, 0) ON CONFLICT (name) DO NOTHING;
    SELECT s.version, s.deleted INTO cur_version, cur_deleted
      FROM __SCHEMA__.streams s WHERE s.name = p_stream FOR UPDATE;
    state := CASE WHEN cur_deleted THEN 2 WHEN cur_version = 0 THEN 0 ELSE 1 END;
    IF state = 2 AND p_expected_kind <> 4 THEN
        RAISE EXCEPTION USING ERRCODE = 'PS410', MESSAGE = 'stream deleted', DETAIL = state || ' ' || cur_version;
    END IF;
    IF NOT ((state = 2 AND p_expected_kind = 4)
         OR (state <> 2 AND p_expected_kind = 0)
         OR (state = 0 AND p_expected_kind = 1)
         OR (state = 1 AND p_expected_kind = 2)
         OR (state <> 2 AND p_expected_kind = 3 AND cur_version = p_expected)) THEN
        RAISE EXCEPTION USING ERRCODE = 'PS409', MESSAGE = 'wrong expected version', DETAIL = state || ' ' || cur_version;
    END IF;
    WITH inserted AS (
        INSERT INTO __SCHEMA__.events (id, stream, version, event_type, schema_version, payload, metadata)
        SELECT u.id, p_stream, cur_version + u.ord, u.t, u.sv, u.p, u.m
          FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata)
               WITH ORDINALITY AS u(id, t, sv, p, m, ord)
         ORDER BY u.ord
        RETURNING sequence
    )
    SELECT max(inserted.sequence) INTO last_seq FROM inserted;
    UPDATE __SCHEMA__.streams
       SET version = cur_version + cardinality(p_ids),
           deleted = false,
           hidden_through = CASE WHEN cur_deleted THEN cur_version ELSE hidden_through END
     WHERE name = p_stream;
    RETURN QUERY SELECT cur_version + cardinality(p_ids), pg_current_xact_id()::text::bigint, last_seq;
END;
$fn$;

-- The read horizon: the oldest transaction id still appending to this schema,
-- or, when none is, the first id not yet assigned. Every event below it is
-- committed (or its transaction aborted) before the next statement's snapshot.
CREATE OR REPLACE FUNCTION __SCHEMA__.read_horizon() RETURNS xid8
LANGUAGE sql VOLATILE AS $fn$
    SELECT coalesce(
        (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
          WHERE (x::text::bigint % 4294967296) IN (
              SELECT a.backend_xid::text::bigint
                FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.classid = 1886151026 AND l.objid = __LOCKKEY__
                 AND l.objsubid = 2 AND a.backend_xid IS NOT NULL
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))),
        pg_snapshot_xmax(pg_current_snapshot()))
$fn$;

-- The global log after a position, below the horizon. The horizon is taken in
-- one statement and the events read in the next, with a newer snapshot, so
-- every transaction below the horizon has finished by the time they are read.
CREATE OR REPLACE FUNCTION __SCHEMA__.read_all(
    p_commit text, p_sequence bigint, p_prefix text, p_exact boolean, p_types text[], p_limit bigint
) RETURNS SETOF __SCHEMA__.events
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    horizon xid8;
BEGIN
    horizon := __SCHEMA__.read_horizon();
    RETURN QUERY
        SELECT * FROM __SCHEMA__.events e
         WHERE (e.transaction_id, e.sequence) > (p_commit::xid8, p_sequence)
           AND e.transaction_id < horizon
           AND (p_prefix IS NULL OR (CASE WHEN p_exact THEN e.stream = p_prefix ELSE starts_with(e.stream, p_prefix) END))
           AND (cardinality(p_types) = 0 OR e.event_type = ANY(p_types))
         ORDER BY e.transaction_id, e.sequence
         LIMIT p_limit;
END;
$fn$;
