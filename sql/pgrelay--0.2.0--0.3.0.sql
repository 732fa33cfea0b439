-- pgrelay 0.2.0 -> 0.3.0: hardening (issue 22). Run by jobs-migrate (in one transaction, under its
-- lock) and by ALTER EXTENSION pgrelay UPDATE.
--
-- - Every job records the role that enqueued it (enqueued_by); get_job shows a producer only its own
--   jobs (jobs enqueued before this release have none: only readers and admins see them).
-- - Idempotency keys belong to their queue; the keys of 0.2.0 move to their job's queue.
-- - A replay's deliveries carry the id of the first job of its chain (delivery_id).
-- - recover() and replay_dead_letters() do at most max_jobs per call (new last argument: the old
--   signatures go); purge() remembers its walk (_purge_state, _purge_later), so a routine purge no
--   longer reads the whole kept history (the first purge after the upgrade starts a pass).
-- - The rules clients restated are the SQL's to say: job_statuses(), check_task_names(); nack waits a
--   year at most for a longer retry_after_seconds instead of refusing it.

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.3.0'::text $$;

-- ---------------------------------------------------------------------------------------------
-- A replay's deliveries carry the id of the first job of its replay chain (delivery_id)
-- ---------------------------------------------------------------------------------------------

ALTER TYPE pgrelay._job_options ADD ATTRIBUTE delivery_id text;
ALTER TYPE pgrelay.claimed_job ADD ATTRIBUTE delivery_id text;
COMMENT ON TYPE pgrelay.claimed_job IS
'A job leased by consume(): what a worker needs to run it and to ack/nack it (id + attempt).

delivery_id: set on a replay, the id its deliveries carry: that of the first job of the replay chain (its
idempotency key, else its id), so a receiver can tell a resent delivery from new work.';
DROP FUNCTION pgrelay._job_options(integer, integer, text, text, text, bigint);

-- ---------------------------------------------------------------------------------------------
-- Idempotency keys belong to their queue: (queue_id, key) -> job. The keys of 0.2.0 were unique
-- across queues, so each moves to its job's queue as it is.
-- ---------------------------------------------------------------------------------------------

ALTER TABLE pgrelay._idempotency_keys ADD COLUMN queue_id integer;
UPDATE pgrelay._idempotency_keys k SET queue_id = coalesce(j.queue_id, q.id)
FROM pgrelay._idempotency_keys x
LEFT JOIN pgrelay._jobs j ON j.id = x.job_id
LEFT JOIN pgrelay._finished f ON f.id = x.job_id
LEFT JOIN pgrelay._queues q ON q.queue = f.queue
WHERE x.key = k.key;
DELETE FROM pgrelay._idempotency_keys WHERE queue_id IS NULL;  -- a key whose job is gone protects nothing
ALTER TABLE pgrelay._idempotency_keys ALTER COLUMN queue_id SET NOT NULL,
    DROP CONSTRAINT _idempotency_keys_pkey,
    ADD CONSTRAINT _idempotency_keys_pkey PRIMARY KEY (queue_id, key);
COMMENT ON TABLE pgrelay._idempotency_keys IS 'Private: (queue, idempotency key) -> the job it created.';

-- ---------------------------------------------------------------------------------------------
-- Every job records the role that enqueued it; get_job shows a producer only its own jobs. Jobs
-- enqueued before have no enqueuer: only readers and admins see them.
-- ---------------------------------------------------------------------------------------------

ALTER TABLE pgrelay._jobs ADD COLUMN enqueued_by oid;
ALTER TABLE pgrelay._finished ADD COLUMN enqueued_by oid;
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
COMMENT ON VIEW pgrelay.jobs IS
'Every job, active or finished, with its status: pending, leased, succeeded, dead_letter or cancelled.

Filter by id: both tables are indexed by it. A filter by queue reads the whole history (an index for it
would cost every ack); for a queue use queue_stats and dead_letters (indexed), or filter by id range too.
max_attempts NULL means the queue''s setting.
enqueued_by: the role that enqueued the job (NULL for jobs enqueued before pgrelay 0.3.0).';

-- ---------------------------------------------------------------------------------------------
-- Bounded work: recover() and replay_dead_letters() do at most max_jobs per call (new last
-- argument, so the old signatures go); callers loop while a call returns max_jobs.
-- ---------------------------------------------------------------------------------------------

DROP FUNCTION pgrelay.recover();
DROP FUNCTION pgrelay.replay_dead_letters(text, text, timestamptz);

