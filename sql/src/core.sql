-- ---------------------------------------------------------------------------------------------
-- The private core every API goes through: queue ids, inserting, finishing and retrying jobs,
-- and picking the jobs a claim locks
-- ---------------------------------------------------------------------------------------------

-- A queue's id, its _queues row made at its first use. A queue made by a transaction that has not
-- committed yet is waited for (ON CONFLICT); under REPEATABLE READ, one made after the snapshot was
-- taken raises a serialization failure (40001), which the caller retries like any other. Called
-- once per queue and statement, never per row.
CREATE FUNCTION pgrelay._queue_id(p_queue text)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_id integer;
BEGIN
    SELECT q.id INTO v_id FROM pgrelay._queues q WHERE q.queue = p_queue;
    IF v_id IS NULL THEN
        INSERT INTO pgrelay._queues (queue) VALUES (p_queue) ON CONFLICT (queue) DO NOTHING RETURNING id INTO v_id;
        IF v_id IS NULL THEN
            SELECT q.id INTO v_id FROM pgrelay._queues q WHERE q.queue = p_queue;
        END IF;
    END IF;
    RETURN v_id;
END
$$;

-- A job's options column from its parts: NULL when none is set, never a row of NULLs (which would
-- still be stored, and which IS NULL would not tell from NULL). An SQL function of one expression,
-- inlined where it is called.
CREATE FUNCTION pgrelay._job_options(
    p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text,
    p_trace_id text, p_replayed_from bigint, p_delivery_id text DEFAULT NULL)
RETURNS pgrelay._job_options
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_max_attempts IS NOT NULL OR p_timeout_seconds IS NOT NULL OR p_idempotency_key IS NOT NULL
                  OR p_dedupe_key IS NOT NULL OR p_trace_id IS NOT NULL OR p_replayed_from IS NOT NULL
                  OR p_delivery_id IS NOT NULL
           THEN ROW(p_max_attempts, p_timeout_seconds, p_idempotency_key, p_dedupe_key, p_trace_id,
                    p_replayed_from, p_delivery_id)::pgrelay._job_options
           END
$$;

-- The id the deliveries of a replay of this finished job carry: that of the first job of the replay
-- chain, so a receiver can tell a resent delivery from new work (its idempotency key, else its id).
CREATE FUNCTION pgrelay._delivery_id(p_id bigint, p_options pgrelay._job_options)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce((p_options).delivery_id, (p_options).idempotency_key, p_id::text)
$$;

