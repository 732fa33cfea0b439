-- ---------------------------------------------------------------------------------------------
-- The history's partitions (see _finished and _attempts in tables.sql): made a few days ahead, and
-- dropped whole when their retention is over, by purge()
-- ---------------------------------------------------------------------------------------------

-- The start (midnight, UTC) of the day p_at falls in.
CREATE FUNCTION pgrelay._day(p_at timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.date_trunc('day', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$$;

-- The history of a database upgraded from 0.4, kept in place as the partitions of everything
-- before the day it names (see the upgrade script to 0.5.0): _finished_before_YYYYMMDD and
-- _attempts_before_YYYYMMDD, until purge() has emptied them. NULLs when there is none.
CREATE FUNCTION pgrelay._legacy_history(OUT finished regclass, OUT attempts regclass, OUT before timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT c.oid::regclass FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_finished_before_[0-9]{8}$'),
           (SELECT c.oid::regclass FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_attempts_before_[0-9]{8}$'),
           (SELECT max(to_date(right(c.relname, 8), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC') FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_(finished|attempts)_before_[0-9]{8}$')
$$;

-- Make the partitions of p_days days from the day of p_from on, those not made yet: for each day
-- _finished_YYYYMMDD (with _s and _x) and _attempts_YYYYMMDD (with _s and _x), with their indexes.
-- Each is made as a table of its own, then attached, which takes a lock that lets jobs finish
-- meanwhile (CREATE TABLE ... PARTITION OF would lock the whole history), and reads the default
-- partition (to check that none of its rows belong to the new day). Rows the default partitions
-- took for such a day (no partition covered it then) move into it first. purge() makes
-- only days that have not begun: an ack that routed a job of that day to the default partition just
-- before the attach would fail its partition check after it. Returns how many days it made.
CREATE FUNCTION pgrelay._make_partitions(p_from timestamptz, p_days integer)
RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_day timestamptz;
    v_next timestamptz;
    v_name text;
    v_leaf text;
    v_made integer := 0;
    v_legacy_before timestamptz := (pgrelay._legacy_history()).before;
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- Attaching locks the default partition against readers: not waited for behind a long query
    -- (readers would queue behind the attach); a day left undone is made by the next call.
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR n IN 0 .. p_days - 1 LOOP
        v_day := pgrelay._day(p_from) + make_interval(days => n);
        v_next := v_day + interval '1 day';
        v_name := to_char(v_day AT TIME ZONE 'UTC', 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('pgrelay.%I', '_finished_' || v_name)) IS NOT NULL
                   OR v_day < v_legacy_before;   -- (the legacy history's partitions hold those days)
        BEGIN
        EXECUTE format('CREATE TABLE pgrelay.%I (LIKE pgrelay._finished) PARTITION BY LIST (status)',
                       '_finished_' || v_name);
        EXECUTE format('CREATE TABLE pgrelay.%I PARTITION OF pgrelay.%I FOR VALUES IN (%L)',
                       '_finished_' || v_name || '_s', '_finished_' || v_name, 's');
        EXECUTE format('CREATE TABLE pgrelay.%I PARTITION OF pgrelay.%I FOR VALUES IN (%L, %L)',
                       '_finished_' || v_name || '_x', '_finished_' || v_name, 'd', 'c');
        EXECUTE format('CREATE INDEX %I ON pgrelay.%I (id)', '_finished_' || v_name || '_s_id_idx',
                       '_finished_' || v_name || '_s');
        EXECUTE format('CREATE INDEX %I ON pgrelay.%I (id)', '_finished_' || v_name || '_x_id_idx',
                       '_finished_' || v_name || '_x');
        EXECUTE format('CREATE INDEX %I ON pgrelay.%I (queue, finished_at) WHERE status = %L',
                       '_finished_' || v_name || '_x_dead_letter_idx', '_finished_' || v_name || '_x', 'd');
        IF v_day <= now() THEN   -- (a day that has not begun has no jobs yet)
            EXECUTE format('WITH moved AS (DELETE FROM pgrelay._finished_default f WHERE f.finished_at >= %L AND f.finished_at < %L RETURNING f.*)
                            INSERT INTO pgrelay.%I SELECT * FROM moved', v_day, v_next, '_finished_' || v_name);
        END IF;
        EXECUTE format('ALTER TABLE pgrelay._finished ATTACH PARTITION pgrelay.%I FOR VALUES FROM (%L) TO (%L)',
                       '_finished_' || v_name, v_day, v_next);

        EXECUTE format('CREATE TABLE pgrelay.%I (LIKE pgrelay._attempts INCLUDING CONSTRAINTS) PARTITION BY LIST (job_class)',
                       '_attempts_' || v_name);
        EXECUTE format('CREATE TABLE pgrelay.%I PARTITION OF pgrelay.%I FOR VALUES IN (%L)',
                       '_attempts_' || v_name || '_s', '_attempts_' || v_name, 's');
        EXECUTE format('CREATE TABLE pgrelay.%I PARTITION OF pgrelay.%I FOR VALUES IN (%L)',
                       '_attempts_' || v_name || '_x', '_attempts_' || v_name, 'x');
        FOREACH v_leaf IN ARRAY ARRAY['_attempts_' || v_name || '_s', '_attempts_' || v_name || '_x'] LOOP
            EXECUTE format('CREATE UNIQUE INDEX %I ON pgrelay.%I (job_id, attempt)', v_leaf || '_pkey', v_leaf);
            EXECUTE format('CREATE INDEX %I ON pgrelay.%I USING brin (finished_at)', v_leaf || '_finished_at_idx', v_leaf);
        END LOOP;
        IF v_day <= now() THEN
            EXECUTE format('WITH moved AS (DELETE FROM pgrelay._attempts_default a WHERE a.job_finished_at >= %L AND a.job_finished_at < %L RETURNING a.*)
                            INSERT INTO pgrelay.%I SELECT * FROM moved', v_day, v_next, '_attempts_' || v_name);
        END IF;
        EXECUTE format('ALTER TABLE pgrelay._attempts ATTACH PARTITION pgrelay.%I FOR VALUES FROM (%L) TO (%L)',
                       '_attempts_' || v_name, v_day, v_next);
        v_made := v_made + 1;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN v_made;
END
$$;

-- Whether a table holds any row.
CREATE FUNCTION pgrelay._has_rows(p_table regclass)
RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_found boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p_table) INTO v_found;
    RETURN v_found;
END
$$;

-- Before a partition of the history is dropped: take its jobs off the counters behind queue_stats
-- (the trigger that does so for deletes does not see a drop) and remove their idempotency keys.
-- Returns how many jobs it holds.
CREATE FUNCTION pgrelay._forget_partition(p_table regclass)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET enable_seqscan = on AS $$
DECLARE
    v_rows bigint;
BEGIN
    EXECUTE format(
        'WITH counted AS (
             SELECT f.queue, count(*) FILTER (WHERE f.status = %L) AS s, count(*) FILTER (WHERE f.status = %L) AS d,
                    count(*) FILTER (WHERE f.status = %L) AS c
             FROM %s f GROUP BY f.queue
         ), subtracted AS (
             INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded, dead_letter, cancelled)
             SELECT n.queue, %L, 0, -n.s, -n.d, -n.c FROM counted n ORDER BY n.queue
             ON CONFLICT ON CONSTRAINT _counts_pkey DO UPDATE
             SET succeeded = c.succeeded + excluded.succeeded, dead_letter = c.dead_letter + excluded.dead_letter,
                 cancelled = c.cancelled + excluded.cancelled
         )
         SELECT coalesce(sum(n.s + n.d + n.c), 0) FROM counted n', 's', 'd', 'c', p_table, '-infinity')
    INTO v_rows;
    EXECUTE format(
        'DELETE FROM pgrelay._idempotency_keys k USING %s f, pgrelay._queues q
         WHERE (f.options).idempotency_key IS NOT NULL AND q.queue = f.queue AND k.queue_id = q.id
           AND k.key = (f.options).idempotency_key AND k.job_id = f.id', p_table);
    RETURN v_rows;
END
$$;

-- Drop the partitions whose retention is over: a day's succeeded jobs (_s) once the longest
-- retention any queue gives succeeded jobs is over for that day, the rest of the day (_x, and the
-- day's table) once the longest dead-letter retention is; the day's attempts with them. A day is
-- dropped when the whole day is past its retention, so a job may stay up to a day longer than it.
-- A partition that is in use right now (a lock not granted at once) is left for the next call.
-- Returns how many jobs went.
CREATE FUNCTION pgrelay._drop_partitions(p_succeeded_days integer, p_dead_letter_days integer)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_part record;
    v_gone bigint := 0;
    v_rows bigint;
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR v_part IN
        SELECT c.relname AS name, (to_date(substr(c.relname, 11), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC') AS day
        FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'pgrelay._finished'::regclass AND c.relname ~ '^_finished_[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        BEGIN
            IF v_part.day + make_interval(days => p_dead_letter_days + 1) <= now() THEN
                v_rows := pgrelay._forget_partition(format('pgrelay.%I', v_part.name)::regclass);
                EXECUTE format('DROP TABLE pgrelay.%I', v_part.name);
                EXECUTE format('DROP TABLE IF EXISTS pgrelay.%I', '_attempts_' || substr(v_part.name, 11));
                v_gone := v_gone + v_rows;
            ELSIF v_part.day + make_interval(days => p_succeeded_days + 1) <= now()
                  AND to_regclass(format('pgrelay.%I', v_part.name || '_s')) IS NOT NULL THEN
                v_rows := pgrelay._forget_partition(format('pgrelay.%I', v_part.name || '_s')::regclass);
                EXECUTE format('DROP TABLE pgrelay.%I', v_part.name || '_s');
                EXECUTE format('DROP TABLE IF EXISTS pgrelay.%I', '_attempts_' || substr(v_part.name, 11) || '_s');
                v_gone := v_gone + v_rows;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            NULL;   -- in use (a long query reading the history): the next purge tries again
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
    RETURN v_gone;
END
$$;

-- Drop the history from before 0.5.0 (_legacy_history) once purge() has emptied it row by row.
CREATE FUNCTION pgrelay._drop_legacy_history()
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_part record;
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR v_part IN
        SELECT t.oid FROM unnest(ARRAY[(pgrelay._legacy_history()).finished, (pgrelay._legacy_history()).attempts]) t(oid)
        WHERE t.oid IS NOT NULL
    LOOP
        BEGIN
            IF NOT pgrelay._has_rows(v_part.oid) THEN
                EXECUTE format('DROP TABLE %s', v_part.oid);
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            NULL;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
END
$$;