-- ---------------------------------------------------------------------------------------------
-- purge() remembers its walk, so a routine purge no longer reads the whole kept history. (The first
-- purge after the upgrade starts a pass from the oldest job.)
-- ---------------------------------------------------------------------------------------------
-- purge()'s memory, so that a routine purge reads only what changed since the last one, not the kept
-- history. The walk goes through _finished in id order and remembers where it stopped (walked): at
-- the first job created after the shortest retention of any queue, since no job from there on can be
-- due yet. A job it passes that is kept longer than that (a dead letter, a queue with a longer
-- retention) is noted in _purge_later with the time it becomes due, and removed from there when
-- that time comes. A job that finishes after the walk passed its id (one that ran long after it was
-- enqueued, or whose enqueuing transaction was still open) is found by the next pass: the walk starts
-- again from the oldest id once a day (once an hour while a queue keeps finished jobs for 0 days).
CREATE TABLE pgrelay._purge_state (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    walked       bigint NOT NULL DEFAULT 0,              -- jobs up to this id were read by this pass
    pass_started timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE pgrelay._purge_state IS 'Private: where purge()''s walk through the history stands (no row: at the start).';

CREATE TABLE pgrelay._purge_later (
    id          bigint PRIMARY KEY,
    queue       text COLLATE "C" NOT NULL,
    succeeded   boolean NOT NULL,        -- which retention applies: succeeded, else dead letter (and cancelled)
    finished_at timestamptz NOT NULL,
    due_at      timestamptz NOT NULL     -- finished_at + that retention (configure_queue keeps it so)
);
COMMENT ON TABLE pgrelay._purge_later IS
'Private: finished jobs purge() passed that are kept longer than its walk (see _purge_state), by due time.';
CREATE INDEX _purge_later_due_at_idx ON pgrelay._purge_later (due_at);

-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)
CREATE OR REPLACE FUNCTION pgrelay._caller()
 RETURNS oid
 LANGUAGE sql
 STABLE PARALLEL SAFE
AS $function$
    SELECT pg_catalog.quote_ident(CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user::text
                                       ELSE pg_catalog.current_setting('role') END)::regrole::oid
$function$;

CREATE OR REPLACE FUNCTION pgrelay._delivery_id(p_id bigint, p_options pgrelay._job_options)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT coalesce((p_options).delivery_id, (p_options).idempotency_key, p_id::text)
$function$;

CREATE OR REPLACE FUNCTION pgrelay._enqueue(p_queue text, p_task text, p_kind "char", p_payload jsonb, p_run_at timestamp with time zone, p_priority integer, p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text, p_trace_id text, p_replayed_from bigint DEFAULT NULL::bigint)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
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
BEGIN
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'pgrelay._finish: unknown status %', p_status;
    END IF;
    IF v_status <> 's' AND p_leased THEN
        -- (locking the jobs it records, so the move below finds the same ones)
        INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, details)
        SELECT j.id, j.attempt, j.leased_by, j.leased_at, pg_catalog.now(), p_outcome, u.error, u.details
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
    SELECT coalesce(array_agg(d.id), '{}'), min(d.queue), max(d.queue) INTO v_ids, v_first, v_last FROM done d;
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

CREATE OR REPLACE FUNCTION pgrelay._job_options(p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text, p_trace_id text, p_replayed_from bigint, p_delivery_id text DEFAULT NULL::text)
 RETURNS pgrelay._job_options
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE WHEN p_max_attempts IS NOT NULL OR p_timeout_seconds IS NOT NULL OR p_idempotency_key IS NOT NULL
                  OR p_dedupe_key IS NOT NULL OR p_trace_id IS NOT NULL OR p_replayed_from IS NOT NULL
                  OR p_delivery_id IS NOT NULL
           THEN ROW(p_max_attempts, p_timeout_seconds, p_idempotency_key, p_dedupe_key, p_trace_id,
                    p_replayed_from, p_delivery_id)::pgrelay._job_options
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
        ('recover',               '{worker,admin}'),
        ('maintain',              '{worker,admin}'),
        ('maintenance_scheduled', '{worker,admin}'),
        -- operators
        ('configure_queue',       '{admin}'),
        ('pause',                 '{admin}'),
        ('resume',                '{admin}'),
        ('replay',                '{admin}'),
        ('replay_dead_letters',   '{admin}'),
        ('cancel',                '{admin}'),
        ('purge',                 '{admin}'),
        -- the views (and, derived by _apply_privileges, the functions they call)
        ('jobs',                  '{reader,admin}'),
        ('queue_stats',           '{reader,admin}'),
        ('expired_leases',        '{reader,admin}'),
        ('dead_letters',          '{reader,admin}'),
        ('workers',               '{reader,admin}'),
        ('recent_failures',       '{reader,admin}'),
        -- this matrix, for `pgrelay doctor`
        ('_privileges',           '{reader,admin}')
    ) m(object, roles), pg_catalog.unnest(m.roles) r
$function$;
COMMENT ON FUNCTION pgrelay._privileges() IS 'Private: which group role may call which function (every overload of the name) or read which view.';

CREATE OR REPLACE FUNCTION pgrelay._purge_jobs(p_ids bigint[])
 RETURNS bigint[]
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
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

CREATE OR REPLACE FUNCTION pgrelay.check_task_names(tasks text[])
 RETURNS integer
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.check_task_names(text[]) IS 'Refuse (PR001, with enqueue''s message) the first of these names that enqueue would refuse as a task name;
returns how many it checked when all are valid. A worker calls it at start for the tasks it has handlers for, so a handler that
no job could ever name stops it at once instead of waiting in vain.

Example: SELECT pgrelay.check_task_names(ARRAY[''emails.send'', ''billing.charge'']);';

