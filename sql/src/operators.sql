-- ---------------------------------------------------------------------------------------------
-- Operators: replay, cancel, purge, maintenance
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.replay(id bigint, force boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_job record;
    v_status text;
    v_new bigint;
BEGIN
    IF replay.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'id is required';
    END IF;
    SELECT f.queue, f.task, f.kind, f.status, f.payload, f.priority, (f.options).max_attempts,
           (f.options).timeout_seconds, (f.options).trace_id, f.replayed_as,
           pgrelay._delivery_id(f.id, f.options) AS delivery_id, f.enqueued_by
    INTO v_job
    FROM pgrelay._finished f WHERE f.id = replay.id
    FOR UPDATE;
    IF NOT FOUND THEN
        SELECT CASE WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END INTO v_status
        FROM pgrelay._jobs j WHERE j.id = replay.id;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'PT409',
                MESSAGE = format('job %s is %s: only finished jobs can be replayed', replay.id, v_status),
                HINT = 'cancel it first, or wait until it has finished';
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'PT404', MESSAGE = format('job %s not found (never enqueued, or purged)', replay.id);
    END IF;
    IF NOT coalesce(replay.force, false) THEN
        IF v_job.status = 's' THEN
            RAISE EXCEPTION USING ERRCODE = 'PT409',
                MESSAGE = format('job %s succeeded; replaying it would run it again', replay.id),
                HINT = 'pass force => true to replay a job that succeeded';
        END IF;
        IF v_job.replayed_as IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'PT409',
                MESSAGE = format('job %s was already replayed as job %s', replay.id, v_job.replayed_as),
                HINT = format('look at job %s, or pass force => true to replay job %s again', v_job.replayed_as, replay.id);
        END IF;
    END IF;
    -- a new job: its own id, attempts and keys (the original's keys stay with the original); its
    -- deliveries carry the id of the chain's first job, and it is still the original enqueuer's job
    v_new := pgrelay._enqueue(v_job.queue, v_job.task, v_job.kind, v_job.payload, now(), v_job.priority,
                              v_job.max_attempts, v_job.timeout_seconds, NULL, NULL, v_job.trace_id, replay.id);
    UPDATE pgrelay._jobs j SET options.delivery_id = v_job.delivery_id, enqueued_by = v_job.enqueued_by
    WHERE j.id = v_new;
    UPDATE pgrelay._finished f SET replayed_as = v_new WHERE f.id = replay.id;
    RETURN v_new;
END
$$;
COMMENT ON FUNCTION pgrelay.replay(bigint, boolean) IS
'Run a finished job again as a new pending job; returns the new job''s id (its replayed_from is id).

Dead-lettered and cancelled jobs replay as they are; a job that succeeded, or one already replayed, only
with force => true. The new job keeps queue, task, payload, priority, max_attempts, timeout and trace_id; it
has no idempotency or dedupe key and starts at attempt 0. Errors: PT404 unknown id (HTTP 404 through
PostgREST), PT409 the job is still active, succeeded or was replayed (HTTP 409).

Example: SELECT pgrelay.replay(101);';

CREATE FUNCTION pgrelay.replay_dead_letters(queue text, task text DEFAULT NULL, since timestamptz DEFAULT NULL,
                                            max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_count integer;
    v_queue_id integer;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', replay_dead_letters.queue, 128));
    IF length(replay_dead_letters.task) NOT BETWEEN 1 AND 200 OR pgrelay._bad_like(replay_dead_letters.task) THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = 'task must be a LIKE pattern of 1 to 200 characters, e.g. ''orders.%'', not ending with a lone \, or NULL for all';
    END IF;
    IF replay_dead_letters.since IN ('infinity', '-infinity') THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'since must be a point in time (or NULL for all)';
    END IF;
    PERFORM pgrelay._check(pgrelay._range_error('max_jobs', coalesce(replay_dead_letters.max_jobs, 1000), 1, 100000,
                                                ' (or NULL for 1000)'));
    -- (a queue without a row has never had a job, so it has no dead letters)
    SELECT q.id INTO v_queue_id FROM pgrelay._queues q WHERE q.queue = replay_dead_letters.queue;
    IF v_queue_id IS NULL THEN
        RETURN 0;
    END IF;
    -- SKIP LOCKED: a dead letter being replayed or purged right now is left to that caller
    WITH picked AS (
        SELECT f.id, f.queue, f.task, f.kind, f.payload, f.priority, f.options, f.finished_at, f.enqueued_by
        FROM pgrelay._finished f
        WHERE f.status = 'd' AND f.queue = replay_dead_letters.queue AND f.replayed_as IS NULL
          AND (replay_dead_letters.task IS NULL OR f.task LIKE replay_dead_letters.task)
          AND (replay_dead_letters.since IS NULL OR f.finished_at >= replay_dead_letters.since)
        ORDER BY f.finished_at, f.id
        LIMIT coalesce(replay_dead_letters.max_jobs, 1000)
        FOR UPDATE OF f SKIP LOCKED
    ), created AS (
        INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options, enqueued_by)
        SELECT pg_catalog.nextval('pgrelay._job_id_seq'), v_queue_id, p.queue, p.task, p.kind, p.payload, now(), p.priority,
               pgrelay._job_options((p.options).max_attempts, (p.options).timeout_seconds, NULL, NULL,
                                    (p.options).trace_id, p.id, pgrelay._delivery_id(p.id, p.options)), p.enqueued_by
        FROM (SELECT * FROM picked ORDER BY finished_at, id) p
        RETURNING pgrelay._jobs.id, (pgrelay._jobs.options).replayed_from AS replayed_from
    ), marked AS (
        UPDATE pgrelay._finished f SET replayed_as = c.id FROM created c WHERE f.id = c.replayed_from
        RETURNING f.id
    )
    SELECT count(*) INTO v_count FROM marked;
    IF v_count > 0 THEN
        PERFORM pgrelay._notify(replay_dead_letters.queue, now());
    END IF;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION pgrelay.replay_dead_letters(text, text, timestamptz, integer) IS
'Replay the dead letters of a queue that have not been replayed yet; returns how many new jobs it created.

task: a LIKE pattern (''orders.%''; NULL: all tasks). since: only jobs dead-lettered at or after this time.
Bounded: at most max_jobs (1 to 100000, default 1000) per call, oldest first; a return of max_jobs says more
may be left: call again. Each new job is what replay() would create; running it twice replays nothing twice.

Example: SELECT pgrelay.replay_dead_letters(''mail'', since => now() - interval ''1 day'');';

CREATE FUNCTION pgrelay.cancel(id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_leased boolean;
    v_attempt integer;
BEGIN
    IF cancel.id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'id is required';
    END IF;
    -- waits for a claim or completion of this job in progress, then acts on what it left
    SELECT j.leased_by IS NOT NULL, j.attempt INTO v_leased, v_attempt FROM pgrelay._jobs j WHERE j.id = cancel.id FOR UPDATE;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM pgrelay._finished f WHERE f.id = cancel.id) THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'PT404', MESSAGE = format('job %s not found (never enqueued, or purged)', cancel.id);
    END IF;
    IF v_leased THEN
        UPDATE pgrelay._jobs j SET cancel_requested_at = coalesce(j.cancel_requested_at, now()) WHERE j.id = cancel.id;
        RETURN true;
    END IF;
    PERFORM pgrelay._finish(ARRAY[cancel.id], ARRAY[v_attempt], 'cancelled', 'cancelled', p_leased => false);
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgrelay.cancel(bigint) IS
'Cancel a job: true if it was cancelled or its cancellation is under way; false if it had already finished.

A pending job is cancelled at once. A leased job is marked: the worker holding it learns at its next
heartbeat, which ends the job cancelled and tells the worker to stop the handler (a nack or release of that
attempt also ends it cancelled; an ack that comes first still succeeds it). PT404 for an unknown id.

Example: SELECT pgrelay.cancel(101);';

-- Remove these finished jobs, with their attempts and idempotency keys, skipping any a concurrent
-- caller holds (a replay marking a dead letter); returns the ids removed.
CREATE FUNCTION pgrelay._purge_jobs(p_ids bigint[])
RETURNS bigint[]
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
    -- (each job by its id, in every partition: a merge join read whole partitions in id order)
    SET enable_mergejoin = off SET enable_hashjoin = off AS $$
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
$$;

CREATE FUNCTION pgrelay.purge(older_than_days integer DEFAULT NULL, max_jobs integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off SET enable_seqscan = off SET enable_bitmapscan = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.purge(integer, integer) IS
'Remove finished jobs older than their retention, with their attempts and idempotency keys; returns how many.

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

CREATE FUNCTION pgrelay.maintain(max_jobs integer DEFAULT 10000)
RETURNS pgrelay.maintenance
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS
'Routine maintenance: recover() expired leases (at most max_jobs, and 100,000), then purge() finished jobs by
each queue''s retention (at most max_jobs), then tick() the schedules, and forget workers whose wait lapsed
(idle()); returns what it did. max_jobs: 1 to
10,000,000 (NULL: 10,000). A count of max_jobs (or 100,000 recovered) says more may be left: call again.
Run it from pg_cron every minute, or let the workers run it.

Example: SELECT * FROM pgrelay.maintain();';

CREATE FUNCTION pgrelay.maintenance_scheduled()
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_found boolean;
BEGIN
    IF pg_catalog.to_regclass('cron.job') IS NULL THEN
        RETURN false;
    END IF;
    BEGIN
        -- plpgsql_check reads this query against a catalog that may have no pg_cron (the check above
        -- is what keeps it from running then), so it is not checked:
        PERFORM 'PRAGMA:DISABLE:CHECK';
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job j WHERE j.active AND j.command ~ ''pgrelay\.(maintain|purge)\M'')'
        INTO v_found;
        PERFORM 'PRAGMA:ENABLE:CHECK';
    EXCEPTION WHEN insufficient_privilege THEN
        RETURN false;
    END;
    RETURN v_found;
END
$$;
COMMENT ON FUNCTION pgrelay.maintenance_scheduled() IS
'True when an active pg_cron job in this database runs pgrelay.maintain() or pgrelay.purge(); the workers
then leave purging to it.

Example: SELECT pgrelay.maintenance_scheduled();';
