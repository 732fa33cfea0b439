-- pgrelay 0.4.1 -> 0.5.0: the second performance round (issue 24). Run by jobs-migrate (in one
-- transaction, under its lock) and by ALTER EXTENSION pgrelay UPDATE.
--
-- - Producers send NOTIFY only while a worker waits on their queue (idle(), idle_check(), awake();
--   _waiting and _wakeup_bits): NOTIFY serialises the commits of the transactions that send it, which
--   capped single-job enqueue under concurrency. Workers of 0.4 and older, which never call idle(),
--   find jobs by polling after this upgrade until they are upgraded; SET pgrelay.notify = always
--   keeps the old behaviour for them, or for any other consumer of the channel.
-- - The history (_finished, _attempts) is partitioned by day, so that retention drops whole tables;
--   the existing history becomes the partitions of the days before tomorrow, in place (below).

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.5.0'::text $$;

CREATE TABLE pgrelay._waiting (
    worker text PRIMARY KEY,
    queues text[],               -- NULL: every queue
    until  timestamptz NOT NULL  -- a worker that died waiting stops counting then
);
COMMENT ON TABLE pgrelay._waiting IS 'Private: workers waiting for a NOTIFY, and for which queues (see pgrelay.idle).';
CREATE SEQUENCE pgrelay._wakeup_bits AS bigint MINVALUE 0 MAXVALUE 4611686018427387903 START 0 NO CYCLE;

CREATE OR REPLACE VIEW pgrelay.workers AS
    SELECT w.worker, w.host, w.pid, w.queues, w.started_at, w.last_seen,
           coalesce(l.leased, 0) AS leased,
           CASE WHEN w.last_seen >= now() - make_interval(secs => coalesce(w.lease_seconds, pgrelay._default_lease_seconds()))
                THEN 'alive' ELSE 'stale' END AS status,
           w.lease_seconds,
           EXISTS (SELECT 1 FROM pgrelay._waiting i WHERE i.worker = w.worker AND i.until >= now()) AS waiting
    FROM pgrelay._workers w
    LEFT JOIN (SELECT j.leased_by, count(*) AS leased FROM pgrelay._jobs j
               WHERE j.lease_expires_at IS NOT NULL GROUP BY j.leased_by) l ON l.leased_by = w.worker;
COMMENT ON VIEW pgrelay.workers IS
'Workers by their last heartbeat, with the number of leases each holds now.

status: alive, or stale when not heard from for a whole lease period (lease_seconds, default 30; a worker
heartbeats three times per lease); purge() forgets workers gone for a week. waiting: it found nothing to
claim and waits for a NOTIFY (idle()).';

-- The history, partitioned (see _finished and _attempts in tables.sql). The tables of 0.4 stay where
-- they are, renamed, as the partitions of everything that finished before tomorrow (UTC): nothing is
-- copied. Attaching them reads each table once, to check its rows belong there, under the lock the
-- upgrade holds anyway (bench/results/2026-12-08-partitions.md measures it).
-- purge() empties them row by row as their jobs' retention ends, then drops them; jobs that finish
-- from tomorrow on go to the day partitions. A job still active keeps its attempts there (job
-- finished at -infinity) until it finishes.
DO $$
DECLARE
    v_before timestamptz := pg_catalog.date_trunc('day', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                            + interval '1 day';
    v_suffix text := pg_catalog.to_char(v_before AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay._finished RENAME TO %I', '_finished_before_' || v_suffix);
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay._attempts RENAME TO %I', '_attempts_before_' || v_suffix);
    -- (the partitioned table's statement trigger counts what leaves every partition)
    EXECUTE pg_catalog.format('DROP TRIGGER _finished_count_removed ON pgrelay.%I', '_finished_before_' || v_suffix);
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay.%I ADD COLUMN job_finished_at timestamptz NOT NULL DEFAULT %L',
                              '_attempts_before_' || v_suffix, '-infinity');
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay.%I ALTER COLUMN job_finished_at DROP DEFAULT, ADD COLUMN job_class "char"',
                              '_attempts_before_' || v_suffix);
END
$$;

CREATE TABLE pgrelay._finished (
    id               bigint,
    queue            text COLLATE "C",
    task             text COLLATE "C",
    kind             "char",   -- as in _jobs
    status           "char",   -- s: succeeded, d: dead_letter (always with a last_error), c: cancelled
    priority         integer,
    run_at           timestamptz,
    attempt          integer,
    payload          jsonb,
    options          pgrelay._job_options,   -- as in _jobs
    last_error       text,
    result           jsonb,
    leased_by        text,          -- worker and start of the last attempt (a success has no _attempts row)
    leased_at        timestamptz,
    created_at       timestamptz,
    finished_at      timestamptz,
    replayed_as      bigint,        -- the job replay() created from this one (the latest, when forced again)
    enqueued_by      oid            -- as in _jobs
) PARTITION BY RANGE (finished_at);
COMMENT ON TABLE pgrelay._finished IS 'Private: succeeded, dead-lettered and cancelled jobs, kept until purged; partitioned by day.';
CREATE TABLE pgrelay._finished_default PARTITION OF pgrelay._finished DEFAULT;
CREATE INDEX _finished_default_id_idx ON pgrelay._finished_default (id);
CREATE INDEX _finished_default_dead_letter_idx ON pgrelay._finished_default (queue, finished_at) WHERE status = 'd';


CREATE TABLE pgrelay._attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL CONSTRAINT _attempts_attempt_check CHECK (attempt >= 1),
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CONSTRAINT _attempts_outcome_check
                CHECK (outcome IN ('succeeded', 'failed', 'timeout', 'lease_expired', 'cancelled')),
    error       text,
    details     jsonb,
    -- (last: added by 0.5.0)
    job_finished_at timestamptz NOT NULL,   -- infinity while the job is active
    job_class   "char"                      -- its job's status class, s or x, once it finished
) PARTITION BY RANGE (job_finished_at);
COMMENT ON TABLE pgrelay._attempts IS 'Private: the audit trail, one row per ended attempt; partitioned like _finished.';
CREATE TABLE pgrelay._attempts_active PARTITION OF pgrelay._attempts FOR VALUES FROM ('infinity') TO (MAXVALUE);
CREATE TABLE pgrelay._attempts_default PARTITION OF pgrelay._attempts DEFAULT;
-- Attempts arrive in finished_at order: the recent_failures view reads the last hour through BRIN
-- indexes, and purge() and get_attempts find a job's attempts by (job_id, attempt).
CREATE UNIQUE INDEX _attempts_active_pkey ON pgrelay._attempts_active (job_id, attempt);
CREATE INDEX _attempts_active_finished_at_idx ON pgrelay._attempts_active USING brin (finished_at);
CREATE INDEX _attempts_default_job_idx ON pgrelay._attempts_default (job_id, attempt);
CREATE INDEX _attempts_default_finished_at_idx ON pgrelay._attempts_default USING brin (finished_at);