CREATE OR REPLACE FUNCTION pgrelay.configure_queue(queue text, concurrency integer DEFAULT NULL::integer, max_attempts integer DEFAULT NULL::integer, lease_seconds integer DEFAULT NULL::integer, backoff_base_seconds double precision DEFAULT NULL::double precision, backoff_max_seconds double precision DEFAULT NULL::double precision, reset text[] DEFAULT NULL::text[], retention_succeeded_days integer DEFAULT NULL::integer, retention_dead_letter_days integer DEFAULT NULL::integer)
 RETURNS pgrelay.queue_settings
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_settings pgrelay.queue_settings;
    v_reset text[] := coalesce(configure_queue.reset, '{}');
    v_bad text;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', configure_queue.queue, 128));
    SELECT r INTO v_bad FROM unnest(v_reset) r
    WHERE r IS NULL OR r NOT IN ('concurrency', 'max_attempts', 'lease_seconds', 'backoff_base_seconds', 'backoff_max_seconds',
                                 'retention_succeeded_days', 'retention_dead_letter_days')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('cannot reset %s: reset takes concurrency, max_attempts, lease_seconds, backoff_base_seconds, '
                             'backoff_max_seconds, retention_succeeded_days, retention_dead_letter_days',
                             coalesce(quote_literal(v_bad), 'NULL'));
    END IF;
    PERFORM pgrelay._check(pgrelay._range_error('concurrency', configure_queue.concurrency, 1, 100000), 'PR001',
                           'pause the queue to stop it; reset => ''{concurrency}'' removes the limit');
    PERFORM pgrelay._check(coalesce(
        pgrelay._range_error('max_attempts', configure_queue.max_attempts, 1, 1000),
        pgrelay._range_error('lease_seconds', configure_queue.lease_seconds, 1, 86400),
        pgrelay._range_error('backoff_base_seconds', configure_queue.backoff_base_seconds, 0.001, 86400),
        pgrelay._range_error('backoff_max_seconds', configure_queue.backoff_max_seconds, 0.001, 604800, ' (a week)'),
        pgrelay._range_error('retention_succeeded_days', configure_queue.retention_succeeded_days, 0, 36500),
        pgrelay._range_error('retention_dead_letter_days', configure_queue.retention_dead_letter_days, 0, 36500)));
    SELECT r INTO v_bad FROM unnest(v_reset) r
    WHERE (r = 'concurrency' AND configure_queue.concurrency IS NOT NULL)
       OR (r = 'max_attempts' AND configure_queue.max_attempts IS NOT NULL)
       OR (r = 'lease_seconds' AND configure_queue.lease_seconds IS NOT NULL)
       OR (r = 'backoff_base_seconds' AND configure_queue.backoff_base_seconds IS NOT NULL)
       OR (r = 'backoff_max_seconds' AND configure_queue.backoff_max_seconds IS NOT NULL)
       OR (r = 'retention_succeeded_days' AND configure_queue.retention_succeeded_days IS NOT NULL)
       OR (r = 'retention_dead_letter_days' AND configure_queue.retention_dead_letter_days IS NOT NULL)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = format('%s is both set and reset; do one or the other', v_bad);
    END IF;

    INSERT INTO pgrelay._queues AS q (queue, concurrency, max_attempts, lease_seconds, backoff_base_seconds, backoff_max_seconds,
                                      retention_succeeded_days, retention_dead_letter_days)
    VALUES (configure_queue.queue, configure_queue.concurrency, configure_queue.max_attempts, configure_queue.lease_seconds,
            configure_queue.backoff_base_seconds, configure_queue.backoff_max_seconds,
            configure_queue.retention_succeeded_days, configure_queue.retention_dead_letter_days)
    ON CONFLICT ON CONSTRAINT _queues_pkey DO UPDATE SET
        concurrency = CASE WHEN 'concurrency' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.concurrency, q.concurrency) END,
        max_attempts = CASE WHEN 'max_attempts' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.max_attempts, q.max_attempts) END,
        lease_seconds = CASE WHEN 'lease_seconds' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.lease_seconds, q.lease_seconds) END,
        backoff_base_seconds = CASE WHEN 'backoff_base_seconds' = ANY (v_reset) THEN NULL
                                    ELSE coalesce(excluded.backoff_base_seconds, q.backoff_base_seconds) END,
        backoff_max_seconds = CASE WHEN 'backoff_max_seconds' = ANY (v_reset) THEN NULL
                                   ELSE coalesce(excluded.backoff_max_seconds, q.backoff_max_seconds) END,
        retention_succeeded_days = CASE WHEN 'retention_succeeded_days' = ANY (v_reset) THEN NULL
                                        ELSE coalesce(excluded.retention_succeeded_days, q.retention_succeeded_days) END,
        retention_dead_letter_days = CASE WHEN 'retention_dead_letter_days' = ANY (v_reset) THEN NULL
                                          ELSE coalesce(excluded.retention_dead_letter_days, q.retention_dead_letter_days) END,
        updated_at = now();

    v_settings := pgrelay._queue_settings(configure_queue.queue);
    IF v_settings.backoff_base_seconds > v_settings.backoff_max_seconds THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('backoff_base_seconds (%s) must not exceed backoff_max_seconds (%s)',
                             v_settings.backoff_base_seconds, v_settings.backoff_max_seconds);
    END IF;
    IF configure_queue.retention_succeeded_days IS NOT NULL OR configure_queue.retention_dead_letter_days IS NOT NULL
       OR v_reset && '{retention_succeeded_days,retention_dead_letter_days}' THEN
        -- the jobs purge() noted as kept longer become due by the new retention
        UPDATE pgrelay._purge_later l
        SET due_at = l.finished_at + make_interval(days => CASE WHEN l.succeeded THEN v_settings.retention_succeeded_days
                                                                ELSE v_settings.retention_dead_letter_days END)
        WHERE l.queue = configure_queue.queue;
    END IF;
    RETURN v_settings;