-- The one place that inserts a job (enqueue, enqueue_http, keyed enqueue_bulk elements).
-- Honours the idempotency key (within the queue, as long as the job or its history is kept) and the
-- dedupe key (among the queue's active jobs); both return the existing job's id.
CREATE FUNCTION pgrelay._enqueue(
    p_queue text, p_task text, p_kind "char", p_payload jsonb, p_run_at timestamptz, p_priority integer,
    p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text,
    p_trace_id text, p_replayed_from bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_existing bigint;
    v_queue_id integer;
BEGIN
    IF p_idempotency_key IS NULL AND p_dedupe_key IS NULL THEN
        -- The insert reads the queue's id itself, by a join; only a queue's first job makes its row
        -- and inserts again. (Cheaper than calling _queue_id first, or reading the id in a subquery.)
        LOOP
            INSERT INTO pgrelay._jobs (queue_id, queue, task, kind, payload, run_at, priority, options, enqueued_by)
            SELECT q.id, p_queue, p_task, p_kind, p_payload, p_run_at, p_priority,
                   pgrelay._job_options(p_max_attempts, p_timeout_seconds, NULL, NULL, p_trace_id, p_replayed_from),
                   pgrelay._caller()
            FROM pgrelay._queues q WHERE q.queue = p_queue
            RETURNING id INTO v_id;
            EXIT WHEN FOUND;
            PERFORM pgrelay._queue_id(p_queue);
        END LOOP;
    ELSE
        v_queue_id := pgrelay._queue_id(p_queue);
        LOOP
            IF p_idempotency_key IS NOT NULL THEN
                SELECT k.job_id INTO v_existing FROM pgrelay._idempotency_keys k
                WHERE k.queue_id = v_queue_id AND k.key = p_idempotency_key;
                IF FOUND THEN
                    RETURN v_existing;
                END IF;
            END IF;
            v_id := pg_catalog.nextval('pgrelay._job_id_seq');
            IF p_idempotency_key IS NOT NULL THEN
                -- waits for a concurrent transaction holding the same key, then skips if it committed
                INSERT INTO pgrelay._idempotency_keys (queue_id, key, job_id) VALUES (v_queue_id, p_idempotency_key, v_id)
                ON CONFLICT (queue_id, key) DO NOTHING;
                CONTINUE WHEN NOT FOUND;
            END IF;
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options,
                                       enqueued_by)
            VALUES (v_id, v_queue_id, p_queue, p_task, p_kind, p_payload, p_run_at, p_priority,
                    pgrelay._job_options(p_max_attempts, p_timeout_seconds, p_idempotency_key, p_dedupe_key,
                                         p_trace_id, p_replayed_from),
                    pgrelay._caller())
            ON CONFLICT (queue_id, ((options).dedupe_key)) WHERE (options).dedupe_key IS NOT NULL DO NOTHING;
            EXIT WHEN FOUND;
            SELECT j.id INTO v_existing FROM pgrelay._jobs j
            WHERE j.queue_id = v_queue_id AND (j.options).dedupe_key = p_dedupe_key;
            IF FOUND THEN
                IF p_idempotency_key IS NOT NULL THEN
                    UPDATE pgrelay._idempotency_keys SET job_id = v_existing
                    WHERE queue_id = v_queue_id AND key = p_idempotency_key;
                END IF;
                RETURN v_existing;
            END IF;
            -- the duplicate finished between our insert and our read: undo the key and try again
            IF p_idempotency_key IS NOT NULL THEN
                DELETE FROM pgrelay._idempotency_keys
                WHERE queue_id = v_queue_id AND key = p_idempotency_key AND job_id = v_id;
            END IF;
        END LOOP;
    END IF;
    PERFORM pgrelay._notify(p_queue, p_run_at);
    RETURN v_id;
END
$$;

-- (The hot-path helpers are PL/pgSQL rather than SQL functions: PL/pgSQL caches their plans, a
-- non-inlined SQL function is planned again on every call. They forbid sequential and bitmap scans:
-- a queue table's statistics are nearly always stale, and planned as "almost empty" a large
-- backlog was scanned on every claim and every ack; the indexes are always the right plan here.)
-- Move leased jobs (matched by id AND attempt, the fencing token) out of the hot table into the
-- history in one statement, and count them (see _counts); an attempt that did not succeed is
-- recorded first (a success is recorded by its _finished row). Returns the ids that moved ('{}' when
-- none did: an array, not a set of rows, which would cross one more result set). With p_leased false
-- it moves pending jobs instead (cancel()), recording no attempt.
-- Every job that finishes goes through here, so this function keeps the counters: an AFTER INSERT
-- trigger on _finished did the same with a second statement and a copy of every row. The pass
-- that collects the ids also finds whether the jobs share one queue (nearly always: a worker's batch
-- comes from one queue); then one counter row is added to, by the number of ids, which costs an ack
-- far less than a GROUP BY over the moved rows inside the move. Jobs of several queues are counted
-- per queue from their new history rows. The move returns only the columns the history takes.
-- (Two upserts, not one over a UNION ALL of both sources, which would start the unused branch on
-- every call.)
-- The attempts are a statement of their own, run only for failures: as a part of the move that
-- never wrote a row on success, it still opened _attempts and its index for every ack.
CREATE FUNCTION pgrelay._finish(
    p_ids bigint[], p_attempts integer[], p_status text, p_outcome text,
    p_results jsonb[] DEFAULT NULL, p_errors text[] DEFAULT NULL, p_details jsonb[] DEFAULT NULL,
    p_leased boolean DEFAULT true)
RETURNS bigint[]
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off AS $$
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
$$;

-- Put leased jobs (matched by id AND attempt) back to pending after the given delays, recording
-- how the attempt ended, and tell listening workers when they become due. Returns what moved.
CREATE FUNCTION pgrelay._retry(
    p_ids bigint[], p_attempts integer[], p_outcome text, p_errors text[], p_delays double precision[],
    p_details jsonb[] DEFAULT NULL)
RETURNS TABLE (id bigint, queue text, run_at timestamptz)
LANGUAGE plpgsql SET enable_seqscan = off SET enable_bitmapscan = off AS $$
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
$$;

-- The counters behind queue_stats (see _counts) lose what leaves the history, whatever removes it
-- (purge, or an operator): one upsert per queue per statement, off the queue's total row. (What
-- arrives is counted by _finish.)
CREATE FUNCTION pgrelay._count_removed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- "removed" is the trigger's transition table; for plpgsql_check:
-- @plpgsql_check_options: oldtable = removed
BEGIN
    INSERT INTO pgrelay._counts AS c (queue, minute, backend, succeeded, dead_letter, cancelled)
    SELECT x.queue, '-infinity', 0,
           -count(*) FILTER (WHERE x.status = 's'),
           -count(*) FILTER (WHERE x.status = 'd'),
           -count(*) FILTER (WHERE x.status = 'c')
    FROM removed x GROUP BY x.queue ORDER BY x.queue
    ON CONFLICT ON CONSTRAINT _counts_pkey DO UPDATE
    SET succeeded = c.succeeded + excluded.succeeded, dead_letter = c.dead_letter + excluded.dead_letter,
        cancelled = c.cancelled + excluded.cancelled;
    RETURN NULL;