DO $$
DECLARE
    v_before timestamptz := pg_catalog.date_trunc('day', pg_catalog.now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                            + interval '1 day';
    v_suffix text := pg_catalog.to_char(v_before AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay._finished ATTACH PARTITION pgrelay.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                              '_finished_before_' || v_suffix, v_before);
    EXECUTE pg_catalog.format('ALTER TABLE pgrelay._attempts ATTACH PARTITION pgrelay.%I FOR VALUES FROM (MINVALUE) TO (%L)',
                              '_attempts_before_' || v_suffix, v_before);
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pgrelay') THEN
        -- like the day partitions purge() makes, no longer a part of the extension: pg_dump dumps them
        -- (and their rows) as tables, which a restore attaches to the extension's _finished and _attempts
        EXECUTE pg_catalog.format('ALTER EXTENSION pgrelay DROP TABLE pgrelay.%I', '_finished_before_' || v_suffix);
        EXECUTE pg_catalog.format('ALTER EXTENSION pgrelay DROP TABLE pgrelay.%I', '_attempts_before_' || v_suffix);
    END IF;
END
$$;
CREATE TRIGGER _finished_count_removed AFTER DELETE ON pgrelay._finished
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION pgrelay._count_removed();

-- the views that read the history, on the new tables (renaming the old ones took the views along)
CREATE OR REPLACE VIEW pgrelay.jobs AS
    SELECT j.id, j.queue, j.task, pgrelay._kind_name(j.kind) AS kind,
           CASE WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END AS status,
           j.priority, j.run_at, j.attempt,
           (j.options).max_attempts, (j.options).timeout_seconds,
           pgrelay._redact_http_payload(j.kind, j.payload) AS payload,
           (j.options).idempotency_key, (j.options).dedupe_key, (j.options).trace_id,
           (j.options).replayed_from, j.last_error, NULL::jsonb AS result, j.leased_by, j.lease_expires_at,
           j.created_at, NULL::timestamptz AS finished_at, pg_catalog.pg_get_userbyid(j.enqueued_by) AS enqueued_by
    FROM pgrelay._jobs j
    UNION ALL
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind), pgrelay._status_name(f.status), f.priority, f.run_at, f.attempt,
           (f.options).max_attempts, (f.options).timeout_seconds, pgrelay._redact_http_payload(f.kind, f.payload),
           (f.options).idempotency_key, (f.options).dedupe_key, (f.options).trace_id,
           (f.options).replayed_from, f.last_error, f.result, NULL::text, NULL::timestamptz,
           f.created_at, f.finished_at, pg_catalog.pg_get_userbyid(f.enqueued_by)
    FROM pgrelay._finished f;
CREATE OR REPLACE VIEW pgrelay.dead_letters AS
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind) AS kind, f.attempt, f.last_error,
           pgrelay._redact_http_payload(f.kind, f.payload) AS payload, (f.options).trace_id, f.created_at, f.finished_at
    FROM pgrelay._finished f
    WHERE f.status = 'd' AND f.replayed_as IS NULL;
CREATE OR REPLACE VIEW pgrelay.recent_failures AS
    SELECT coalesce(j.queue, f.queue) AS queue, coalesce(j.task, f.task) AS task,
           count(*) AS failures,
           (array_agg(a.error ORDER BY a.finished_at DESC))[1] AS last_error,
           max(a.finished_at) AS last_failed_at
    FROM pgrelay._attempts a
    LEFT JOIN pgrelay._jobs j ON j.id = a.job_id
    LEFT JOIN pgrelay._finished f ON f.id = a.job_id
    WHERE a.finished_at > now() - interval '1 hour' AND a.outcome <> 'succeeded'
    GROUP BY 1, 2;
CREATE OR REPLACE VIEW pgrelay.schedules AS
    SELECT s.name, s.cron, s.timezone, s.task, s.queue, s.catch_up, s.paused, s.last_tick, s.next_run,
           s.last_job_id, CASE WHEN j.id IS NULL THEN pgrelay._status_name(f.status)
                               WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END AS last_job_status,
           s.payload, s.priority, s.max_attempts, s.timeout_seconds, s.declared_by, s.created_at, s.updated_at
    FROM pgrelay._schedules s
    LEFT JOIN pgrelay._jobs j ON j.id = s.last_job_id
    LEFT JOIN pgrelay._finished f ON f.id = s.last_job_id AND j.id IS NULL;