END
$function$;
COMMENT ON FUNCTION pgrelay.configure_queue(text,integer,integer,integer,double precision,double precision,text[],integer,integer) IS 'Change a queue''s settings; returns its effective settings. NULL leaves a setting as it is.

concurrency: most jobs leased at once across all workers. max_attempts (default 10), lease_seconds (30),
backoff_base_seconds (1) and backoff_max_seconds (3600) apply to jobs that do not set their own.
retention_succeeded_days (7) and retention_dead_letter_days (30, also for cancelled jobs): how long purge()
keeps finished jobs and their attempts. reset: names of settings to return to their defaults, e.g.
reset => ''{concurrency}''.

Example: SELECT * FROM pgrelay.configure_queue(''mail'', concurrency => 3, max_attempts => 5);';

CREATE OR REPLACE FUNCTION pgrelay.consume(worker text, queues text[] DEFAULT NULL::text[], batch integer DEFAULT 1, lease_seconds integer DEFAULT NULL::integer, tasks text[] DEFAULT NULL::text[], handlers text[] DEFAULT NULL::text[], kinds text[] DEFAULT NULL::text[])
 RETURNS SETOF pgrelay.claimed_job
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
 SET enable_mergejoin TO 'off'
 SET enable_hashjoin TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.consume(text,text[],integer,integer,text[],text[],text[]) IS 'Lease up to batch due jobs to a worker; returns them as pgrelay.claimed_job, attempt already incremented.

worker: the worker''s id. queues: NULL for all. lease_seconds: NULL for the queue''s setting (default 30).
tasks: LIKE patterns (''orders.%''). handlers: the handler tasks the caller can run (NULL: any; HTTP jobs are
not affected). kinds: handler and/or http (NULL: both). Order: higher priority, then run_at, then id; FOR UPDATE SKIP LOCKED, so
concurrent consumers never get the same job. Paused queues are skipped; a queue''s concurrency limit holds
across all workers. Needs READ COMMITTED (PR005). Complete each job with ack/nack passing its id and attempt.

Example: SELECT * FROM pgrelay.consume(''worker-1'', queues => ''{default}'', batch => 10);';

COMMENT ON FUNCTION pgrelay.enqueue(text,jsonb,text,timestamp with time zone,integer,integer,integer,text,text,text) IS 'Enqueue a job for a handler; returns its id. Runs in the caller''s transaction: a rollback removes the job.

task: handler name (letters, digits, . _ - : /). payload: any JSON. queue: default ''default''.
An argument passed as NULL takes its default (payload {}, queue default, run_at now, priority 0).
run_at: not before this time. priority: higher runs first. max_attempts / timeout_seconds: NULL uses the
queue''s setting / no timeout. idempotency_key: an existing key of the queue returns the job it created
(kept as long as the job or its history). dedupe_key: an active job of the queue with this key is returned instead.
Errors: PR001 with a message naming the bad argument.

Example: SELECT pgrelay.enqueue(''orders.created'', jsonb_build_object(''id'', 42), idempotency_key => ''order-42'');';

CREATE OR REPLACE FUNCTION pgrelay.enqueue_bulk(jobs jsonb)
 RETURNS SETOF bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_n integer;
    v_bad_ord bigint;
    v_bad_error text;
    v_keyed boolean;
    v_ids bigint[];
    v_spec pgrelay._job_spec;
    v_queues text[];
    v_run_ats timestamptz[];
