-- ---------------------------------------------------------------------------------------------
-- Worker API
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.consume(
    worker text,
    queues text[] DEFAULT NULL,
    batch integer DEFAULT 1,
    lease_seconds integer DEFAULT NULL,
    tasks text[] DEFAULT NULL,
    handlers text[] DEFAULT NULL,
    kinds text[] DEFAULT NULL)
RETURNS SETOF pgrelay.claimed_job
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_mergejoin = off SET enable_hashjoin = off AS $$
DECLARE
    v_batch integer := coalesce(consume.batch, 1);
    v_excluded text[];
    v_limited record;
    v_slots integer;
    v_picked pgrelay._picked;
    v_more pgrelay._picked;
    v_name text;
    v_queues text[];
    v_queue_id integer;
    v_special boolean;
    v_lease_seconds integer;
    v_max_attempts integer;
BEGIN
    -- (the checks are written as simple expressions: PL/pgSQL evaluates those without starting an
    -- executor, which a query in an IF costs on every call)
    PERFORM pgrelay._check(pgrelay._name_error('worker', consume.worker, 200, '/@'));
    IF v_batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('batch must be between 1 and 10000, not %s', v_batch);
    END IF;
    IF consume.lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('lease_seconds must be between 1 and 86400 (or NULL for the queue''s setting), not %s', consume.lease_seconds);
    END IF;
    FOREACH v_name IN ARRAY coalesce(consume.queues, '{}') LOOP
        PERFORM pgrelay._check(pgrelay._name_error('queue', v_name, 128));
    END LOOP;
    FOREACH v_name IN ARRAY coalesce(consume.tasks, '{}') LOOP
        IF v_name IS NULL OR length(v_name) NOT BETWEEN 1 AND 200 OR pgrelay._bad_like(v_name) THEN
            RAISE EXCEPTION USING ERRCODE = 'PR001',
                MESSAGE = 'tasks must be LIKE patterns of 1 to 200 characters, e.g. ''{orders.%}''; end none with a lone \';
        END IF;
    END LOOP;
    IF array_position(consume.handlers, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'handlers must be task names (no NULL elements)';
    END IF;
    IF NOT consume.kinds <@ ARRAY['handler', 'http'] OR array_position(consume.kinds, NULL) IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'kinds may hold handler and http';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'PR005',
            MESSAGE = format('pgrelay.consume needs READ COMMITTED isolation, not %s', current_setting('transaction_isolation')),
            HINT = 'call it in its own transaction; queue concurrency limits cannot be kept from an older snapshot';
    END IF;

    -- All queues: those with pending jobs, found by a loose scan of the claim index (one probe per
    -- queue, however large a backlog).
    IF consume.queues IS NOT NULL THEN
        v_queues := consume.queues;
    ELSE
        v_queues := ARRAY(
            WITH RECURSIVE active(queue_id) AS (
                (SELECT j.queue_id FROM pgrelay._jobs j WHERE j.leased_by IS NULL ORDER BY j.queue_id LIMIT 1)
                UNION ALL
                SELECT (SELECT j.queue_id FROM pgrelay._jobs j
                        WHERE j.leased_by IS NULL AND j.queue_id > a.queue_id ORDER BY j.queue_id LIMIT 1)
                FROM active a WHERE a.queue_id IS NOT NULL)
            SELECT q.queue FROM active a JOIN pgrelay._queues q ON q.id = a.queue_id ORDER BY q.queue);
    END IF;
    IF cardinality(v_queues) = 0 THEN
        RETURN;
    END IF;

    -- The common case, one queue that is neither paused nor limited, takes one statement: the jobs
    -- are locked (SKIP LOCKED, in claim order) and leased by the same UPDATE, as a loop over the
    -- locked rows that fetches each where the pick found it (by ctid; the id is compared as well).
    -- The loop runs in claim order and RETURNING gives the rows as it updates them, so they come back
    -- in claim order without a sort (tests/sql/test_consume.py checks the order). Through _pick, the
    -- general path below (a nested call, whose picks are gathered into arrays and unnested again),
    -- the common claim costs markedly more.
    -- (A job that another transaction released after this statement's snapshot was taken can be
    -- locked here but not leased, as its new row is not visible to the snapshot: it stays pending
    -- for the next claim.)
    IF cardinality(v_queues) = 1 THEN
        SELECT q.id, q.paused OR q.concurrency IS NOT NULL, q.lease_seconds, q.max_attempts
            INTO v_queue_id, v_special, v_lease_seconds, v_max_attempts
        FROM pgrelay._queues q WHERE q.queue = v_queues[1];
        IF v_queue_id IS NULL THEN
            RETURN;  -- a queue without a row has never had a job
        ELSIF NOT v_special THEN
            RETURN QUERY
            UPDATE pgrelay._jobs j
            SET attempt = j.attempt + 1,
                leased_by = consume.worker,
                leased_at = now(),
                lease_expires_at = now() + make_interval(secs => coalesce(
                    consume.lease_seconds, v_lease_seconds, pgrelay._default_lease_seconds()))
            FROM (SELECT p.id, p.ctid FROM pgrelay._jobs p
                  WHERE p.leased_by IS NULL AND p.queue_id = v_queue_id AND p.run_at <= now()
                    AND pgrelay._claimable(p.task, p.kind, consume.tasks, consume.handlers, consume.kinds)
                  ORDER BY p.priority DESC, p.run_at, p.id
                  LIMIT v_batch
                  FOR UPDATE OF p SKIP LOCKED) c
            WHERE j.ctid = c.ctid AND j.id = c.id
            RETURNING j.id, j.queue, j.task, pgrelay._kind_name(j.kind), j.payload, j.attempt,
                      coalesce((j.options).max_attempts, v_max_attempts, pgrelay._default_max_attempts()),
                      j.lease_expires_at, (j.options).timeout_seconds, (j.options).trace_id, j.priority, j.run_at,
                      j.created_at, (j.options).idempotency_key, (j.options).delivery_id;
            RETURN;
        END IF;
    END IF;

    -- paused queues and queues with a concurrency limit are left out of the common pick
    SELECT coalesce(array_agg(q.queue), '{}') INTO v_excluded
    FROM pgrelay._queues q
    WHERE (q.paused OR q.concurrency IS NOT NULL) AND q.queue = ANY (v_queues);

    v_picked := pgrelay._pick(v_queues, v_excluded, v_batch, consume.tasks, consume.handlers, consume.kinds);

    -- A limited queue is picked only under its settings row's lock, so one claimer at a time counts
    -- its leases (those committed before the lock was granted) and takes at most the free slots:
    -- the limit holds across any number of workers. SKIP LOCKED: a claimer never waits for another;
    -- the one holding the lock takes the free slots.
    IF v_excluded <> '{}' THEN
        FOR v_limited IN
            SELECT q.queue, q.id, q.concurrency FROM pgrelay._queues q
            WHERE q.concurrency IS NOT NULL AND NOT q.paused
              AND q.queue = ANY (v_queues)
              AND EXISTS (SELECT 1 FROM pgrelay._jobs j
                          WHERE j.queue_id = q.id AND j.leased_by IS NULL AND j.run_at <= now())
            ORDER BY q.queue
            FOR UPDATE OF q SKIP LOCKED
        LOOP
            SELECT v_limited.concurrency - count(*) INTO v_slots
            FROM pgrelay._jobs j WHERE j.queue_id = v_limited.id AND j.lease_expires_at IS NOT NULL;  -- leased
            IF v_slots > 0 THEN
                v_more := pgrelay._pick(ARRAY[v_limited.queue], '{}', LEAST(v_slots, v_batch), consume.tasks,
                                        consume.handlers, consume.kinds);
                v_picked := ROW(v_picked.ids || v_more.ids, v_picked.queues || v_more.queues,
                                v_picked.ctids || v_more.ctids);
            END IF;
        END LOOP;
    END IF;

    -- One claim order across all picked queues; rows picked but not taken stay unleased. The picks
    -- of one queue are in claim order already (_pick aggregates its index scan as read); picks of
    -- several queues follow each other queue by queue, so they are merged here.
    IF v_picked.ids IS NULL THEN
        RETURN;
    ELSIF cardinality(v_picked.ids) > v_batch OR v_picked.queues[1] <> ANY (v_picked.queues) THEN
        -- (the rows are locked by this transaction, so their claim-order keys are as _pick saw them;
        -- the aggregates read the sorted subquery in its order, as _pick's do its index scan)
        SELECT array_agg(t.id), array_agg(t.queue), array_agg(t.ctid) INTO v_picked
        FROM (SELECT j.id, j.queue, j.ctid FROM pgrelay._jobs j WHERE j.id = ANY (v_picked.ids)
              ORDER BY j.priority DESC, j.run_at, j.id LIMIT v_batch) t;
    END IF;
    -- Lease them. The plan is pinned (the SET clauses above) to a loop over the jobs that fetches each
    -- row where _pick found it: a row locked by this transaction cannot move, and reading it by ctid
    -- saves a primary-key descent per job (the id is compared as well). No other filter on _jobs (the
    -- rows are ours, locked as pending), so no stale selectivity can make a whole-table plan look
    -- cheap. The settings of their queues are read once: an index probe per job cost as much as the
    -- rest of the lease. As in the one-queue statement above, the loop runs in claim order (that of
    -- v_picked) and RETURNING keeps it.
    RETURN QUERY
    WITH settings AS MATERIALIZED (
        SELECT q.queue, q.lease_seconds, q.max_attempts FROM pgrelay._queues q WHERE q.queue = ANY (v_picked.queues)
    )
    UPDATE pgrelay._jobs j
    SET attempt = j.attempt + 1,
        leased_by = consume.worker,
        leased_at = now(),
        lease_expires_at = now() + make_interval(secs => coalesce(
            consume.lease_seconds, c.lease_seconds, pgrelay._default_lease_seconds()))
    FROM (SELECT u.id, u.ctid, s.lease_seconds, s.max_attempts
          FROM unnest(v_picked.ids, v_picked.queues, v_picked.ctids) AS u(id, queue, ctid)
               LEFT JOIN settings s ON s.queue = u.queue) c
    WHERE j.ctid = c.ctid AND j.id = c.id
    RETURNING j.id, j.queue, j.task, pgrelay._kind_name(j.kind), j.payload, j.attempt,
              coalesce((j.options).max_attempts, c.max_attempts, pgrelay._default_max_attempts()),
              j.lease_expires_at, (j.options).timeout_seconds, (j.options).trace_id, j.priority, j.run_at,
              j.created_at, (j.options).idempotency_key, (j.options).delivery_id;
END
$$;
COMMENT ON FUNCTION pgrelay.consume(text, text[], integer, integer, text[], text[], text[]) IS
'Lease up to batch due jobs to a worker; returns them as pgrelay.claimed_job, attempt already incremented.

worker: the worker''s id. queues: NULL for all. lease_seconds: NULL for the queue''s setting (default 30).
tasks: LIKE patterns (''orders.%''). handlers: the handler tasks the caller can run (NULL: any; HTTP jobs are
not affected). kinds: handler and/or http (NULL: both). Order: higher priority, then run_at, then id; FOR UPDATE SKIP LOCKED, so
concurrent consumers never get the same job. Paused queues are skipped; a queue''s concurrency limit holds
across all workers. Needs READ COMMITTED (PR005). Complete each job with ack/nack passing its id and attempt.

Example: SELECT * FROM pgrelay.consume(''worker-1'', queues => ''{default}'', batch => 10);';

-- ack_each's and ack_many's arguments: the message when they do not fit together, else NULL.
-- (STABLE, as format() is: an IMMUTABLE wrapper of a STABLE body is never inlined, and a SQL function
-- that is not inlined is planned again in every transaction.)
CREATE FUNCTION pgrelay._ack_args_error(p_ids bigint[], p_attempts integer[], p_results jsonb[])
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_ids IS NULL OR p_attempts IS NULL
                  OR pg_catalog.cardinality(p_ids) <> pg_catalog.cardinality(p_attempts)
                  OR pg_catalog.cardinality(p_ids) <> coalesce(pg_catalog.cardinality(p_results), pg_catalog.cardinality(p_ids))
           THEN pg_catalog.format('ids, attempts (and results, when given) must be arrays of the same length; got %s, %s and %s',
                                  coalesce(pg_catalog.cardinality(p_ids)::text, 'NULL'),
                                  coalesce(pg_catalog.cardinality(p_attempts)::text, 'NULL'),
                                  coalesce(pg_catalog.cardinality(p_results)::text, 'NULL'))
           END
$$;

CREATE FUNCTION pgrelay.ack_each(ids bigint[], attempts integer[], results jsonb[] DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_error text := pgrelay._ack_args_error(ack_each.ids, ack_each.attempts, ack_each.results);
BEGIN
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = v_error;
    END IF;
    RETURN QUERY SELECT unnest(pgrelay._finish(ack_each.ids, ack_each.attempts, 'succeeded', 'succeeded', ack_each.results));
END
$$;
COMMENT ON FUNCTION pgrelay.ack_each(bigint[], integer[], jsonb[]) IS
'ack_many that returns the ids it acked: those whose attempt still held the lease.

Example: SELECT * FROM pgrelay.ack_each(''{101,102}'', ''{1,1}'');';

-- (PL/pgSQL: as an SQL function around a count(*) it could not be inlined and was planned on every call.
-- It calls _finish itself: through ack_each, every job crossed one more function's result set.)
CREATE FUNCTION pgrelay.ack_many(ids bigint[], attempts integer[], results jsonb[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_error text := pgrelay._ack_args_error(ack_many.ids, ack_many.attempts, ack_many.results);
BEGIN
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = v_error;
    END IF;
    RETURN cardinality(pgrelay._finish(ack_many.ids, ack_many.attempts, 'succeeded', 'succeeded', ack_many.results));
END
$$;
COMMENT ON FUNCTION pgrelay.ack_many(bigint[], integer[], jsonb[]) IS
'Mark many leased jobs succeeded in one statement; returns how many were still held.

ids, attempts: from consume, same length. results: optional JSON result per job. A job whose attempt is no
longer the current lease (it expired and was recovered or re-leased) is left alone and not counted.

Example: SELECT pgrelay.ack_many(''{101,102}'', ''{1,1}'');';

CREATE FUNCTION pgrelay.ack(id bigint, attempt integer, result jsonb DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    IF ack.id IS NULL OR ack.attempt IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'id and attempt are required (both come from consume)';
    END IF;
    RETURN cardinality(pgrelay._finish(ARRAY[ack.id], ARRAY[ack.attempt], 'succeeded', 'succeeded', ARRAY[ack.result])) = 1;
END
$$;
COMMENT ON FUNCTION pgrelay.ack(bigint, integer, jsonb) IS
'Mark a leased job succeeded, storing an optional JSON result; true if this attempt still held the lease.

A stale attempt (the lease expired and the job was recovered or leased again) changes nothing and returns false.

Example: SELECT pgrelay.ack(id => 101, attempt => 1, result => ''{"sent": true}'');';

CREATE FUNCTION pgrelay.nack(
    id bigint,
    attempt integer,
    error text,
    retry_after_seconds double precision DEFAULT NULL,
    permanent boolean DEFAULT false,
    outcome text DEFAULT 'failed',
    details jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_job record;
BEGIN
    IF nack.id IS NULL OR nack.attempt IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'id and attempt are required (both come from consume)';
    END IF;
    IF nack.error IS NULL OR nack.error = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'error must describe what went wrong (it is shown to operators)';
    END IF;
    IF nack.retry_after_seconds = 'NaN' OR nack.retry_after_seconds < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('retry_after_seconds must be 0 or more seconds (or NULL for the backoff), not %s',
                             nack.retry_after_seconds);
    END IF;
    IF coalesce(nack.outcome, 'failed') NOT IN ('failed', 'timeout', 'cancelled') THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('outcome must be failed, timeout or cancelled, not %s', quote_literal(nack.outcome));
    END IF;

    SELECT j.attempt, j.cancel_requested_at,
           coalesce((j.options).max_attempts, q.max_attempts, pgrelay._default_max_attempts()) AS max_attempts,
           coalesce(q.backoff_base_seconds, pgrelay._default_backoff_base_seconds()) AS backoff_base,
           coalesce(q.backoff_max_seconds, pgrelay._default_backoff_max_seconds()) AS backoff_max
    INTO v_job
    FROM pgrelay._jobs j LEFT JOIN pgrelay._queues q ON q.queue = j.queue
    WHERE j.id = nack.id AND j.attempt = nack.attempt AND j.leased_by IS NOT NULL
    FOR UPDATE OF j;
    IF NOT FOUND THEN
        RETURN 'stale';
    END IF;

    IF v_job.cancel_requested_at IS NOT NULL THEN
        PERFORM pgrelay._finish(ARRAY[nack.id], ARRAY[nack.attempt], 'cancelled', 'cancelled',
                                NULL, ARRAY[left(nack.error, 10000)], ARRAY[nack.details]);
        RETURN 'cancelled';
    END IF;

    IF coalesce(nack.permanent, false) OR v_job.attempt >= v_job.max_attempts THEN
        PERFORM pgrelay._finish(ARRAY[nack.id], ARRAY[nack.attempt], 'dead_letter', coalesce(nack.outcome, 'failed'),
                                NULL, ARRAY[left(nack.error, 10000)], ARRAY[nack.details]);
        RETURN 'dead_letter';
    END IF;
    PERFORM pgrelay._notify(r.queue, r.run_at)
    FROM pgrelay._retry(ARRAY[nack.id], ARRAY[nack.attempt], coalesce(nack.outcome, 'failed'), ARRAY[left(nack.error, 10000)],
        ARRAY[least(coalesce(nack.retry_after_seconds,
                             pgrelay._backoff(v_job.attempt, v_job.backoff_base, v_job.backoff_max)),
                    31536000)],   -- a year at most
        ARRAY[nack.details]) r;
    RETURN 'pending';
END
$$;
COMMENT ON FUNCTION pgrelay.nack(bigint, integer, text, double precision, boolean, text, jsonb) IS
'Report a failed attempt; returns the job''s new status: pending, dead_letter, cancelled, or stale.

pending: retried after exponential backoff with jitter (queue settings; default 1 s doubling up to 1 h), or
after retry_after_seconds when given (0 or more; a longer delay than a year, Infinity included, waits a
year: a worker may pass on whatever a server''s Retry-After said). dead_letter: permanent => true, or no attempts left. cancelled: an
operator asked to cancel the job (cancel()) while it ran, so it is not retried. stale: this attempt
no longer holds the lease; nothing changed. outcome (failed, timeout, cancelled) and details (JSON, e.g. an
HTTP status) are recorded in the attempt history.

Example: SELECT pgrelay.nack(id => 101, attempt => 1, error => ''SMTP 451'', retry_after_seconds => 30);';

CREATE FUNCTION pgrelay.check_task_names(tasks text[])
RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_error text;
BEGIN
    SELECT pgrelay._name_error('task', t, 200, '/') INTO v_error
    FROM unnest(check_task_names.tasks) WITH ORDINALITY u(t, n)
    WHERE pgrelay._name_error('task', t, 200, '/') IS NOT NULL
    ORDER BY n LIMIT 1;
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = v_error;
    END IF;
    RETURN coalesce(cardinality(check_task_names.tasks), 0);
END
$$;
COMMENT ON FUNCTION pgrelay.check_task_names(text[]) IS
'Refuse (PR001, with enqueue''s message) the first of these names that enqueue would refuse as a task name;
returns how many it checked when all are valid. A worker calls it at start for the tasks it has handlers for, so a handler that
no job could ever name stops it at once instead of waiting in vain.

Example: SELECT pgrelay.check_task_names(ARRAY[''emails.send'', ''billing.charge'']);';

CREATE FUNCTION pgrelay.heartbeat(
    worker text,
    ids bigint[] DEFAULT '{}',
    lease_seconds integer DEFAULT NULL,
    host text DEFAULT NULL,
    pid integer DEFAULT NULL,
    queues text[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_lost bigint[];
    v_cancel_ids bigint[];
    v_cancel_attempts integer[];
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('worker', heartbeat.worker, 200, '/@'));
    IF heartbeat.lease_seconds NOT BETWEEN 1 AND 86400 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('lease_seconds must be between 1 and 86400 (or NULL for the queue''s setting), not %s', heartbeat.lease_seconds);
    END IF;
    IF cardinality(heartbeat.queues) > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'queues must list at most 1000 queues (or be NULL for all)';
    ELSIF heartbeat.queues IS NOT NULL THEN
        PERFORM pgrelay._check((SELECT pgrelay._name_error('queue', q, 128) FROM unnest(heartbeat.queues) q
                                WHERE pgrelay._name_error('queue', q, 128) IS NOT NULL LIMIT 1));
    END IF;
    INSERT INTO pgrelay._workers AS w (worker, host, pid, queues, lease_seconds)
    VALUES (heartbeat.worker, left(heartbeat.host, 255), heartbeat.pid, heartbeat.queues, heartbeat.lease_seconds)
    ON CONFLICT ON CONSTRAINT _workers_pkey DO UPDATE
    SET last_seen = now(),
        host = coalesce(excluded.host, w.host),
        pid = coalesce(excluded.pid, w.pid),
        queues = coalesce(excluded.queues, w.queues),
        lease_seconds = coalesce(excluded.lease_seconds, w.lease_seconds);

    IF coalesce(cardinality(heartbeat.ids), 0) = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    -- SKIP LOCKED: a row locked right now is being acked, nacked or recovered; the heartbeat never
    -- waits for (or deadlocks with) those, and the next heartbeat reports the outcome.
    WITH extended AS (
        UPDATE pgrelay._jobs j
        SET lease_expires_at = now() + make_interval(
                secs => coalesce(heartbeat.lease_seconds, q.lease_seconds, pgrelay._default_lease_seconds()))
        FROM (SELECT h.id, h.queue FROM pgrelay._jobs h
              WHERE h.id = ANY (heartbeat.ids) AND h.leased_by = heartbeat.worker AND h.leased_by IS NOT NULL
              FOR UPDATE SKIP LOCKED) held
             LEFT JOIN pgrelay._queues q ON q.queue = held.queue
        WHERE j.id = held.id
        RETURNING j.id, j.attempt, j.cancel_requested_at
    )
    SELECT array_agg(e.id), array_agg(e.attempt) INTO v_cancel_ids, v_cancel_attempts
    FROM extended e WHERE e.cancel_requested_at IS NOT NULL;
    -- jobs an operator cancelled while they ran end here, and are reported as no longer held
    IF v_cancel_ids IS NOT NULL THEN
        PERFORM pgrelay._finish(v_cancel_ids, v_cancel_attempts, 'cancelled', 'cancelled', NULL,
                                array_fill('cancelled by an operator'::text, ARRAY[cardinality(v_cancel_ids)]));
    END IF;

    SELECT coalesce(array_agg(DISTINCT i ORDER BY i), '{}') INTO v_lost
    FROM unnest(heartbeat.ids) i
    WHERE i IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pgrelay._jobs j WHERE j.id = i AND j.leased_by = heartbeat.worker AND j.leased_by IS NOT NULL);
    RETURN v_lost;
END
$$;
COMMENT ON FUNCTION pgrelay.heartbeat(text, bigint[], integer, text, integer, text[]) IS
'Record the worker as alive and extend its leases on ids; returns the ids it no longer holds.

A returned id was acked, recovered after its lease expired, leased to someone else, or cancelled by an
operator (cancel(); the job ends cancelled here): stop working on it.
lease_seconds: NULL for the queue''s setting. host, pid, queues, lease_seconds: shown in the workers view.

Example: SELECT pgrelay.heartbeat(''worker-1'', ''{101,102}'');';

CREATE FUNCTION pgrelay.release(id bigint, attempt integer, reason text DEFAULT 'released by the worker')
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_queue text;
BEGIN
    IF release.id IS NULL OR release.attempt IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'id and attempt are required (both come from consume)';
    END IF;
    IF EXISTS (SELECT 1 FROM pgrelay._jobs j
               WHERE j.id = release.id AND j.attempt = release.attempt AND j.leased_by IS NOT NULL
                 AND j.cancel_requested_at IS NOT NULL) THEN
        RETURN cardinality(pgrelay._finish(ARRAY[release.id], ARRAY[release.attempt], 'cancelled', 'cancelled',
                                           NULL, ARRAY[left(coalesce(release.reason, 'released by the worker'), 10000)])) > 0;
    END IF;
    SELECT r.queue INTO v_queue
    FROM pgrelay._retry(ARRAY[release.id], ARRAY[release.attempt], 'cancelled',
                        ARRAY[left(coalesce(release.reason, 'released by the worker'), 10000)], ARRAY[0::double precision]) r;
    IF v_queue IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pgrelay._notify(v_queue, now());
    RETURN true;
END
$$;
COMMENT ON FUNCTION pgrelay.release(bigint, integer, text) IS
'Hand a leased job back unfinished (a worker shutting down): pending again at once, never dead-lettered
for it; the attempt is recorded as cancelled with the reason. False if this attempt no longer holds the lease.
A job an operator cancelled (cancel()) while it ran ends cancelled instead.

Example: SELECT pgrelay.release(id => 101, attempt => 1, reason => ''worker shutting down'');';

CREATE FUNCTION pgrelay.recover(max_jobs integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_total integer := 0;
    v_max integer := coalesce(recover.max_jobs, 1000);
    v_batch record;
BEGIN
    PERFORM pgrelay._check(pgrelay._range_error('max_jobs', v_max, 1, 100000, ' (or NULL for 1000)'));
    WHILE v_total < v_max LOOP
        -- SKIP LOCKED: jobs being acked right now are theirs; recover never waits, so many may run at once.
        SELECT array_agg(e.id) AS ids, array_agg(e.attempt) AS attempts,
               array_agg(e.id) FILTER (WHERE e.cancelled) AS cancel_ids,
               array_agg(e.attempt) FILTER (WHERE e.cancelled) AS cancel_attempts,
               array_agg(e.id) FILTER (WHERE NOT e.cancelled AND e.attempt >= e.max_attempts) AS dead_ids,
               array_agg(e.attempt) FILTER (WHERE NOT e.cancelled AND e.attempt >= e.max_attempts) AS dead_attempts,
               array_agg(e.id) FILTER (WHERE NOT e.cancelled AND e.attempt < e.max_attempts) AS retry_ids,
               array_agg(e.attempt) FILTER (WHERE NOT e.cancelled AND e.attempt < e.max_attempts) AS retry_attempts,
               array_agg(pgrelay._backoff(e.attempt, e.backoff_base, e.backoff_max))
                   FILTER (WHERE NOT e.cancelled AND e.attempt < e.max_attempts) AS delays
        INTO v_batch
        FROM (
            SELECT x.id, x.attempt, x.cancel_requested_at IS NOT NULL AS cancelled,
                   coalesce(x.max_attempts, q.max_attempts, pgrelay._default_max_attempts()) AS max_attempts,
                   coalesce(q.backoff_base_seconds, pgrelay._default_backoff_base_seconds()) AS backoff_base,
                   coalesce(q.backoff_max_seconds, pgrelay._default_backoff_max_seconds()) AS backoff_max
            FROM (SELECT j.id, j.attempt, j.queue, (j.options).max_attempts, j.cancel_requested_at FROM pgrelay._jobs j
                  WHERE j.leased_by IS NOT NULL AND j.lease_expires_at < now()
                  ORDER BY j.lease_expires_at
                  LIMIT least(1000, v_max - v_total)
                  FOR UPDATE SKIP LOCKED) x
            LEFT JOIN pgrelay._queues q ON q.queue = x.queue
        ) e;
        EXIT WHEN v_batch.ids IS NULL;
        IF v_batch.cancel_ids IS NOT NULL THEN
            PERFORM pgrelay._finish(v_batch.cancel_ids, v_batch.cancel_attempts, 'cancelled', 'lease_expired', NULL,
                                    array_fill('lease expired after cancel() was requested'::text,
                                               ARRAY[cardinality(v_batch.cancel_ids)]));
        END IF;
        IF v_batch.dead_ids IS NOT NULL THEN
            PERFORM pgrelay._finish(v_batch.dead_ids, v_batch.dead_attempts, 'dead_letter', 'lease_expired', NULL,
                                    array_fill('lease expired; no attempts left'::text, ARRAY[cardinality(v_batch.dead_ids)]));
        END IF;
        IF v_batch.retry_ids IS NOT NULL THEN
            PERFORM pgrelay._notify(r.queue, min(r.run_at))
            FROM pgrelay._retry(v_batch.retry_ids, v_batch.retry_attempts, 'lease_expired',
                                array_fill('lease expired'::text, ARRAY[cardinality(v_batch.retry_ids)]), v_batch.delays) r
            GROUP BY r.queue;
        END IF;
        v_total := v_total + cardinality(v_batch.ids);
    END LOOP;
    RETURN v_total;
END
$$;
COMMENT ON FUNCTION pgrelay.recover(integer) IS
'Return jobs whose lease expired to pending (after backoff), or to dead_letter when no attempts are left
(to cancelled when cancel() was asked for); returns how many were recovered. Each is recorded as an attempt with outcome lease_expired.

Bounded: at most max_jobs (1 to 100000, default 1000) per call, oldest expiry first. A return of max_jobs
says more may be left: call again (each call in its own transaction keeps locks short).
Safe to run from many workers at once and from pg_cron (jobs being completed are skipped, never waited for).

Example: SELECT pgrelay.recover();  SELECT pgrelay.recover(max_jobs => 10000);';