-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)
CREATE OR REPLACE FUNCTION pgrelay._day(p_at timestamp with time zone)
 RETURNS timestamp with time zone
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    SELECT pg_catalog.date_trunc('day', p_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
$function$;

CREATE OR REPLACE FUNCTION pgrelay._drop_legacy_history()
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._drop_partitions(p_succeeded_days integer, p_dead_letter_days integer)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._finish(p_ids bigint[], p_attempts integer[], p_status text, p_outcome text, p_results jsonb[] DEFAULT NULL::jsonb[], p_errors text[] DEFAULT NULL::text[], p_details jsonb[] DEFAULT NULL::jsonb[], p_leased boolean DEFAULT true)
 RETURNS bigint[]
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
    v_status "char" := pgrelay._status_code(p_status);
    v_ids bigint[];
    v_first text;   -- the first and the last queue (in name order) of the jobs that moved
    v_last text;
    v_retried bigint[];   -- those of them that may have attempts recorded before this one
BEGIN
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'pgrelay._finish: unknown status %', p_status;
    END IF;
    IF v_status <> 's' AND p_leased THEN
        -- (locking the jobs it records, so the move below finds the same ones)
        INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, details,
                                       job_finished_at, job_class)
        SELECT j.id, j.attempt, j.leased_by, j.leased_at, pg_catalog.now(), p_outcome, u.error, u.details,
               pg_catalog.now(), 'x'
        FROM unnest(p_ids, p_attempts, p_errors, p_details) AS u(id, attempt, error, details)
             JOIN pgrelay._jobs j ON j.id = u.id AND j.attempt = u.attempt AND j.leased_by IS NOT NULL
        FOR UPDATE OF j;
    END IF;
    WITH input AS (
        SELECT u.id, u.attempt, u.result, u.error
        FROM unnest(p_ids, p_attempts, p_results, p_errors) AS u(id, attempt, result, error)
        WHERE u.id IS NOT NULL
    ), done AS (
        DELETE FROM pgrelay._jobs j
        USING input i
        WHERE j.id = i.id AND j.attempt = i.attempt AND (j.leased_by IS NOT NULL) = p_leased
        RETURNING j.id, j.queue, j.task, j.kind, j.priority, j.run_at, j.attempt, j.payload, j.options,
                  coalesce(i.error, j.last_error) AS last_error, i.result, j.leased_by, j.leased_at, j.created_at,
                  j.enqueued_by
    ), archived AS (
        INSERT INTO pgrelay._finished (id, queue, task, kind, status, priority, run_at, attempt, payload, options,
                                       last_error, result, leased_by, leased_at, created_at, finished_at, enqueued_by)
        SELECT d.id, d.queue, d.task, d.kind, v_status, d.priority, d.run_at, d.attempt, d.payload, d.options,
               d.last_error, d.result, d.leased_by, d.leased_at, d.created_at, pg_catalog.now(), d.enqueued_by
        FROM done d
    )
    SELECT coalesce(array_agg(d.id), '{}'), min(d.queue), max(d.queue),
           array_agg(d.id) FILTER (WHERE d.attempt > CASE WHEN p_leased THEN 1 ELSE 0 END)
        INTO v_ids, v_first, v_last, v_retried
    FROM done d;
    IF v_retried IS NOT NULL THEN
        -- the attempts their earlier tries left (in _attempts_active; -infinity: from before 0.5.0)
        -- go to the day the job finished, to be dropped with it
        UPDATE pgrelay._attempts a
        SET job_finished_at = pg_catalog.now(), job_class = CASE WHEN v_status = 's' THEN 's' ELSE 'x' END
        WHERE a.job_finished_at IN ('infinity', '-infinity') AND a.job_id = ANY (v_retried);
    END IF;
    IF v_first = v_last THEN
        INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded, dead_letter, cancelled)
        VALUES (v_first, pg_catalog.date_trunc('minute', pg_catalog.now()), pg_catalog.pg_backend_pid(),
                CASE v_status WHEN 's' THEN cardinality(v_ids) ELSE 0 END,
                CASE v_status WHEN 'd' THEN cardinality(v_ids) ELSE 0 END,
                CASE v_status WHEN 'c' THEN cardinality(v_ids) ELSE 0 END)
        ON CONFLICT ON CONSTRAINT _counts_pkey DO UPDATE
        SET succeeded = c.succeeded + excluded.succeeded, dead_letter = c.dead_letter + excluded.dead_letter,
            cancelled = c.cancelled + excluded.cancelled;
    ELSIF v_first IS NOT NULL THEN
        INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded, dead_letter, cancelled)
        SELECT f.queue, pg_catalog.date_trunc('minute', pg_catalog.now()), pg_catalog.pg_backend_pid(),
               CASE v_status WHEN 's' THEN count(*) ELSE 0 END,
               CASE v_status WHEN 'd' THEN count(*) ELSE 0 END,
               CASE v_status WHEN 'c' THEN count(*) ELSE 0 END
        FROM pgrelay._finished f WHERE f.id = ANY (v_ids) GROUP BY f.queue
        ON CONFLICT ON CONSTRAINT _counts_pkey DO UPDATE
        SET succeeded = c.succeeded + excluded.succeeded, dead_letter = c.dead_letter + excluded.dead_letter,
            cancelled = c.cancelled + excluded.cancelled;
    END IF;
    RETURN v_ids;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._forget_partition(p_table regclass)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET enable_seqscan TO 'on'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._has_rows(p_table regclass)
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_found boolean;
BEGIN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s)', p_table) INTO v_found;
    RETURN v_found;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._legacy_history(OUT finished regclass, OUT attempts regclass, OUT before timestamp with time zone)
 RETURNS record
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT (SELECT c.oid::regclass FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_finished_before_[0-9]{8}$'),
           (SELECT c.oid::regclass FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_attempts_before_[0-9]{8}$'),
           (SELECT max(to_date(right(c.relname, 8), 'YYYYMMDD')::timestamp AT TIME ZONE 'UTC') FROM pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname ~ '^_(finished|attempts)_before_[0-9]{8}$')
$function$;

CREATE OR REPLACE FUNCTION pgrelay._make_partitions(p_from timestamp with time zone, p_days integer)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._next_due(p_queues text[])
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
    v_next timestamptz;
BEGIN
    SELECT min(n.run_at) INTO v_next
    FROM pgrelay._queues q CROSS JOIN LATERAL (
        WITH RECURSIVE priorities(p) AS (
            (SELECT j.priority FROM pgrelay._jobs j
             WHERE j.leased_by IS NULL AND j.queue_id = q.id ORDER BY j.priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT j.priority FROM pgrelay._jobs j
                    WHERE j.leased_by IS NULL AND j.queue_id = q.id AND j.priority < s.p
                    ORDER BY j.priority DESC LIMIT 1)
            FROM priorities s WHERE s.p IS NOT NULL)
        SELECT (SELECT j.run_at FROM pgrelay._jobs j
                WHERE j.leased_by IS NULL AND j.queue_id = q.id AND j.priority = s.p AND j.run_at > pg_catalog.now()
                ORDER BY j.priority DESC, j.run_at LIMIT 1) AS run_at
        FROM priorities s WHERE s.p IS NOT NULL) n
    WHERE p_queues IS NULL OR q.queue = ANY (p_queues);
    RETURN v_next;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._notify(p_queue text, p_run_at timestamp with time zone)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_mode text := coalesce(nullif(current_setting('pgrelay.notify', true), ''), 'on');
BEGIN
    IF v_mode = 'always'
       OR (v_mode <> 'off'
           AND coalesce(pg_sequence_last_value('pgrelay._wakeup_bits'), 0) & pgrelay._wakeup_bit(p_queue) <> 0) THEN
        PERFORM pg_notify(pgrelay._channel(),
            CASE WHEN p_run_at <= now() THEN p_queue
                 ELSE p_queue || ' ' || round(extract(epoch FROM p_run_at), 3)::text END);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._privileges()
 RETURNS TABLE(role name, object name)
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT pg_catalog.format('pgrelay_%s', r)::name, m.object::name
    FROM (VALUES
        -- producers: record jobs, read a job back
        ('version',               '{producer,worker,reader,admin}'::text[]),
        ('job_statuses',          '{producer,worker,reader,admin}'),
        ('check_task_names',      '{producer,worker,reader,admin}'),
        ('enqueue',               '{producer,worker}'),
        ('enqueue_http',          '{producer,worker}'),
        ('enqueue_bulk',          '{producer,worker}'),
        ('enqueue_many',          '{producer,worker}'),
        ('enqueue_trigger',       '{producer}'),
        ('get_job',               '{producer,worker,reader,admin}'),
        ('get_attempts',          '{worker,reader,admin}'),
        -- workers: claim, finish, keep leases, recover
        ('consume',               '{worker}'),
        ('ack',                   '{worker}'),
        ('ack_many',              '{worker}'),
        ('ack_each',              '{worker}'),
        ('nack',                  '{worker}'),
        ('release',               '{worker}'),
        ('heartbeat',             '{worker}'),
        ('idle',                  '{worker}'),
        ('idle_check',            '{worker}'),
        ('awake',                 '{worker}'),
        ('recover',               '{worker,admin}'),
        ('maintain',              '{worker,admin}'),
        ('maintenance_scheduled', '{worker,admin}'),
        ('tick',                  '{worker,admin}'),
        ('declare_schedule',      '{worker,admin}'),
        -- operators
        ('configure_queue',       '{admin}'),
        ('pause',                 '{admin}'),
        ('resume',                '{admin}'),
        ('replay',                '{admin}'),
        ('replay_dead_letters',   '{admin}'),
        ('cancel',                '{admin}'),
        ('purge',                 '{admin}'),
        ('schedule',              '{admin}'),
        ('unschedule',            '{admin}'),
        ('pause_schedule',        '{admin}'),
        ('resume_schedule',       '{admin}'),
        ('run_schedule_now',      '{admin}'),
        -- the views (and, derived by _apply_privileges, the functions they call)
        ('jobs',                  '{reader,admin}'),
        ('queue_stats',           '{reader,admin}'),
        ('expired_leases',        '{reader,admin}'),
        ('dead_letters',          '{reader,admin}'),
        ('workers',               '{reader,admin}'),
        ('recent_failures',       '{reader,admin}'),
        ('schedules',             '{reader,admin}'),
        -- this matrix, for `pgrelay doctor`
        ('_privileges',           '{reader,admin}')
    ) m(object, roles), pg_catalog.unnest(m.roles) r
$function$;
COMMENT ON FUNCTION pgrelay._privileges() IS 'Private: which group role may call which function (every overload of the name) or read which view.';

CREATE OR REPLACE FUNCTION pgrelay._purge_jobs(p_ids bigint[])
 RETURNS bigint[]
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET enable_mergejoin TO 'off'
 SET enable_hashjoin TO 'off'
AS $function$
    WITH doomed AS (
        SELECT f.id FROM pgrelay._finished f WHERE f.id = ANY (p_ids) FOR UPDATE SKIP LOCKED
    ), gone AS (
        DELETE FROM pgrelay._finished f USING doomed d WHERE f.id = d.id
        RETURNING f.id, f.queue, (f.options).idempotency_key
    ), attempts AS (
        DELETE FROM pgrelay._attempts a USING gone g WHERE a.job_id = g.id
    ), keys AS (
        DELETE FROM pgrelay._idempotency_keys k USING gone g, pgrelay._queues q
        WHERE q.queue = g.queue AND k.queue_id = q.id AND k.key = g.idempotency_key AND k.job_id = g.id
    )
    SELECT coalesce(array_agg(g.id), '{}') FROM gone g
$function$;

CREATE OR REPLACE FUNCTION pgrelay._record_install(p_version text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_table regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pgrelay') THEN
        FOR v_table IN
            SELECT c.oid FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relkind IN ('r', 'S')
              -- (the history's day partitions are not members: pg_dump dumps them as tables)
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY c.relname
        LOOP
            PERFORM pg_catalog.pg_extension_config_dump(v_table, '');
        END LOOP;
    END IF;
    INSERT INTO pgrelay._migrations (version, method)
    VALUES (p_version, coalesce(nullif(pg_catalog.current_setting('pgrelay.installer', true), ''),
                                CASE WHEN EXISTS (SELECT 1 FROM pgrelay._migrations) THEN 'alter extension update'
                                     ELSE 'create extension' END));
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._retry(p_ids bigint[], p_attempts integer[], p_outcome text, p_errors text[], p_delays double precision[], p_details jsonb[] DEFAULT NULL::jsonb[])
 RETURNS TABLE(id bigint, queue text, run_at timestamp with time zone)
 LANGUAGE plpgsql
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT u.id, u.attempt, u.error, u.delay, u.details
        FROM unnest(p_ids, p_attempts, p_errors, p_delays, p_details) AS u(id, attempt, error, delay, details)
        WHERE u.id IS NOT NULL
    ), old AS (
        SELECT j.id, j.attempt, j.leased_by, j.leased_at, i.error, i.delay, i.details
        FROM pgrelay._jobs j JOIN input i ON j.id = i.id AND j.attempt = i.attempt
        WHERE j.leased_by IS NOT NULL
        FOR UPDATE OF j
    ), moved AS (
        UPDATE pgrelay._jobs j
        SET leased_by = NULL, leased_at = NULL, lease_expires_at = NULL,
            run_at = pg_catalog.now() + pg_catalog.make_interval(secs => o.delay),
            last_error = coalesce(o.error, j.last_error)
        FROM old o
        WHERE j.id = o.id
        RETURNING j.id, j.queue, j.run_at
    ), attempts AS (
        INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, details,
                                       job_finished_at)
        SELECT o.id, o.attempt, o.leased_by, o.leased_at, pg_catalog.now(), p_outcome, o.error, o.details, 'infinity'
        FROM old o
    )
    SELECT m.id, m.queue, m.run_at FROM moved m;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._running_transactions(p_among bigint[])
 RETURNS bigint[]
 LANGUAGE sql
AS $function$
    SELECT coalesce(pg_catalog.array_agg(DISTINCT x ORDER BY x), '{}')
    FROM (SELECT l.transactionid::text::bigint AS x FROM pg_catalog.pg_locks l
          WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
            AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()) t
    WHERE p_among IS NULL OR t.x = ANY (p_among)
$function$;

CREATE OR REPLACE FUNCTION pgrelay._wakeup_bit(p_queue text)
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT 1::bigint << ((pg_catalog.hashtext(p_queue) & 2147483647) % 62)
$function$;

CREATE OR REPLACE FUNCTION pgrelay._wakeup_bits_of(p_queues text[])
 RETURNS bigint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE WHEN p_queues IS NULL THEN 4611686018427387903
                ELSE (SELECT coalesce(pg_catalog.bit_or(pgrelay._wakeup_bit(q)), 0) FROM pg_catalog.unnest(p_queues) q)
           END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._wakeup_bits_update()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    DELETE FROM pgrelay._waiting w WHERE w.until < pg_catalog.now();
    PERFORM pg_catalog.setval('pgrelay._wakeup_bits',
        (SELECT coalesce(pg_catalog.bit_or(pgrelay._wakeup_bits_of(w.queues)), 0) FROM pgrelay._waiting w), true);
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay.awake(worker text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('worker', awake.worker, 200, '/@'));
    IF NOT EXISTS (SELECT 1 FROM pgrelay._waiting w WHERE w.worker = awake.worker) THEN
        RETURN false;
    END IF;
    LOCK TABLE pgrelay._waiting IN SHARE ROW EXCLUSIVE MODE;
    DELETE FROM pgrelay._waiting w WHERE w.worker = awake.worker;
    PERFORM pgrelay._wakeup_bits_update();
    RETURN true;
END
$function$;
COMMENT ON FUNCTION pgrelay.awake(text) IS 'The worker no longer waits (it found work, or it stops): producers of its queues stop sending NOTIFY for it.
Returns false when it was not waiting.

Example: SELECT pgrelay.awake(''worker-1'');';

CREATE OR REPLACE FUNCTION pgrelay.idle(worker text, queues text[] DEFAULT NULL::text[], seconds integer DEFAULT 300)
 RETURNS TABLE(running bigint[], next_due timestamp with time zone)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_seconds integer := coalesce(idle.seconds, 300);
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('worker', idle.worker, 200, '/@'));
    PERFORM pgrelay._check(pgrelay._range_error('seconds', v_seconds, 1, 86400, ' (or NULL for 300)'));
    IF cardinality(idle.queues) > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'queues must list at most 1000 queues (or be NULL for all)';
    ELSIF idle.queues IS NOT NULL THEN
        PERFORM pgrelay._check((SELECT pgrelay._name_error('queue', q, 128) FROM unnest(idle.queues) q
                                WHERE pgrelay._name_error('queue', q, 128) IS NOT NULL LIMIT 1));
    END IF;
    -- changes to _waiting and _wakeup_bits one at a time (a self-conflicting lock no claim or enqueue takes)
    LOCK TABLE pgrelay._waiting IN SHARE ROW EXCLUSIVE MODE;
    INSERT INTO pgrelay._waiting AS w (worker, queues, until)
    VALUES (idle.worker, idle.queues, now() + make_interval(secs => v_seconds))
    ON CONFLICT ON CONSTRAINT _waiting_pkey DO UPDATE SET queues = excluded.queues, until = excluded.until;
    PERFORM pgrelay._wakeup_bits_update();
    -- after the bits are set: the transactions that may have read them before (see above), each of
    -- which holds the lock on its own transaction id from the moment it got one until it has ended
    -- (and is visible to a later snapshot); not this one
    RETURN QUERY
    SELECT pgrelay._running_transactions(NULL), pgrelay._next_due(idle.queues);
END
$function$;
COMMENT ON FUNCTION pgrelay.idle(text,text[],integer) IS 'A worker found nothing to claim and waits on its LISTEN: producers of these queues NOTIFY until awake().

Call it only while LISTENing on the channel (and again after the LISTEN connection came back), then
claim once more (jobs committed before the call are seen by that claim). running: transactions that
were running and may have enqueued without seeing this call: pass them to idle_check() and claim again
when it returns fewer of them. next_due: when the earliest job of these queues that is not due yet
becomes due (NULL: none), to set a timer for. Until a worker is idle, producers send no NOTIFY for its
queues: while busy it finds jobs by claiming as soon as it has free slots. queues: NULL for all.
seconds (1 to 86400; NULL or left out: 300): the registration lapses then, unless renewed, so a worker that died
waiting stops costing producers a NOTIFY. Set pgrelay.notify to always for consumers of the channel
that do not call it.

Example: SELECT * FROM pgrelay.idle(''worker-1'', queues => ''{emails}'');';

CREATE OR REPLACE FUNCTION pgrelay.idle_check(transactions bigint[], queues text[] DEFAULT NULL::text[])
 RETURNS TABLE(running bigint[], next_due timestamp with time zone)
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    IF cardinality(idle_check.transactions) > 100000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'transactions must hold at most 100000 transaction ids (those idle() returned)';
    ELSIF cardinality(idle_check.queues) > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'queues must list at most 1000 queues (or be NULL for all)';
    END IF;
    RETURN QUERY
    SELECT pgrelay._running_transactions(idle_check.transactions), pgrelay._next_due(idle_check.queues);
END
$function$;
COMMENT ON FUNCTION pgrelay.idle_check(bigint[],text[]) IS 'Which of the transactions idle() returned are still running, and the next due time as idle() gives it.

A waiting worker claims again when this returns fewer transactions than it passed: one that ended may
have enqueued a job whose NOTIFY it did not send. An id that is not a running transaction is dropped.

Example: SELECT * FROM pgrelay.idle_check(''{7401,7405}'', queues => ''{emails}'');';

CREATE OR REPLACE FUNCTION pgrelay.maintain(max_jobs integer DEFAULT 10000)
 RETURNS pgrelay.maintenance
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_max integer := coalesce(maintain.max_jobs, 10000);
    v_done pgrelay.maintenance;
BEGIN
    PERFORM pgrelay._check(pgrelay._range_error('max_jobs', v_max, 1, 10000000, ' (or NULL for 10000)'));
    v_done.recovered := pgrelay.recover(least(v_max, 100000));   -- (the most recover() takes a call)
    v_done.purged := pgrelay.purge(NULL, v_max);
    v_done.ticked := pgrelay.tick();
    IF EXISTS (SELECT 1 FROM pgrelay._waiting w WHERE w.until < now()) THEN
        -- workers that died waiting (see idle()): producers stop sending NOTIFY for them
        LOCK TABLE pgrelay._waiting IN SHARE ROW EXCLUSIVE MODE;
        PERFORM pgrelay._wakeup_bits_update();
    END IF;
    RETURN v_done;
END
$function$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS 'Routine maintenance: recover() expired leases (at most max_jobs, and 100,000), then purge() finished jobs by
each queue''s retention (at most max_jobs), then tick() the schedules, and forget workers whose wait lapsed
(idle()); returns what it did. max_jobs: 1 to
10,000,000 (NULL: 10,000). A count of max_jobs (or 100,000 recovered) says more may be left: call again.
Run it from pg_cron every minute, or let the workers run it.

Example: SELECT * FROM pgrelay.maintain();';

CREATE OR REPLACE FUNCTION pgrelay.purge(older_than_days integer DEFAULT NULL::integer, max_jobs integer DEFAULT 10000)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
DECLARE
    v_max integer := coalesce(purge.max_jobs, 10000);
    v_total integer := 0;
    v_kept integer := 0;   -- jobs the walk read and left
    v_min_days integer;
    v_front timestamptz;   -- no job created from here on is due yet
    v_after bigint;        -- the walk's place: the last id it read
    v_pass_started timestamptz;
    v_due bigint[];
    v_gone bigint[];
    v_last bigint;
    v_ahead bigint;
    v_n integer;
    v_keep_s integer;      -- the longest retention of succeeded jobs, and of the others, any queue has:
    v_keep_x integer;      -- their partitions are dropped whole then (_drop_partitions)
    v_rowwise regclass[];  -- partitions purged row by row whatever the retention (see _finished)
    v_walk boolean;
    v_dropped bigint;      -- jobs that went with their partition
BEGIN
    PERFORM pgrelay._check(coalesce(
        pgrelay._range_error('older_than_days', purge.older_than_days, 0, 36500, ' (or NULL for each queue''s retention)'),
        pgrelay._range_error('max_jobs', v_max, 1, 10000000, ' (or NULL for 10000)')));
    -- one purge at a time (a second caller returns 0 at once): the counters it folds and the walk's
    -- place stay exact
    IF NOT pg_try_advisory_xact_lock(123589603914343) THEN
        RETURN 0;
    END IF;
    v_min_days := coalesce(purge.older_than_days, least(
        (SELECT min(least(coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()),
                          coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days())))
         FROM pgrelay._queues q),
        pgrelay._default_retention_succeeded_days(), pgrelay._default_retention_dead_letter_days()));
    v_front := now() - make_interval(days => v_min_days);
    SELECT greatest(max(coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days())),
                    pgrelay._default_retention_succeeded_days()),
           greatest(max(coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days())),
                    pgrelay._default_retention_dead_letter_days())
        INTO v_keep_s, v_keep_x
    FROM pgrelay._queues q;

    -- the days ahead (from tomorrow: attaching a day that has begun could fail the acks that a
    -- moment earlier routed its jobs to the default partition), then whole days past their retention
    PERFORM pgrelay._make_partitions(now() + interval '1 day', 3);
    v_dropped := pgrelay._drop_partitions(coalesce(purge.older_than_days, v_keep_s),
                                          coalesce(purge.older_than_days, v_keep_x));
    -- Row by row: the default and legacy partitions, and the jobs of a queue that keeps them for less
    -- than the longest retention of their kind (their day is dropped later). Not at all when there
    -- are none of those.
    v_rowwise := ARRAY['pgrelay._finished_default'::regclass, coalesce((pgrelay._legacy_history()).finished, 0::oid::regclass)];
    v_walk := purge.older_than_days IS NOT NULL
              OR EXISTS (SELECT 1 FROM pgrelay._queues q
                         WHERE coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()) < v_keep_s
                            OR coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) < v_keep_x)
              OR EXISTS (SELECT 1 FROM pgrelay._finished_default)
              OR (v_rowwise[2] <> 0 AND pgrelay._has_rows(v_rowwise[2]));

    IF purge.older_than_days IS NULL THEN
        -- first the jobs an earlier walk noted as kept longer, whose time has come
        SELECT array_agg(l.id) INTO v_due
        FROM (SELECT l.id FROM pgrelay._purge_later l WHERE l.due_at < now() ORDER BY l.due_at LIMIT v_max) l;
        IF v_due IS NOT NULL THEN
            v_total := cardinality(pgrelay._purge_jobs(v_due));
            -- (an entry whose job a concurrent caller held stays for the next purge)
            DELETE FROM pgrelay._purge_later l
            WHERE l.id = ANY (v_due) AND NOT EXISTS (SELECT 1 FROM pgrelay._finished f WHERE f.id = l.id);
        END IF;
        SELECT s.walked, s.pass_started INTO v_after, v_pass_started FROM pgrelay._purge_state s;
        v_after := coalesce(v_after, 0);
    ELSE
        v_after := 0;   -- an explicit age: the whole history, from the oldest job
    END IF;

    -- Then the walk: the history in id order, by its primary key, a thousand jobs at a time. Ids are
    -- handed out as jobs are created, and a job finishes after it is created, so the walk stops at the
    -- first job created after the front. It removes the due jobs it reads and notes the kept ones
    -- (created before the front: a later walk does not read them again). A routine purge reads at most
    -- about 10,000 jobs it leaves per call, however long the history a pass has to go through.
    WHILE v_walk AND v_total < v_max AND (v_kept < 10000 OR purge.older_than_days IS NOT NULL) LOOP
        WITH read AS (
            SELECT f.id, f.queue, f.status, f.created_at, f.finished_at, f.tableoid::regclass = ANY (v_rowwise) AS rowwise,
                   coalesce(purge.older_than_days,
                       CASE WHEN f.status = 's'
                            THEN coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days())
                            ELSE coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) END)
                       AS days
            FROM (SELECT f.id, f.queue, f.status, f.created_at, f.finished_at, f.tableoid
                  FROM pgrelay._finished f WHERE f.id > v_after ORDER BY f.id LIMIT 1000) f
            LEFT JOIN pgrelay._queues q ON q.queue = f.queue
        ), batch AS (
            -- due_at NULL: left to its day's drop
            SELECT r.id, r.queue, r.status, r.created_at, r.finished_at,
                   CASE WHEN r.rowwise OR purge.older_than_days IS NOT NULL
                             OR r.days < CASE WHEN r.status = 's' THEN v_keep_s ELSE v_keep_x END
                        THEN r.finished_at + make_interval(days => r.days) END AS due_at
            FROM read r
        ), noted AS (
            INSERT INTO pgrelay._purge_later (id, queue, succeeded, finished_at, due_at)
            SELECT b.id, b.queue, b.status = 's', b.finished_at, b.due_at FROM batch b
            WHERE purge.older_than_days IS NULL AND b.due_at >= now() AND b.created_at < v_front
            ON CONFLICT (id) DO NOTHING
        )
        SELECT array_agg(b.id ORDER BY b.id) FILTER (WHERE b.due_at < now()), max(b.id),
               min(b.id) FILTER (WHERE b.created_at >= v_front), count(*)
            INTO v_due, v_last, v_ahead, v_n
        FROM batch b;
        EXIT WHEN v_last IS NULL;   -- the end of the history
        v_kept := v_kept + v_n - coalesce(cardinality(v_due), 0);
        IF cardinality(v_due) > v_max - v_total THEN
            -- max_jobs reached within this batch: the next call goes on from the first left
            v_ahead := least(v_ahead, v_due[v_max - v_total + 1]);
            v_due := v_due[1:v_max - v_total];
        END IF;
        IF v_due IS NOT NULL THEN
            v_gone := pgrelay._purge_jobs(v_due);
            v_total := v_total + cardinality(v_gone);
            IF purge.older_than_days IS NULL AND cardinality(v_gone) < cardinality(v_due) THEN
                -- due jobs a concurrent caller held: noted, so the next purge takes them
                INSERT INTO pgrelay._purge_later (id, queue, succeeded, finished_at, due_at)
                SELECT f.id, f.queue, f.status = 's', f.finished_at, f.finished_at FROM pgrelay._finished f
                WHERE f.id = ANY (v_due) AND f.id <> ALL (v_gone)
                ON CONFLICT (id) DO NOTHING;
            END IF;
        END IF;
        IF v_ahead IS NOT NULL THEN
            v_after := v_ahead - 1;
            EXIT;
        END IF;
        v_after := v_last;
    END LOOP;

    IF purge.older_than_days IS NULL THEN
        -- at the front with a pass begun long enough ago: the next purge starts a new pass
        IF (v_ahead IS NOT NULL OR v_last IS NULL) AND v_total < v_max
           AND v_pass_started < now() - (CASE WHEN v_min_days = 0 THEN interval '1 hour' ELSE interval '1 day' END) THEN
            v_after := 0;
            v_pass_started := now();
        END IF;
        INSERT INTO pgrelay._purge_state AS s (one, walked, pass_started)
        VALUES (true, v_after, coalesce(v_pass_started, now()))
        ON CONFLICT (one) DO UPDATE SET walked = excluded.walked, pass_started = excluded.pass_started;
    END IF;

    -- fold the per-minute counters of more than two hours ago into each queue's total row
    WITH old AS (
        SELECT c.queue, c.minute, c.backend FROM pgrelay._counts c
        WHERE c.minute > '-infinity' AND c.minute < date_trunc('minute', now()) - interval '2 hours'
        FOR UPDATE SKIP LOCKED
    ), folded AS (
        DELETE FROM pgrelay._counts c USING old o
        WHERE c.queue = o.queue AND c.minute = o.minute AND c.backend = o.backend
        RETURNING c.queue, c.succeeded, c.dead_letter, c.cancelled
    )
    INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded, dead_letter, cancelled)
    SELECT f.queue, '-infinity', 0, sum(f.succeeded), sum(f.dead_letter), sum(f.cancelled)
    FROM folded f GROUP BY f.queue ORDER BY f.queue
    ON CONFLICT ON CONSTRAINT _counts_pkey DO UPDATE
    SET succeeded = c.succeeded + excluded.succeeded, dead_letter = c.dead_letter + excluded.dead_letter,
        cancelled = c.cancelled + excluded.cancelled;

    PERFORM pgrelay._drop_legacy_history();
    -- workers gone for a week
    DELETE FROM pgrelay._workers w WHERE w.last_seen < now() - interval '7 days';
    RETURN v_total + v_dropped;