BEGIN
    IF jobs IS NULL OR jsonb_typeof(jobs) <> 'array' THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = 'jobs must be a JSON array of job objects, e.g. [{"task": "mail.send", "payload": {"to": "a@example.com"}}]';
    END IF;
    v_n := jsonb_array_length(jobs);
    IF v_n = 0 THEN
        RETURN;
    END IF;
    IF v_n > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('enqueue_bulk takes at most 10000 jobs per call, not %s; split the array', v_n);
    END IF;

    -- One pass parses and checks every element and, when all are good and none carries a key,
    -- inserts them in the same statement. A value of the wrong type makes a cast raise; then the
    -- elements are parsed one at a time to name the bad one.
    BEGIN
        WITH parsed AS MATERIALIZED (
            SELECT nextval('pgrelay._job_id_seq') AS id, p.*
            FROM pgrelay._bulk_parse(jobs) p
        ), verdict AS (
            SELECT min(p.ord) FILTER (WHERE p.error IS NOT NULL) AS bad_ord,
                   coalesce(bool_or(p.idempotency_key IS NOT NULL OR p.dedupe_key IS NOT NULL), false) AS keyed
            FROM parsed p
        ), per_queue AS (
            SELECT p.queue, min(p.run_at) AS run_at FROM parsed p GROUP BY p.queue
        ), queue_ids AS MATERIALIZED (
            SELECT q.queue, pgrelay._queue_id(q.queue) AS id
            FROM per_queue q, verdict v
            WHERE v.bad_ord IS NULL AND NOT v.keyed
        ), inserted AS (
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options, enqueued_by)
            SELECT p.id, q.id, p.queue, p.task, p.kind, p.payload, p.run_at, p.priority,
                   pgrelay._job_options(p.max_attempts, p.timeout_seconds, NULL, NULL, p.trace_id, NULL),
                   (SELECT pgrelay._caller())
            FROM parsed p JOIN queue_ids q ON q.queue = p.queue
        )
        SELECT v.bad_ord, (SELECT p.error FROM parsed p WHERE p.ord = v.bad_ord), v.keyed,
               (SELECT array_agg(p.id ORDER BY p.ord) FROM parsed p),
               (SELECT array_agg(q.queue) FROM per_queue q),
               (SELECT array_agg(q.run_at) FROM per_queue q)
        INTO v_bad_ord, v_bad_error, v_keyed, v_ids, v_queues, v_run_ats
        FROM verdict v;
    EXCEPTION WHEN data_exception THEN
        FOR i IN 0 .. v_n - 1 LOOP
            BEGIN
                PERFORM pgrelay._bulk_parse(jsonb_build_array(jobs -> i));
            EXCEPTION WHEN data_exception THEN
                RAISE EXCEPTION USING ERRCODE = 'PR002', MESSAGE = format('jobs[%s]: %s', i, SQLERRM),
                    HINT = 'run_at is an ISO 8601 timestamp; priority, max_attempts and timeout_seconds are integers';
            END;
        END LOOP;
        RAISE;
    END;
    IF v_bad_ord IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'PR002', MESSAGE = format('jobs[%s]: %s', v_bad_ord - 1, v_bad_error),
            HINT = 'nothing was enqueued; fix the element and send the whole array again';
    END IF;

    IF v_keyed THEN
        -- keys need the per-job lookups of _enqueue (which also handles duplicates inside this array)
        FOR v_spec IN SELECT * FROM pgrelay._bulk_parse(jobs) ORDER BY ord LOOP
            RETURN NEXT pgrelay._enqueue(v_spec.queue, v_spec.task, v_spec.kind, v_spec.payload, v_spec.run_at,
                v_spec.priority, v_spec.max_attempts, v_spec.timeout_seconds, v_spec.idempotency_key,
                v_spec.dedupe_key, v_spec.trace_id);
        END LOOP;
        RETURN;
    END IF;

    PERFORM pgrelay._notify(u.queue, u.run_at) FROM unnest(v_queues, v_run_ats) AS u(queue, run_at);
    RETURN QUERY SELECT unnest(v_ids);
END
$function$;
COMMENT ON FUNCTION pgrelay.enqueue_bulk(jsonb) IS 'Enqueue many jobs in one call; returns their ids in input order.

jobs: a JSON array (at most 10000) of objects with enqueue''s argument names (task, payload, queue, run_at,
priority, max_attempts, timeout_seconds, idempotency_key, dedupe_key, trace_id), or enqueue_http''s (url,
method, headers, body, ...) for HTTP jobs. One bad element rejects the whole call (PR002, message
"jobs[<index>]: ...", index from 0) and nothing is enqueued.

Example: SELECT * FROM pgrelay.enqueue_bulk(''[{"task": "mail.send", "payload": {"to": 1}}, {"task": "mail.send", "priority": 5}]'');';

CREATE OR REPLACE FUNCTION pgrelay.enqueue_many(task text, payloads jsonb[], queue text DEFAULT 'default'::text, run_at timestamp with time zone DEFAULT now(), priority integer DEFAULT 0, max_attempts integer DEFAULT NULL::integer, timeout_seconds integer DEFAULT NULL::integer, trace_id text DEFAULT NULL::text)
 RETURNS SETOF bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    -- NULL means "the default", as in enqueue
    v_queue text := coalesce(enqueue_many.queue, 'default');
    v_queue_id integer;
    v_options pgrelay._job_options := pgrelay._job_options(enqueue_many.max_attempts, enqueue_many.timeout_seconds,
                                                           NULL, NULL, enqueue_many.trace_id, NULL);
    v_run_at timestamptz := coalesce(enqueue_many.run_at, now());
    v_priority integer := coalesce(enqueue_many.priority, 0);
