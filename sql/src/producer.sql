-- ---------------------------------------------------------------------------------------------
-- Producer API
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.enqueue(
    task text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    run_at timestamptz DEFAULT pg_catalog.now(),
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    dedupe_key text DEFAULT NULL,
    trace_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    -- NULL means "the default", so callers (drivers, PostgREST) may pass every argument
    v_payload jsonb := coalesce(enqueue.payload, '{}');
    v_queue text := coalesce(enqueue.queue, 'default');
    v_run_at timestamptz := coalesce(enqueue.run_at, now());
    v_priority integer := coalesce(enqueue.priority, 0);
BEGIN
    PERFORM pgrelay._check(pgrelay._job_args_error(enqueue.task, v_queue, v_payload, v_run_at, v_priority,
        enqueue.max_attempts, enqueue.timeout_seconds, enqueue.idempotency_key, enqueue.dedupe_key, enqueue.trace_id));
    RETURN pgrelay._enqueue(v_queue, enqueue.task, 'h', v_payload, v_run_at, v_priority, enqueue.max_attempts,
        enqueue.timeout_seconds, enqueue.idempotency_key, enqueue.dedupe_key, enqueue.trace_id);
END
$$;
COMMENT ON FUNCTION pgrelay.enqueue(text, jsonb, text, timestamptz, integer, integer, integer, text, text, text) IS
'Enqueue a job for a handler; returns its id. Runs in the caller''s transaction: a rollback removes the job.

task: handler name (letters, digits, . _ - : /). payload: any JSON. queue: default ''default''.
An argument passed as NULL takes its default (payload {}, queue default, run_at now, priority 0).
run_at: not before this time. priority: higher runs first. max_attempts / timeout_seconds: NULL uses the
queue''s setting / no timeout. idempotency_key: an existing key of the queue returns the job it created
(kept as long as the job or its history). dedupe_key: an active job of the queue with this key is returned instead.
Errors: PR001 with a message naming the bad argument.

Example: SELECT pgrelay.enqueue(''orders.created'', jsonb_build_object(''id'', 42), idempotency_key => ''order-42'');';

CREATE FUNCTION pgrelay.enqueue_http(
    url text,
    body jsonb DEFAULT NULL,
    method text DEFAULT 'POST',
    headers jsonb DEFAULT '{}',
    task text DEFAULT 'http',
    queue text DEFAULT 'default',
    run_at timestamptz DEFAULT pg_catalog.now(),
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    dedupe_key text DEFAULT NULL,
    trace_id text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    -- NULL means "the default", so callers (drivers, PostgREST) may pass every argument
    v_method text := upper(coalesce(enqueue_http.method, 'POST'));
    v_headers jsonb := coalesce(enqueue_http.headers, '{}');
    v_task text := coalesce(enqueue_http.task, 'http');
    v_queue text := coalesce(enqueue_http.queue, 'default');
    v_run_at timestamptz := coalesce(enqueue_http.run_at, now());
    v_priority integer := coalesce(enqueue_http.priority, 0);
    v_err record;
BEGIN
    v_err := pgrelay._http_args_error(enqueue_http.url, v_method, v_headers);
    PERFORM pgrelay._check(v_err.message, v_err.sqlstate);
    PERFORM pgrelay._check(pgrelay._job_args_error(v_task, v_queue, '{}', v_run_at, v_priority,
        enqueue_http.max_attempts, enqueue_http.timeout_seconds, enqueue_http.idempotency_key,
        enqueue_http.dedupe_key, enqueue_http.trace_id));
    RETURN pgrelay._enqueue(v_queue, v_task, 'u',
        jsonb_build_object('url', enqueue_http.url, 'method', v_method, 'headers', v_headers, 'body', enqueue_http.body),
        v_run_at, v_priority, enqueue_http.max_attempts, enqueue_http.timeout_seconds,
        enqueue_http.idempotency_key, enqueue_http.dedupe_key, enqueue_http.trace_id);
END
$$;
COMMENT ON FUNCTION pgrelay.enqueue_http(text, jsonb, text, jsonb, text, text, timestamptz, integer, integer, integer, text, text, text) IS
'Enqueue an HTTP request (a webhook) for jobs-worker to send; returns the job id.

url: absolute http(s) URL with a host, no user:password@ (PR003 otherwise). method: GET, POST, PUT, PATCH,
DELETE, HEAD or OPTIONS (PR004). headers: JSON object of name -> string, or {"env": "VAR"} to have the worker
read a secret from its environment at send time. body: JSON sent as the request body. The other arguments
are enqueue''s.

Example: SELECT pgrelay.enqueue_http(''https://hooks.example.com/orders'', jsonb_build_object(''id'', 42));';

-- One parsed, validated row per element of enqueue_bulk's array (error is NULL when the element is good).
-- Inlined into enqueue_bulk's statements; casts of wrongly typed values raise, and enqueue_bulk
-- then finds the element by checking them one at a time.
CREATE FUNCTION pgrelay._bulk_parse(p_jobs jsonb)
RETURNS SETOF pgrelay._job_spec
LANGUAGE sql STABLE AS $$
    SELECT s.ord, s.queue, s.task, s.kind,
           CASE WHEN s.kind = 'u'
                THEN pg_catalog.jsonb_build_object('url', s.e ->> 'url', 'method', pg_catalog.upper(s.method),
                                                   'headers', s.headers, 'body', s.e -> 'body')
                ELSE s.payload END,
           s.run_at, s.priority, s.max_attempts, s.timeout_seconds, s.idempotency_key, s.dedupe_key, s.trace_id,
           CASE
               WHEN pg_catalog.jsonb_typeof(s.e) <> 'object' THEN 'must be a JSON object'
               WHEN s.not_text IS NOT NULL
               THEN pg_catalog.format('%s must be a JSON string, not %s', s.not_text, pg_catalog.jsonb_typeof(s.e -> s.not_text))
               WHEN s.unknown_key IS NOT NULL
               THEN pg_catalog.format('unknown key %s (allowed: task, payload, queue, run_at, priority, max_attempts, timeout_seconds, idempotency_key, dedupe_key, trace_id, url, method, headers, body)',
                                      pg_catalog.quote_literal(s.unknown_key))
               WHEN s.kind = 'u' AND s.e ? 'payload' THEN 'an HTTP job (with url) takes body, not payload'
               WHEN s.kind = 'h' AND (s.e ?| ARRAY['method', 'headers', 'body']) THEN 'method, headers and body need a url'
               WHEN s.kind = 'u' THEN coalesce((pgrelay._http_args_error(s.e ->> 'url', s.method, s.headers)).message,
                   pgrelay._job_args_error(s.task, s.queue, '{}', s.run_at, s.priority, s.max_attempts,
                                           s.timeout_seconds, s.idempotency_key, s.dedupe_key, s.trace_id))
               ELSE pgrelay._job_args_error(s.task, s.queue, s.payload, s.run_at, s.priority, s.max_attempts,
                                            s.timeout_seconds, s.idempotency_key, s.dedupe_key, s.trace_id)
           END
    FROM (
        -- jsonb_to_record reads every argument of an element in one call (a non-object reads as {}
        -- and is reported above); a value of the wrong type raises, as documented at enqueue_bulk
        SELECT e.ord, e.e,
               CASE WHEN e.e ? 'url' THEN 'u' ELSE 'h' END::"char" AS kind,
               CASE WHEN e.e ? 'url' THEN coalesce(r.task, 'http') ELSE r.task END AS task,
               coalesce(r.queue, 'default') AS queue,
               coalesce(nullif(r.payload, 'null'), '{}') AS payload,
               coalesce(r.run_at, pg_catalog.now()) AS run_at,
               coalesce(r.priority, 0) AS priority,
               r.max_attempts, r.timeout_seconds, r.idempotency_key, r.dedupe_key, r.trace_id,
               coalesce(r.method, 'POST') AS method,
               coalesce(nullif(r.headers, 'null'), '{}') AS headers,
               -- jsonb_to_record would read {"task": 5} as the text '5': the first text argument that is
               -- neither a JSON string nor null
               CASE WHEN pg_catalog.jsonb_typeof(e.e -> 'task') NOT IN ('string', 'null') THEN 'task'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'queue') NOT IN ('string', 'null') THEN 'queue'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'idempotency_key') NOT IN ('string', 'null') THEN 'idempotency_key'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'dedupe_key') NOT IN ('string', 'null') THEN 'dedupe_key'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'trace_id') NOT IN ('string', 'null') THEN 'trace_id'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'url') NOT IN ('string', 'null') THEN 'url'
                    WHEN pg_catalog.jsonb_typeof(e.e -> 'method') NOT IN ('string', 'null') THEN 'method'
               END AS not_text,
               -- the first key that is not an argument name; the subquery runs only when there is one
               CASE WHEN pg_catalog.jsonb_typeof(e.e) = 'object'
                         AND (e.e - ARRAY['task', 'payload', 'queue', 'run_at', 'priority', 'max_attempts', 'timeout_seconds',
                                          'idempotency_key', 'dedupe_key', 'trace_id', 'url', 'method', 'headers', 'body']) <> '{}'
                    THEN (SELECT min(k) FROM pg_catalog.jsonb_object_keys(
                              e.e - ARRAY['task', 'payload', 'queue', 'run_at', 'priority', 'max_attempts', 'timeout_seconds',
                                          'idempotency_key', 'dedupe_key', 'trace_id', 'url', 'method', 'headers', 'body']) k)
               END AS unknown_key
        FROM pg_catalog.jsonb_array_elements(p_jobs) WITH ORDINALITY AS e(e, ord)
        CROSS JOIN LATERAL pg_catalog.jsonb_to_record(
            CASE WHEN pg_catalog.jsonb_typeof(e.e) = 'object' THEN e.e ELSE '{}' END)
            AS r(task text, payload jsonb, queue text, run_at timestamptz, priority integer, max_attempts integer,
                 timeout_seconds integer, idempotency_key text, dedupe_key text, trace_id text, method text,
                 headers jsonb)
    ) s