END
$function$;
COMMENT ON FUNCTION pgrelay.purge(integer,integer) IS 'Remove finished jobs older than their retention, with their attempts and idempotency keys; returns how many.

older_than_days: NULL for each queue''s retention (configure_queue: retention_succeeded_days, default 7;
retention_dead_letter_days, default 30, also for cancelled jobs); 0 removes every finished job. Active jobs
are never touched. One purge runs at a time; a concurrent call returns 0.

The history is partitioned by day: a day''s succeeded jobs are dropped whole once the longest succeeded
retention of any queue is over for the whole day, the rest of the day once the longest dead-letter retention
is (so a job may stay up to a day past its retention); a day in use by a long query is left for the next
call. It also makes the partitions of the next days. What no drop covers (a queue with a shorter retention
than the longest, jobs of a day no partition was made for, the history kept by the upgrade from 0.4) is
removed row by row, in batches of 1,000, stopping after max_jobs: call it again while it returns max_jobs.

By retention (NULL), the row-by-row part reads only the history that aged since the last call, not what is
kept: it remembers where its walk stopped and when each job kept longer is due, and reads at most about
10,000 jobs it keeps per call. A job that finishes long after later jobs were purged is removed by the next
pass over the whole history, which starts once a day (once an hour while a queue has a retention of 0
days). With older_than_days, it drops the days older than that and walks the rest, as an operator''s sweep.

Example: SELECT pgrelay.purge(older_than_days => 30);';

CREATE OR REPLACE FUNCTION pgrelay.version()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT '0.5.0'::text $function$;
COMMENT ON FUNCTION pgrelay.version() IS 'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';
-- end: functions whose definition changed

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.5.0');
