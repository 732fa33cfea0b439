-- pgrelay 0.1.0 -> 0.2.0: the schema becomes releasable. Run by jobs-migrate (in one transaction,
-- under its lock) and by ALTER EXTENSION pgrelay UPDATE. No behaviour of the queue changes.
--
-- - Privileges are declared once, in _privileges(), and made exact by _apply_privileges(), which
--   every install and upgrade (and jobs-migrate, after every run) calls last: a function an upgrade
--   adds is callable by no one until the matrix names it.
-- - _record_install() records each version in _migrations and, under the extension machinery,
--   marks every table (those later upgrades add included) for pg_dump.
-- - Functions whose text changed, with no change of behaviour: what plpgsql_check found
--   (heartbeat's '{}' typed as bigint[], an unused variable in enqueue_bulk, the transition
--   tables named for it in _count_removed and enqueue_trigger, maintenance_scheduled's query of
--   pg_cron's table left unchecked), and comments that lost their measurements (_enqueue, consume).

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.2.0'::text $$;

-- ---------------------------------------------------------------------------------------------
-- Privileges, declared once (sql/src/privileges.sql), and the record of each install
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay._privileges()
RETURNS TABLE (role name, object name)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.format('pgrelay_%s', r)::name, m.object::name
    FROM (VALUES
        -- producers: record jobs, read a job back
        ('version',               '{producer,worker,reader,admin}'::text[]),
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
$$;
COMMENT ON FUNCTION pgrelay._privileges() IS
'Private: which group role may call which function (every overload of the name) or read which view.';

-- Makes the privileges exactly what _privileges() declares. Creates the group roles when the
-- installing user may create roles (a NOTICE names each one it could not). Every name in the matrix
-- must exist (42704 otherwise). Runs as its caller, the owner of the schema; granted to no one.
CREATE FUNCTION pgrelay._apply_privileges()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_can_create boolean;
    v_role name;
    v_missing text;
    v_grant record;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT m.object, ', ') INTO v_missing
    FROM pgrelay._privileges() m
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = 'pgrelay'::regnamespace AND p.proname = m.object)
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname = m.object AND c.relkind = 'v');
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgrelay._privileges() names what schema pgrelay does not have: %', v_missing
            USING ERRCODE = 'undefined_object', HINT = 'create it first, or take it out of the matrix';
    END IF;

    REVOKE ALL ON ALL TABLES IN SCHEMA pgrelay FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgrelay FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrelay FROM PUBLIC;

    SELECT r.rolsuper OR r.rolcreaterole INTO v_can_create FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    FOR v_role IN SELECT DISTINCT m.role FROM pgrelay._privileges() m ORDER BY 1 LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
            IF NOT v_can_create THEN
                RAISE NOTICE 'pgrelay: role % not created (the installing user lacks CREATEROLE); grant EXECUTE by hand', v_role;
                CONTINUE;
            END IF;
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA pgrelay TO %I', v_role);
    END LOOP;

    -- Targets are rendered by regprocedure and regclass with search_path = pg_catalog: schema-qualified
    -- and quoted by PostgreSQL. A function a view calls runs with the privileges of whoever queries
    -- the view, so the view's readers get EXECUTE on the pgrelay functions it calls.
    FOR v_grant IN
        WITH granted AS (
            SELECT m.role, p.oid AS object, false AS is_view
            FROM pgrelay._privileges() m
            JOIN pg_catalog.pg_proc p ON p.pronamespace = 'pgrelay'::regnamespace AND p.proname = m.object
            UNION
            SELECT m.role, c.oid, true
            FROM pgrelay._privileges() m
            JOIN pg_catalog.pg_class c ON c.relnamespace = 'pgrelay'::regnamespace AND c.relname = m.object
                                       AND c.relkind = 'v'
        )
        SELECT g.role, g.object, g.is_view FROM granted g
        UNION
        SELECT g.role, d.refobjid, false
        FROM granted g
        JOIN pg_catalog.pg_rewrite rw ON g.is_view AND rw.ev_class = g.object
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                                   AND d.refclassid = 'pg_proc'::regclass
        JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid AND p.pronamespace = 'pgrelay'::regnamespace
        ORDER BY 1, 3, 2
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_grant.role);
        IF v_grant.is_view THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO %I', v_grant.object::regclass, v_grant.role);
        ELSE
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', v_grant.object::regprocedure, v_grant.role);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgrelay._apply_privileges() IS
'Private: make the privileges on schema pgrelay exactly what _privileges() declares (run by the installer).';