BEGIN
    IF enqueue_many.payloads IS NULL OR array_ndims(enqueue_many.payloads) > 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = 'payloads must be a one-dimensional array of JSON values, one per job, e.g. ARRAY[''{"to": 1}'', ''{"to": 2}'']::jsonb[]';
    END IF;
    IF cardinality(enqueue_many.payloads) > 10000 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('enqueue_many takes at most 10000 payloads per call, not %s; split the array',
                             cardinality(enqueue_many.payloads));
    END IF;
    -- one check for the arguments all jobs share; a NULL element means the default payload {}
    PERFORM pgrelay._check(pgrelay._job_args_error(enqueue_many.task, v_queue, '{}', v_run_at, v_priority,
        enqueue_many.max_attempts, enqueue_many.timeout_seconds, NULL, NULL, enqueue_many.trace_id));
    IF cardinality(enqueue_many.payloads) = 0 THEN
        RETURN;
    END IF;
    v_queue_id := pgrelay._queue_id(v_queue);
    -- ids are drawn in input order (a volatile output column is computed after the ORDER BY), so
    -- ordering by id returns them in input order
    RETURN QUERY
        WITH inserted AS (
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, payload, run_at, priority, options, enqueued_by)
            SELECT nextval('pgrelay._job_id_seq'), v_queue_id, v_queue, enqueue_many.task, coalesce(u.payload, '{}'), v_run_at,
                   v_priority, v_options, (SELECT pgrelay._caller())
            FROM unnest(enqueue_many.payloads) WITH ORDINALITY AS u(payload, n)
            ORDER BY u.n
            RETURNING id)
        SELECT i.id FROM inserted i ORDER BY i.id;
    PERFORM pgrelay._notify(v_queue, v_run_at);
END
$function$;
COMMENT ON FUNCTION pgrelay.enqueue_many(text,jsonb[],text,timestamp with time zone,integer,integer,integer,text) IS 'Enqueue one job per payload, all for the same task and options, in one statement; ids in input order.

The fastest way to enqueue many jobs from a driver: an array of payloads and arguments checked once.
Arguments as in enqueue (NULL means the default; a NULL payload is {}). At most 10000 payloads per
call. For jobs that differ in more than their payload, or carry idempotency or dedupe keys, use
enqueue_bulk. Errors: PR001 naming the bad argument; nothing is enqueued.

Example: SELECT * FROM pgrelay.enqueue_many(''mail.send'', ARRAY[''{"to": 1}'', ''{"to": 2}'']::jsonb[], queue => ''mail'');';

CREATE OR REPLACE FUNCTION pgrelay.enqueue_trigger()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_task text;
    v_queue text;
    v_queue_id integer;
    v_count bigint;
-- new_rows and old_rows are the transition tables a statement trigger must declare; for plpgsql_check:
-- @plpgsql_check_options: newtable = new_rows, oldtable = old_rows
BEGIN
    IF TG_NARGS < 1 OR TG_NARGS > 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('pgrelay.enqueue_trigger takes (task [, queue]); trigger %s on %s.%s passes %s arguments',
                             TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_NARGS);
    END IF;
    v_task := TG_ARGV[0];
    v_queue := CASE WHEN TG_NARGS > 1 THEN TG_ARGV[1] ELSE 'default' END;
    IF TG_LEVEL = 'ROW' THEN
        PERFORM pgrelay.enqueue(
            task => v_task,
            queue => v_queue,
            payload => jsonb_build_object(
                'op', TG_OP,
                'schema', TG_TABLE_SCHEMA,
                'table', TG_TABLE_NAME,
                'old', CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
                'new', CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END));
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;

    -- FOR EACH STATEMENT: every row of the statement in one INSERT, read from the transition table
    -- (a multi-row statement costs one insert, not one enqueue call per row); same jobs as per row.
    IF TG_OP NOT IN ('INSERT', 'DELETE') THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('pgrelay.enqueue_trigger FOR EACH STATEMENT handles INSERT and DELETE, not %s (trigger %s on %s.%s)',
                             TG_OP, TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME),
            HINT = 'use FOR EACH ROW for UPDATE: a statement trigger cannot pair each old row with its new one';
    END IF;
    PERFORM pgrelay._check(pgrelay._job_args_error(v_task, v_queue, '{}', now(), 0, NULL, NULL, NULL, NULL, NULL));
    v_queue_id := pgrelay._queue_id(v_queue);
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO pgrelay._jobs (queue_id, queue, task, payload, enqueued_by)
            SELECT v_queue_id, v_queue, v_task, jsonb_build_object('op', TG_OP, 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                                                       'old', NULL, 'new', to_jsonb(r)), (SELECT pgrelay._caller())
            FROM new_rows r;
        ELSE
            INSERT INTO pgrelay._jobs (queue_id, queue, task, payload, enqueued_by)
            SELECT v_queue_id, v_queue, v_task, jsonb_build_object('op', TG_OP, 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                                                       'old', to_jsonb(r), 'new', NULL), (SELECT pgrelay._caller())
            FROM old_rows r;
        END IF;
    EXCEPTION WHEN undefined_table THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('pgrelay.enqueue_trigger FOR EACH STATEMENT needs the transition table %s (trigger %s on %s.%s)',
                             CASE TG_OP WHEN 'INSERT' THEN 'NEW TABLE AS new_rows' ELSE 'OLD TABLE AS old_rows' END,
                             TG_NAME, TG_TABLE_SCHEMA, TG_TABLE_NAME),
            HINT = 'CREATE TRIGGER ... AFTER INSERT ON t REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT ...';
    END;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        PERFORM pgrelay._notify(v_queue, now());
    END IF;
    RETURN NULL;
END
$function$;
COMMENT ON FUNCTION pgrelay.enqueue_trigger() IS 'Trigger function that enqueues each row change as a job with payload {op, schema, table, old, new}.

