-- pgrelay 0.4.1 -> 0.5.0: the second performance round (issue 24). Run by jobs-migrate (in one
-- transaction, under its lock) and by ALTER EXTENSION pgrelay UPDATE.
--
-- - Producers send NOTIFY only while a worker waits on their queue (idle(), idle_check(), awake();
--   _waiting and _wakeup_bits): NOTIFY serialises the commits of the transactions that send it, which
--   capped single-job enqueue under concurrency. Workers of 0.4 and older, which never call idle(),
--   find jobs by polling after this upgrade until they are upgraded; SET pgrelay.notify = always
--   keeps the old behaviour for them, or for any other consumer of the channel.

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

-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)
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
