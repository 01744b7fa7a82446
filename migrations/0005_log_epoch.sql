-- The log epoch (ops/adr/0008-log-epoch.md): the read order survives a move to another
-- Postgres cluster, and no INSERT can choose its own place in it.
--
-- Transaction ids belong to one cluster. A dump restored into a fresh cluster, a logical
-- copy, or an async standby promoted after losing commits hands out ids that are lower than,
-- or equal to, ids already in the log; new events would sort inside the old log and every
-- reader past that point would skip them for good. So the order becomes
-- (epoch, transaction_id, global_position): the epoch leads, and a new one is opened when
-- the gateway finds itself on another cluster (system identifier), on another timeline
-- (a promotion), or below the log's highest transaction id. Everything of an earlier epoch
-- is final once the new one is open, because opening it waits for every writer in flight.

-- One row per epoch, newest = current, with the cluster it was opened on.
CREATE TABLE event_log_epochs (
    -- 0 for the log as it was before epochs; later ones are the opening time in Unix
    -- seconds (at least the previous + 1), so two histories that forked (a bump that a
    -- failover lost, then another one) never reuse a number.
    epoch             bigint      PRIMARY KEY CHECK (epoch >= 0),
    -- pg_control_system().system_identifier: changes with every initdb, so a restore or
    -- logical copy into another cluster shows here.
    system_identifier bigint,
    -- The WAL timeline: a promoted standby moves to a new one.
    timeline          bigint,
    reason            text        NOT NULL,
    opened_at         timestamptz NOT NULL DEFAULT now()
);

-- The cluster we are on, in one place. The timeline comes from the current WAL file name,
-- not pg_control_checkpoint(): after a promotion the checkpoint record keeps the old
-- timeline until the next checkpoint completes, which may be minutes.
CREATE FUNCTION event_log_cluster(OUT system_identifier bigint, OUT timeline bigint)
LANGUAGE sql VOLATILE AS $$
    SELECT (SELECT s.system_identifier FROM pg_control_system() s),
           ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::bigint
$$;

INSERT INTO event_log_epochs (epoch, system_identifier, timeline, reason)
SELECT 0, c.system_identifier, c.timeline, 'created' FROM event_log_cluster() c;

ALTER TABLE events ADD COLUMN epoch bigint NOT NULL DEFAULT 0;
-- From here on the trigger below sets it; an insert that bypasses the trigger must say it.
ALTER TABLE events ALTER COLUMN epoch DROP DEFAULT;

DROP INDEX events_read_order;
CREATE UNIQUE INDEX events_read_order ON events (epoch, transaction_id, global_position);

ALTER TABLE projection_checkpoints ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

-- Every inserted event takes its place in the order from the database, whatever the INSERT
-- says and whatever the role: an event given a transaction id below a reader's cursor would
-- never be delivered. Only READ COMMITTED: the epoch is read with a fresh snapshot, and a
-- REPEATABLE READ writer could still see the epoch before one that opened meanwhile.
CREATE FUNCTION events_take_log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'events are appended in READ COMMITTED transactions, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = 'invalid_transaction_state';
    END IF;
    NEW.transaction_id := pg_current_xact_id()::text::bigint;
    NEW.epoch := (SELECT max(epoch) FROM event_log_epochs);
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_log_order
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_take_log_order();

-- Checks that the current epoch belongs to this cluster and opens a new one if not; returns
-- the current epoch and, when it opened one, why. Cheap when nothing changed (no lock, no
-- xid). Opening takes EXCLUSIVE on `events`: it waits for every transaction that inserted
-- an event (they hold ROW EXCLUSIVE until they end) and holds new ones off until it
-- commits, so no event of the old epoch can commit after the new one is visible. Readers
-- (ACCESS SHARE) are not blocked. Several gateways starting together open one epoch: the
-- second re-checks under the lock and finds the first one's.
CREATE FUNCTION event_log_check_epoch(OUT current_epoch bigint, OUT opened_because text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    latest event_log_epochs;
    here record;
    why text;
BEGIN
    FOR attempt IN 1..2 LOOP
        SELECT * INTO latest FROM event_log_epochs l ORDER BY l.epoch DESC LIMIT 1;
        SELECT * INTO here FROM event_log_cluster();
        why := CASE
            WHEN latest.system_identifier IS DISTINCT FROM here.system_identifier
                THEN format('cluster %s, was %s', here.system_identifier, latest.system_identifier)
            WHEN latest.timeline IS DISTINCT FROM here.timeline
                THEN format('timeline %s, was %s', here.timeline, latest.timeline)
            WHEN (SELECT max(e.transaction_id) FROM events e WHERE e.epoch = latest.epoch)
                 >= pg_snapshot_xmax(pg_current_snapshot())::text::bigint
                THEN 'transaction ids run below the log''s'
        END;
        IF why IS NULL THEN
            current_epoch := latest.epoch;
            RETURN;
        END IF;
        IF attempt = 1 THEN
            LOCK TABLE events IN EXCLUSIVE MODE;
        END IF;
    END LOOP;
    current_epoch := greatest(latest.epoch + 1, date_part('epoch', clock_timestamp())::bigint);
    INSERT INTO event_log_epochs (epoch, system_identifier, timeline, reason)
    VALUES (current_epoch, here.system_identifier, here.timeline, why);
    opened_because := why;
END;
$$;