Arguments: task [, queue]. FOR EACH ROW: AFTER INSERT OR UPDATE OR DELETE, one enqueue per row.
FOR EACH STATEMENT (INSERT or DELETE, with the transition table new_rows or old_rows): the same jobs,
all rows of the statement in one insert; much cheaper for multi-row statements.

Example: CREATE TRIGGER orders_reindex AFTER INSERT OR UPDATE ON orders
         FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger(''search.reindex'', ''default'');
Example: CREATE TRIGGER orders_created AFTER INSERT ON orders REFERENCING NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger(''orders.created'');';

CREATE OR REPLACE FUNCTION pgrelay.get_job(id bigint)
 RETURNS jsonb
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT to_jsonb(j) - 'max_attempts'
           || jsonb_build_object('max_attempts',
                  coalesce(j.max_attempts, (SELECT q.max_attempts FROM pgrelay._queues q WHERE q.queue = j.queue),
                           pgrelay._default_max_attempts()))
    FROM pgrelay.jobs j
    WHERE j.id = get_job.id
      -- who may read the jobs view (readers, admins) reads every job; anyone else (a producer) only
      -- those its role enqueued: another's job is as unknown as a missing one
      AND (pg_catalog.has_table_privilege(pgrelay._caller(), 'pgrelay.jobs', 'SELECT')
           OR j.enqueued_by = pg_catalog.pg_get_userbyid(pgrelay._caller()))
$function$;
COMMENT ON FUNCTION pgrelay.get_job(bigint) IS 'The job with this id as JSON, wherever it is (active or finished); NULL for an unknown id.

A caller who may read the jobs view (pgrelay_reader, pgrelay_admin) reads any job; any other (a producer,
through PostgREST too) reads only the jobs its role enqueued, and NULL for the others.
Keys: id, queue, task, kind, status, priority, run_at, attempt, max_attempts, timeout_seconds, payload,
idempotency_key, dedupe_key, trace_id, replayed_from, last_error, result, leased_by, lease_expires_at,
created_at, finished_at, enqueued_by.

Example: SELECT pgrelay.get_job(101);';

CREATE OR REPLACE FUNCTION pgrelay.job_statuses()
 RETURNS text[]
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT ARRAY['pending', 'leased'] || ARRAY(SELECT pgrelay._status_name(c) FROM unnest('{s,d,c}'::"char"[]) c)
$function$;
COMMENT ON FUNCTION pgrelay.job_statuses() IS 'The statuses a job shows (the jobs view, get_job), in the order of a job''s life: pending, leased, then
how it finished: succeeded, dead_letter or cancelled.

Example: SELECT pgrelay.job_statuses();';

CREATE OR REPLACE FUNCTION pgrelay.maintain(max_jobs integer DEFAULT 10000)
 RETURNS pgrelay.maintenance
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_done pgrelay.maintenance;
BEGIN
    v_done.recovered := pgrelay.recover(maintain.max_jobs);
    v_done.purged := pgrelay.purge(NULL, maintain.max_jobs);
    RETURN v_done;
END
$function$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS 'Routine maintenance: recover() expired leases, then purge() finished jobs by each queue''s retention (at
most max_jobs of each); returns what it did. A count of max_jobs says more may be left: call again. Run it from pg_cron every minute, or let the workers run it.

Example: SELECT * FROM pgrelay.maintain();';

CREATE OR REPLACE FUNCTION pgrelay.nack(id bigint, attempt integer, error text, retry_after_seconds double precision DEFAULT NULL::double precision, permanent boolean DEFAULT false, outcome text DEFAULT 'failed'::text, details jsonb DEFAULT NULL::jsonb)
 RETURNS text
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.nack(bigint,integer,text,double precision,boolean,text,jsonb) IS 'Report a failed attempt; returns the job''s new status: pending, dead_letter, cancelled, or stale.

pending: retried after exponential backoff with jitter (queue settings; default 1 s doubling up to 1 h), or
after retry_after_seconds when given (0 or more; a longer delay than a year, Infinity included, waits a
year: a worker may pass on whatever a server''s Retry-After said). dead_letter: permanent => true, or no attempts left. cancelled: an
operator asked to cancel the job (cancel()) while it ran, so it is not retried. stale: this attempt
no longer holds the lease; nothing changed. outcome (failed, timeout, cancelled) and details (JSON, e.g. an
HTTP status) are recorded in the attempt history.

Example: SELECT pgrelay.nack(id => 101, attempt => 1, error => ''SMTP 451'', retry_after_seconds => 30);';

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
    WHILE v_total < v_max AND (v_kept < 10000 OR purge.older_than_days IS NOT NULL) LOOP
        WITH batch AS (
            SELECT f.id, f.queue, f.status, f.created_at, f.finished_at,
                   f.finished_at + make_interval(days => coalesce(purge.older_than_days,
                       CASE WHEN f.status = 's'
                            THEN coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days())
                            ELSE coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) END))
                       AS due_at
            FROM (SELECT f.* FROM pgrelay._finished f WHERE f.id > v_after ORDER BY f.id LIMIT 1000) f
            LEFT JOIN pgrelay._queues q ON q.queue = f.queue
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

    -- workers gone for a week
    DELETE FROM pgrelay._workers w WHERE w.last_seen < now() - interval '7 days';
    RETURN v_total;
