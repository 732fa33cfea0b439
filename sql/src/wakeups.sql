-- ---------------------------------------------------------------------------------------------
-- Wakeups: a worker that found nothing to claim says so (idle), and producers NOTIFY only while a
-- worker waits on their queue. A busy worker claims again as soon as it has free slots and costs
-- producers no NOTIFY, whose lock at commit serialises every transaction that sends one.
--
-- No wakeup is lost. idle() sets the worker's bits in _wakeup_bits, then takes a snapshot. A
-- producer reads the bits after its write to _jobs (_notify), that is after its transaction got its
-- id. If it read them before idle() set them, its transaction had its id before idle()'s snapshot
-- was taken: it had committed by then, and the worker's next claim sees its jobs; or it was still
-- running, and idle() returns its id, so the worker claims again once it has ended (idle_check()).
-- Otherwise it saw the bit and sends NOTIFY, which the worker receives: it LISTENs before it calls
-- idle() (and calls idle() again after its LISTEN connection came back). The bits are read as they
-- are now, not through the producer's snapshot, so this holds at any isolation level.
-- ---------------------------------------------------------------------------------------------

-- The union of the bits of p_queues (NULL: every queue).
CREATE FUNCTION pgrelay._wakeup_bits_of(p_queues text[])
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_queues IS NULL THEN 4611686018427387903
                ELSE (SELECT coalesce(pg_catalog.bit_or(pgrelay._wakeup_bit(q)), 0) FROM pg_catalog.unnest(p_queues) q)
           END
$$;

-- Make _wakeup_bits say who waits now, after a change to _waiting (made by this transaction, under
-- the lock that _wait_lock took, so the changes are made one after another). Registrations that
-- lapsed are dropped first.
CREATE FUNCTION pgrelay._wakeup_bits_update()
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgrelay._waiting w WHERE w.until < pg_catalog.now();
    PERFORM pg_catalog.setval('pgrelay._wakeup_bits',
        (SELECT coalesce(pg_catalog.bit_or(pgrelay._wakeup_bits_of(w.queues)), 0) FROM pgrelay._waiting w), true);
END
$$;

-- The ids (32 bits, as pg_locks shows them) of the transactions running now, other than the caller's:
-- those among p_among (NULL: all). A transaction holds the lock on its id from when it gets one
-- until it has ended, and a snapshot taken after the lock is gone sees what it committed.
CREATE FUNCTION pgrelay._running_transactions(p_among bigint[])
RETURNS bigint[]
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(pg_catalog.array_agg(DISTINCT x ORDER BY x), '{}')
    FROM (SELECT l.transactionid::text::bigint AS x FROM pg_catalog.pg_locks l
          WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
            AND l.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()) t
    WHERE p_among IS NULL OR t.x = ANY (p_among)
$$;

-- The earliest time a pending job of p_queues (NULL: every queue) that is not due yet becomes due,
-- so that a waiting worker can set a timer for it: found per queue and priority in the claim index
-- (a loose scan of the priorities, then one probe each), not by reading a backlog.
CREATE FUNCTION pgrelay._next_due(p_queues text[])
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET enable_seqscan = off SET enable_bitmapscan = off AS $$
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
$$;

CREATE FUNCTION pgrelay.idle(worker text, queues text[] DEFAULT NULL, seconds integer DEFAULT 300)
RETURNS TABLE (running bigint[], next_due timestamptz)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.idle(text, text[], integer) IS
'A worker found nothing to claim and waits on its LISTEN: producers of these queues NOTIFY until awake().

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

CREATE FUNCTION pgrelay.idle_check(transactions bigint[], queues text[] DEFAULT NULL)
RETURNS TABLE (running bigint[], next_due timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    IF cardinality(idle_check.transactions) > 100000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'transactions must hold at most 100000 transaction ids (those idle() returned)';
    ELSIF cardinality(idle_check.queues) > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'queues must list at most 1000 queues (or be NULL for all)';
    END IF;
    RETURN QUERY
    SELECT pgrelay._running_transactions(idle_check.transactions), pgrelay._next_due(idle_check.queues);
END
$$;
COMMENT ON FUNCTION pgrelay.idle_check(bigint[], text[]) IS
'Which of the transactions idle() returned are still running, and the next due time as idle() gives it.

A waiting worker claims again when this returns fewer transactions than it passed: one that ended may
have enqueued a job whose NOTIFY it did not send. An id that is not a running transaction is dropped.

Example: SELECT * FROM pgrelay.idle_check(''{7401,7405}'', queues => ''{emails}'');';

CREATE FUNCTION pgrelay.awake(worker text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.awake(text) IS
'The worker no longer waits (it found work, or it stops): producers of its queues stop sending NOTIFY for it.
Returns false when it was not waiting.

Example: SELECT pgrelay.awake(''worker-1'');';