$$;

CREATE FUNCTION pgrelay.enqueue_bulk(jobs jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.enqueue_bulk(jsonb) IS
'Enqueue many jobs in one call; returns their ids in input order.

jobs: a JSON array (at most 10000) of objects with enqueue''s argument names (task, payload, queue, run_at,
priority, max_attempts, timeout_seconds, idempotency_key, dedupe_key, trace_id), or enqueue_http''s (url,
method, headers, body, ...) for HTTP jobs. One bad element rejects the whole call (PR002, message
"jobs[<index>]: ...", index from 0) and nothing is enqueued.

Example: SELECT * FROM pgrelay.enqueue_bulk(''[{"task": "mail.send", "payload": {"to": 1}}, {"task": "mail.send", "priority": 5}]'');';

CREATE FUNCTION pgrelay.enqueue_many(
    task text,
    payloads jsonb[],
    queue text DEFAULT 'default',
    run_at timestamptz DEFAULT pg_catalog.now(),
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL,
    trace_id text DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.enqueue_many(text, jsonb[], text, timestamptz, integer, integer, integer, text) IS
'Enqueue one job per payload, all for the same task and options, in one statement; ids in input order.

The fastest way to enqueue many jobs from a driver: an array of payloads and arguments checked once.
Arguments as in enqueue (NULL means the default; a NULL payload is {}). At most 10000 payloads per
call. For jobs that differ in more than their payload, or carry idempotency or dedupe keys, use
enqueue_bulk. Errors: PR001 naming the bad argument; nothing is enqueued.

Example: SELECT * FROM pgrelay.enqueue_many(''mail.send'', ARRAY[''{"to": 1}'', ''{"to": 2}'']::jsonb[], queue => ''mail'');';

CREATE FUNCTION pgrelay.enqueue_trigger()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
COMMENT ON FUNCTION pgrelay.enqueue_trigger() IS
'Trigger function that enqueues each row change as a job with payload {op, schema, table, old, new}.

Arguments: task [, queue]. FOR EACH ROW: AFTER INSERT OR UPDATE OR DELETE, one enqueue per row.
FOR EACH STATEMENT (INSERT or DELETE, with the transition table new_rows or old_rows): the same jobs,
all rows of the statement in one insert; much cheaper for multi-row statements.

Example: CREATE TRIGGER orders_reindex AFTER INSERT OR UPDATE ON orders
         FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger(''search.reindex'', ''default'');
Example: CREATE TRIGGER orders_created AFTER INSERT ON orders REFERENCING NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger(''orders.created'');';