END
$function$;
COMMENT ON FUNCTION pgrelay.purge(integer,integer) IS 'Remove finished jobs older than their retention, with their attempts and idempotency keys; returns how many.

older_than_days: NULL for each queue''s retention (configure_queue: retention_succeeded_days, default 7;
retention_dead_letter_days, default 30, also for cancelled jobs); 0 removes every finished job. Works in
batches of 1,000 and stops after max_jobs, so it never holds many locks for long: call it again while it
returns max_jobs. Active jobs are never touched. One purge runs at a time; a concurrent call returns 0.

By retention (NULL), a purge reads only the history that aged since the last one, not what is kept: it
remembers where its walk stopped and when each job kept longer is due, and reads at most about 10,000
jobs it keeps per call. A job that finishes long after later jobs were purged (it waited, ran or retried for
longer than the shortest retention) is removed by the next pass over the whole history, which starts once
a day (once an hour while a queue has a retention of 0 days). With older_than_days, it walks the whole
history from the oldest job, as an operator''s sweep.

Example: SELECT pgrelay.purge(older_than_days => 30);';

CREATE OR REPLACE FUNCTION pgrelay.recover(max_jobs integer DEFAULT 1000)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.recover(integer) IS 'Return jobs whose lease expired to pending (after backoff), or to dead_letter when no attempts are left
(to cancelled when cancel() was asked for); returns how many were recovered. Each is recorded as an attempt with outcome lease_expired.

Bounded: at most max_jobs (1 to 100000, default 1000) per call, oldest expiry first. A return of max_jobs
says more may be left: call again (each call in its own transaction keeps locks short).
Safe to run from many workers at once and from pg_cron (jobs being completed are skipped, never waited for).

Example: SELECT pgrelay.recover();  SELECT pgrelay.recover(max_jobs => 10000);';

CREATE OR REPLACE FUNCTION pgrelay.replay(id bigint, force boolean DEFAULT false)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.replay(bigint,boolean) IS 'Run a finished job again as a new pending job; returns the new job''s id (its replayed_from is id).

Dead-lettered and cancelled jobs replay as they are; a job that succeeded, or one already replayed, only
with force => true. The new job keeps queue, task, payload, priority, max_attempts, timeout and trace_id; it
has no idempotency or dedupe key and starts at attempt 0. Errors: PT404 unknown id (HTTP 404 through
PostgREST), PT409 the job is still active, succeeded or was replayed (HTTP 409).

Example: SELECT pgrelay.replay(101);';

CREATE OR REPLACE FUNCTION pgrelay.replay_dead_letters(queue text, task text DEFAULT NULL::text, since timestamp with time zone DEFAULT NULL::timestamp with time zone, max_jobs integer DEFAULT 1000)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.replay_dead_letters(text,text,timestamp with time zone,integer) IS 'Replay the dead letters of a queue that have not been replayed yet; returns how many new jobs it created.

task: a LIKE pattern (''orders.%''; NULL: all tasks). since: only jobs dead-lettered at or after this time.
Bounded: at most max_jobs (1 to 100000, default 1000) per call, oldest first; a return of max_jobs says more
may be left: call again. Each new job is what replay() would create; running it twice replays nothing twice.

Example: SELECT pgrelay.replay_dead_letters(''mail'', since => now() - interval ''1 day'');';

CREATE OR REPLACE FUNCTION pgrelay.version()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT '0.3.0'::text $function$;
COMMENT ON FUNCTION pgrelay.version() IS 'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';

-- _job_options(p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text, p_trace_id text, p_replayed_from bigint): only in the upgraded database; DROP FUNCTION it

-- recover(): only in the upgraded database; DROP FUNCTION it

-- replay_dead_letters(queue text, task text, since timestamp with time zone): only in the upgraded database; DROP FUNCTION it
-- end: functions whose definition changed

-- The replays made before 0.3.0, parents first (a replay's id is above its parent's). A parent
-- purged since gives its own id.
DO $backfill$
DECLARE
    v_replay record;
    v_delivery text;
BEGIN
    FOR v_replay IN
        SELECT j.id, (j.options).replayed_from AS parent, true AS active FROM pgrelay._jobs j
        WHERE (j.options).replayed_from IS NOT NULL
        UNION ALL
        SELECT f.id, (f.options).replayed_from, false FROM pgrelay._finished f WHERE (f.options).replayed_from IS NOT NULL
        ORDER BY 1
    LOOP
        SELECT pgrelay._delivery_id(f.id, f.options) INTO v_delivery FROM pgrelay._finished f WHERE f.id = v_replay.parent;
        v_delivery := coalesce(v_delivery, v_replay.parent::text);
        IF v_replay.active THEN
            UPDATE pgrelay._jobs j SET options.delivery_id = v_delivery WHERE j.id = v_replay.id;
        ELSE
            UPDATE pgrelay._finished f SET options.delivery_id = v_delivery WHERE f.id = v_replay.id;
        END IF;
    END LOOP;
END
$backfill$;

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.3.0');