END
$$;
CREATE TRIGGER _finished_count_removed AFTER DELETE ON pgrelay._finished
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION pgrelay._count_removed();

-- Whether a pending job is one a consumer asked for: p_tasks, LIKE patterns of its task (NULL: any);
-- p_handlers, the handler tasks it can run (NULL: any; HTTP jobs are not affected); p_kinds, the
-- kinds it runs (NULL: any). An SQL function of one expression, inlined into every claim query (so
-- they all filter alike); with the arguments NULL the filter costs three tests of a parameter.
CREATE FUNCTION pgrelay._claimable(p_task text, p_kind "char", p_tasks text[], p_handlers text[], p_kinds text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (p_tasks IS NULL OR p_task LIKE ANY (p_tasks))
       AND (p_kinds IS NULL OR pgrelay._kind_name(p_kind) = ANY (p_kinds))
       AND (p_handlers IS NULL OR p_kind <> 'h' OR p_task = ANY (p_handlers))
$$;

-- Lock up to p_limit due jobs of p_queues in claim order, skipping locked rows and the excluded
-- queues, and those _claimable rejects. One queue is read straight from its part of the claim index.
-- For several, a first pass reads (without locking) the first p_limit due jobs of each queue and
-- counts how many of the first p_limit in the merged claim order each queue holds; each queue then
-- locks that many, skipping locked rows. So the batch follows the claim order across queues without
-- locking p_limit rows in every queue. Returns the locked jobs' ids, queues and ctids (all NULL when
-- it locked none).
CREATE FUNCTION pgrelay._pick(
    p_queues text[], p_excluded text[], p_limit integer, p_tasks text[], p_handlers text[], p_kinds text[])
RETURNS pgrelay._picked
LANGUAGE plpgsql SET enable_sort = off SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    v_ids integer[];
    v_takes integer[];
    v_picked pgrelay._picked;
BEGIN
    -- the queues' ids (a queue without a row has never had a job)
    SELECT array_agg(q.id) INTO v_ids
    FROM pgrelay._queues q WHERE q.queue = ANY (p_queues) AND q.queue <> ALL (p_excluded);
    IF v_ids IS NULL THEN
        RETURN v_picked;
    ELSIF cardinality(v_ids) = 1 THEN
        v_takes := ARRAY[p_limit];
    ELSE
        SELECT array_agg(t.queue_id), array_agg(t.take) INTO v_ids, v_takes
        FROM (SELECT h.queue_id, count(*)::integer AS take
              FROM (SELECT c.queue_id FROM unnest(v_ids) AS q(id) CROSS JOIN LATERAL (
                        SELECT j.queue_id, j.priority, j.run_at, j.id FROM pgrelay._jobs j
                        WHERE j.leased_by IS NULL AND j.queue_id = q.id AND j.run_at <= now()
                          AND pgrelay._claimable(j.task, j.kind, p_tasks, p_handlers, p_kinds)
                        ORDER BY j.priority DESC, j.run_at, j.id
                        LIMIT p_limit) c
                    ORDER BY c.priority DESC, c.run_at, c.id
                    LIMIT p_limit) h
              GROUP BY h.queue_id) t;
        IF v_ids IS NULL THEN
            RETURN v_picked;
        END IF;
    END IF;
    SELECT array_agg(c.id), array_agg(c.queue), array_agg(c.ctid) INTO v_picked
        FROM unnest(v_ids, v_takes) AS q(id, take) CROSS JOIN LATERAL (
            SELECT j.id, j.queue, j.ctid FROM pgrelay._jobs j
            WHERE j.leased_by IS NULL AND j.queue_id = q.id AND j.run_at <= now()
              AND pgrelay._claimable(j.task, j.kind, p_tasks, p_handlers, p_kinds)
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT q.take
            FOR UPDATE OF j SKIP LOCKED) c;
    RETURN v_picked;
END
$$;