-- Called last by the install script and by every upgrade script, with the version they leave.
-- Under CREATE EXTENSION (and ALTER EXTENSION UPDATE), has pg_dump keep the data of every table and
-- sequence, those an upgrade added included; records in _migrations how this version arrived.
CREATE FUNCTION pgrelay._record_install(p_version text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pgrelay') THEN
        FOR v_table IN
            SELECT c.oid FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relkind IN ('r', 'S') ORDER BY c.relname
        LOOP
            PERFORM pg_catalog.pg_extension_config_dump(v_table, '');
        END LOOP;
    END IF;
    INSERT INTO pgrelay._migrations (version, method)
    VALUES (p_version, coalesce(nullif(pg_catalog.current_setting('pgrelay.installer', true), ''),
                                CASE WHEN EXISTS (SELECT 1 FROM pgrelay._migrations) THEN 'alter extension update'
                                     ELSE 'create extension' END));
END
$$;


-- ---------------------------------------------------------------------------------------------
-- Functions whose text changed
-- ---------------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION pgrelay._count_removed()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
            INSERT INTO pgrelay._jobs (queue_id, queue, task, kind, payload, run_at, priority, options)
            SELECT q.id, p_queue, p_task, p_kind, p_payload, p_run_at, p_priority,
                   pgrelay._job_options(p_max_attempts, p_timeout_seconds, NULL, NULL, p_trace_id, p_replayed_from)
            FROM pgrelay._queues q WHERE q.queue = p_queue
            RETURNING id INTO v_id;
            EXIT WHEN FOUND;
            PERFORM pgrelay._queue_id(p_queue);
        END LOOP;
    ELSE
        LOOP
            IF p_idempotency_key IS NOT NULL THEN
                SELECT k.job_id INTO v_existing FROM pgrelay._idempotency_keys k WHERE k.key = p_idempotency_key;
                IF FOUND THEN
                    RETURN v_existing;
                END IF;
            END IF;
            v_id := pg_catalog.nextval('pgrelay._job_id_seq');
            IF p_idempotency_key IS NOT NULL THEN
                -- waits for a concurrent transaction holding the same key, then skips if it committed
                INSERT INTO pgrelay._idempotency_keys (key, job_id) VALUES (p_idempotency_key, v_id)
                ON CONFLICT (key) DO NOTHING;
                CONTINUE WHEN NOT FOUND;
            END IF;
            v_queue_id := coalesce(v_queue_id, pgrelay._queue_id(p_queue));
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options)
            VALUES (v_id, v_queue_id, p_queue, p_task, p_kind, p_payload, p_run_at, p_priority,
                    pgrelay._job_options(p_max_attempts, p_timeout_seconds, p_idempotency_key, p_dedupe_key,
                                         p_trace_id, p_replayed_from))
            ON CONFLICT (queue_id, ((options).dedupe_key)) WHERE (options).dedupe_key IS NOT NULL DO NOTHING;
            EXIT WHEN FOUND;
            SELECT j.id INTO v_existing FROM pgrelay._jobs j
            WHERE j.queue_id = v_queue_id AND (j.options).dedupe_key = p_dedupe_key;
            IF FOUND THEN
                IF p_idempotency_key IS NOT NULL THEN
                    UPDATE pgrelay._idempotency_keys SET job_id = v_existing WHERE key = p_idempotency_key;
                END IF;
                RETURN v_existing;
            END IF;
            -- the duplicate finished between our insert and our read: undo the key and try again
            IF p_idempotency_key IS NOT NULL THEN
                DELETE FROM pgrelay._idempotency_keys WHERE key = p_idempotency_key AND job_id = v_id;
            END IF;
        END LOOP;
    END IF;
    PERFORM pgrelay._notify(p_queue, p_run_at);
    RETURN v_id;
END
$function$;

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
                      j.created_at, (j.options).idempotency_key;
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
              j.created_at, (j.options).idempotency_key;
END
$function$;

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
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options)
            SELECT p.id, q.id, p.queue, p.task, p.kind, p.payload, p.run_at, p.priority,
                   pgrelay._job_options(p.max_attempts, p.timeout_seconds, NULL, NULL, p.trace_id, NULL)
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
            INSERT INTO pgrelay._jobs (queue_id, queue, task, payload)
            SELECT v_queue_id, v_queue, v_task, jsonb_build_object('op', TG_OP, 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                                                       'old', NULL, 'new', to_jsonb(r))
            FROM new_rows r;
        ELSE
            INSERT INTO pgrelay._jobs (queue_id, queue, task, payload)
            SELECT v_queue_id, v_queue, v_task, jsonb_build_object('op', TG_OP, 'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME,
                                                       'old', to_jsonb(r), 'new', NULL)
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

CREATE OR REPLACE FUNCTION pgrelay.heartbeat(worker text, ids bigint[] DEFAULT '{}'::bigint[], lease_seconds integer DEFAULT NULL::integer, host text DEFAULT NULL::text, pid integer DEFAULT NULL::integer, queues text[] DEFAULT NULL::text[])
 RETURNS bigint[]
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay.maintenance_scheduled()
 RETURNS boolean
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.2.0');
