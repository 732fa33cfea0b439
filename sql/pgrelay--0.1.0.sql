-- pgrelay 0.1.0: a job queue and transactional outbox whose semantics live in PostgreSQL.
--
-- This file installs the current version. It is run by `jobs-migrate` (inside one transaction,
-- under an advisory lock, after it has created the schema) and by `CREATE EXTENSION pgrelay`
-- (which creates the schema from pgrelay.control). Released versions are frozen: a change after
-- a release goes here AND into a new upgrade script sql/pgrelay--<old>--<new>.sql.
--
-- Public objects have plain names; private tables and helpers start with "_" and are not an
-- interface. Every function that changes state is SECURITY DEFINER with a fixed search_path and
-- refers to every object schema-qualified. The PL/pgSQL entry points also SET plan_cache_mode =
-- force_generic_plan: their queries are written for one plan (the planner settings pinned on the
-- helpers that need them), and PostgreSQL's default would plan most of them afresh on every call,
-- because a plan for "p_tasks IS NULL OR ..." looks cheaper once the parameters are known. That
-- re-planning was most of consume()'s fixed cost (an empty consume: 280 us, generic: 75 us).
-- And they SET jit = off: a plan that needs a step the helper disabled (a sort under enable_sort =
-- off) carries PostgreSQL's huge disable_cost, which crossed jit_above_cost, so consume() from more
-- than one queue compiled its query with LLVM on every call (120-180 ms a claim). A queue's
-- queries are short; JIT never pays for itself here.
--
-- Errors raised by pgrelay (SQLSTATE, meaning; mirrored one-to-one by python/pgrelay/errors.py):
--   PR001  invalid_argument       an argument is missing, malformed or out of range
--   PR002  invalid_bulk_job       an element of enqueue_bulk's array is invalid (message names its index)
--   PR003  invalid_url            enqueue_http: the URL is not an absolute http(s) URL with a host
--   PR004  invalid_http_request   enqueue_http: bad method or headers
--   PR005  unsupported_isolation  consume called outside READ COMMITTED (limits could not be kept)
--   PT404  not_found              no job has this id (never existed, or purged); PostgREST answers 404
--   PT409  conflict               the job's state does not allow this (e.g. replaying a pending job); 409
-- (PostgREST turns PTxyz into HTTP status xyz; every other pgrelay code into 400.)
-- No pgrelay function raises a class-40 SQLSTATE (PostgREST would retry it forever).
--
-- Job states (a job lives in exactly one of the two job tables):
--   _jobs      pending  waiting to run; due when run_at <= now(); leased_by IS NULL
--              leased   claimed by a worker until lease_expires_at; attempt = the lease's fencing token
--   _finished  succeeded    acked
--              dead_letter  failed permanently or ran out of attempts
--              cancelled    cancelled before it ran

CREATE TABLE pgrelay._migrations (
    version      text PRIMARY KEY,
    installed_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    method       text NOT NULL
);
COMMENT ON TABLE pgrelay._migrations IS 'Private: the versions applied to this database, oldest first.';

CREATE SEQUENCE pgrelay._job_id_seq AS bigint;

-- What a job may carry beyond what every job has, in one column of _jobs and _finished: NULL for a
-- job that sets none of it (the common case; see _job_options). A job row is formed, taken apart and
-- copied about ten times between its enqueue and its history row, and PostgreSQL walks every column
-- each time, set or NULL: as six columns of each table they cost a claim-and-complete cycle of 100
-- jobs 1.8% more instructions (make bench-instructions: 12.37 M against 12.15 M). The price is paid
-- by jobs that set one: the value carries a row header of its own, about 30 bytes.
CREATE TYPE pgrelay._job_options AS (
    max_attempts    integer,   -- NULL: the queue's setting
    timeout_seconds integer,
    idempotency_key text,      -- also in _idempotency_keys, as long as the job or its history is kept
    dedupe_key      text,      -- unique among the active jobs of a queue (_jobs_dedupe_key_idx)
    trace_id        text,
    replayed_from   bigint     -- the finished job replay() made this one from
);

-- The hot table: only active jobs, so claiming stays fast however long the history grows.
CREATE TABLE pgrelay._jobs (
    -- fixed-width, never NULL columns first: their offsets are the same in every row, so reading
    -- them needs no walk over the row. Queue and task names compare bytewise (COLLATE "C", in every
    -- table that holds them): they are identifiers, and under a libc collation every comparison in
    -- the claim index looked up the locale.
    id               bigint PRIMARY KEY DEFAULT pg_catalog.nextval('pgrelay._job_id_seq'),
    priority         integer NOT NULL DEFAULT 0,
    attempt          integer NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The queue's id (_queues.id, see _queue_id), beside its name: the claim and lease indexes lead
    -- with it, so their keys are all fixed-width. With the name there, every key test of a claim scan
    -- compared text and found run_at behind a variable-length value, and every lease compared text as
    -- it was added to the lease index: a claim-and-complete cycle of 100 jobs took 2.8% more
    -- instructions (make bench-instructions: 13.01 M against 12.66 M), and enqueue_bulk of 1,000
    -- jobs 2.4% more. Written once, with the name, by every insert; no foreign key, which would look
    -- _queues up again for each row.
    queue_id         integer NOT NULL,
    -- The lease's times (see below) before the first variable-length column. A lease is an update:
    -- PostgreSQL compares every indexed column of the old and the new row, and adds
    -- lease_expires_at to the lease index; placed here, a leased row has it at a fixed offset.
    -- With the dedupe index on queue_id (not the queue's name), a cycle of 100 took 0.5% fewer
    -- instructions (make bench-instructions: 12.60 M against 12.66 M).
    leased_at        timestamptz,
    lease_expires_at timestamptz,
    queue            text COLLATE "C" NOT NULL,
    task             text COLLATE "C" NOT NULL,
    -- Kinds and statuses are one-byte codes, as in pg_catalog (relkind): every job row is written
    -- three times (enqueue, lease, history), and their names as text cost a claim-and-complete cycle
    -- 3.5% of its WAL. _kind_name and _status_name give the names the views and functions show.
    kind             "char" NOT NULL DEFAULT 'h',   -- h: handler, u: http (a URL)
    -- the lease: leased_by, leased_at and lease_expires_at all set (leased) or none (pending);
    -- attempt is the lease's fencing token
    leased_by        text,
    payload          jsonb NOT NULL,
    options          pgrelay._job_options,   -- NULL: none set (never a row of NULLs: _job_options)
    last_error       text,
    cancel_requested_at timestamptz,   -- cancel() of a leased job: it ends cancelled at the next heartbeat
    -- The one check on the hot table, and it tests only NULLs: PostgreSQL reads and prepares every
    -- CHECK of a table again for each statement that writes it and evaluates it for every row, which
    -- cost a claim-and-complete cycle of 100 jobs 4% for the seven checks this table used to have.
    -- The values themselves (kind, attempts, timeouts) are checked by the functions that write them,
    -- the only writers.
    CONSTRAINT _jobs_lease_complete CHECK (
        (leased_at IS NULL) = (leased_by IS NULL) AND (lease_expires_at IS NULL) = (leased_by IS NULL)
        AND (leased_by IS NULL OR attempt >= 1))
);
COMMENT ON TABLE pgrelay._jobs IS 'Private: pending and leased jobs. Use the functions and views, never this table.';

-- Exactly the claim order of consume() within a queue: due pending jobs, higher priority first, then
-- run_at, then id. The only claim index: each index costs every enqueue about a quarter of its insert
-- time, so consume() merges several queues from this one (see _pick) rather than keeping a second,
-- queue-less index. A backlog in one queue is never scanned by a worker of another. Its keys end in
-- the id, so they never repeat: deduplication would only cost each page split a wasted pass.
CREATE INDEX _jobs_queue_claim_idx ON pgrelay._jobs (queue_id, priority DESC, run_at, id) WITH (deduplicate_items = off)
    WHERE leased_by IS NULL;
-- Leases: counted per queue for concurrency limits, scanned by expiry in recover(). The predicate is
-- the lease expiry, not leased_by (the two agree: _jobs_lease_complete), so that lookups of a leased
-- job by id, which test leased_by IS NOT NULL, cannot be planned over it: with statistics taken while few
-- jobs were leased, the planner would otherwise read every lease instead of probing the primary key
-- (an ack of 100 jobs beside 20,000 leases went from 0.3 ms to 13 ms that way).
CREATE INDEX _jobs_lease_expiry_idx ON pgrelay._jobs (queue_id, lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- Every job row is updated once and deleted once, so the hot table churns completely: vacuum it after
-- every 1,000 dead rows, however many live ones a backlog holds, and at full speed. With a backlog of
-- 50k-100k jobs that gave 2.3x the vacuums of the defaults, 2.5x fewer dead rows at most and a 13%
-- smaller peak (python -m tests.reliability.test_bloat --backlog 50000 100000 --naptime 1s, 2,200
-- jobs/s); throttled (the default cost delay) it measured within 10% of that at this rate, and it is
-- kept unthrottled for the rates of tuned workers, ten times higher.
-- Fillfactor 70: no job update can be HOT (lease_expires_at is indexed and leased_by is in the claim
-- index's predicate), but with free space on its page a lease writes its new row there: that logs
-- only the part of the row from the first to the last changed byte, and not the extra lock record a
-- move to another page takes. A claim-and-complete cycle of 100 writes 3.6% less WAL (make
-- bench-instructions: 85.2 kB instead of 88.4 kB) in the same CPU time (0.3% more instructions, the
-- same estimated cycles); enqueue_bulk of 1,000 jobs takes 0.1% more instructions. It costs space: a
-- backlog takes 43% more heap pages, and the steady load above peaked at 14.6 MB instead of 11.5 MB
-- (heap and indexes). A table that must hold a large backlog can be set back with
-- ALTER TABLE pgrelay._jobs SET (fillfactor = 100).
ALTER TABLE pgrelay._jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                               autovacuum_vacuum_cost_delay = 0, fillfactor = 70);
-- A dedupe key is unique among the active jobs of a queue. (By the queue's id, not its name: every
-- lease compares the indexed columns of the old and the new row, and the name was one more text.)
CREATE UNIQUE INDEX _jobs_dedupe_key_idx ON pgrelay._jobs (queue_id, ((options).dedupe_key))
    WHERE (options).dedupe_key IS NOT NULL;

-- Finished jobs. Rows arrive here in one statement with the delete from _jobs, copies of its rows
-- made by _finish, the only writer (and so with the values _jobs holds NOT NULL). Like the hot
-- table's, its constraints are in the functions that write it: ten NOT NULL columns and one CHECK
-- cost a claim-and-complete cycle of 100 jobs 1.1% of its instructions (make bench-instructions),
-- each statement re-reading the CHECK's expression and taking every checked row apart column by
-- column. No index on finished_at either: purge() walks the history in id order (see there). A BRIN
-- index cost that cycle 2.6% (PostgreSQL 15 reads its metapage and revmap again for each row).
CREATE TABLE pgrelay._finished (
    id               bigint PRIMARY KEY,
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
    replayed_as      bigint         -- the job replay() created from this one (the latest, when forced again)
);
COMMENT ON TABLE pgrelay._finished IS 'Private: succeeded, dead-lettered and cancelled jobs, kept until purged.';
CREATE INDEX _finished_dead_letter_idx ON pgrelay._finished (queue, finished_at) WHERE status = 'd';

-- One row per ended attempt, except a successful last attempt, which _finished records (leased_by,
-- leased_at, finished_at): one row fewer written per job on the hot path. get_attempts joins the
-- three places; the running attempt is read from _jobs.
CREATE TABLE pgrelay._attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 1),
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'timeout', 'lease_expired', 'cancelled')),
    error       text,
    details     jsonb,
    PRIMARY KEY (job_id, attempt)
);
COMMENT ON TABLE pgrelay._attempts IS 'Private: the audit trail, one row per ended attempt.';
-- Attempts arrive in finished_at order: the recent_failures view reads the last hour through this
-- BRIN index, and purge() finds the attempts of the jobs it removes by the primary key.
CREATE INDEX _attempts_finished_at_idx ON pgrelay._attempts USING brin (finished_at);

-- Idempotency keys outlive the active job: they are kept as long as the job or its history is.
CREATE TABLE pgrelay._idempotency_keys (
    key        text PRIMARY KEY,
    job_id     bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE pgrelay._idempotency_keys IS 'Private: idempotency key -> the job it created.';

-- Queues and their settings. A queue exists as soon as a job names it: its row, with its id, is made
-- then (_queue_id) and never removed, so an id always names the same queue. NULL settings are the
-- defaults.
CREATE TABLE pgrelay._queues (
    queue                text COLLATE "C" PRIMARY KEY,
    id                   integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    paused               boolean NOT NULL DEFAULT false,
    concurrency          integer CHECK (concurrency >= 1),
    max_attempts         integer CHECK (max_attempts >= 1),
    lease_seconds        integer CHECK (lease_seconds >= 1),
    backoff_base_seconds double precision CHECK (backoff_base_seconds > 0),
    backoff_max_seconds  double precision CHECK (backoff_max_seconds > 0),
    retention_succeeded_days   integer CHECK (retention_succeeded_days >= 0),    -- NULL: 7
    retention_dead_letter_days integer CHECK (retention_dead_letter_days >= 0),  -- NULL: 30 (also cancelled jobs)
    updated_at           timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE pgrelay._queues IS 'Private: every queue a job has named, its id and its settings (NULL: the default).';

CREATE TABLE pgrelay._workers (
    worker     text PRIMARY KEY,
    host       text,
    pid        integer,
    queues     text[],
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_seen  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    lease_seconds integer         -- the leases it asks for: a worker silent for that long is stale
);
COMMENT ON TABLE pgrelay._workers IS 'Private: worker heartbeats.';

-- Finished jobs counted per queue and minute, so queue_stats never scans the history. Kept by
-- _finish, through which every job finishes: each statement that finishes jobs adds to one row per
-- queue for its own backend (no two backends ever update the same row, so counting adds no lock
-- waits between workers); a statement trigger subtracts what leaves the history, and purge() folds
-- minutes older than two hours into one row per queue at minute -infinity. Totals are the sum of a
-- queue's rows.
CREATE TABLE pgrelay._counts (
    queue       text COLLATE "C" NOT NULL,
    minute      timestamptz NOT NULL,
    backend     integer NOT NULL,
    succeeded   bigint NOT NULL DEFAULT 0,
    dead_letter bigint NOT NULL DEFAULT 0,
    cancelled   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute, backend)
);
COMMENT ON TABLE pgrelay._counts IS 'Private: finished jobs per queue, minute and backend (see queue_stats).';

-- ---------------------------------------------------------------------------------------------
-- Declared result types (never a table's rowtype, so tables can change freely)
-- ---------------------------------------------------------------------------------------------

CREATE TYPE pgrelay.claimed_job AS (
    id               bigint,
    queue            text,
    task             text,
    kind             text,
    payload          jsonb,
    attempt          integer,
    max_attempts     integer,
    lease_expires_at timestamptz,
    timeout_seconds  integer,
    trace_id         text,
    priority         integer,
    run_at           timestamptz,
    created_at       timestamptz,
    idempotency_key  text
);
COMMENT ON TYPE pgrelay.claimed_job IS
'A job leased by consume(): what a worker needs to run it and to ack/nack it (id + attempt).';

CREATE TYPE pgrelay.attempt AS (
    job_id      bigint,
    attempt     integer,
    worker      text,
    started_at  timestamptz,
    finished_at timestamptz,
    outcome     text,
    error       text,
    details     jsonb
);
COMMENT ON TYPE pgrelay.attempt IS
'One attempt of a job. outcome: succeeded, failed, timeout, lease_expired, cancelled, or running (the current lease).';

CREATE TYPE pgrelay.queue_settings AS (
    queue                text,
    paused               boolean,
    concurrency          integer,
    max_attempts         integer,
    lease_seconds        integer,
    backoff_base_seconds double precision,
    backoff_max_seconds  double precision,
    retention_succeeded_days   integer,
    retention_dead_letter_days integer
);
COMMENT ON TYPE pgrelay.queue_settings IS
'A queue''s effective settings (defaults filled in); concurrency NULL means unlimited.';

CREATE TYPE pgrelay.maintenance AS (recovered integer, purged integer);
COMMENT ON TYPE pgrelay.maintenance IS
'What maintain() did: expired leases recovered, finished jobs purged by the queues'' retention.';

-- Used by consume: the jobs _pick locked, their queues, and where their rows are (arrays rather than a
-- set of rows: consume keeps them in variables, and composite values cost more to build and take apart).
CREATE TYPE pgrelay._picked AS (ids bigint[], queues text[], ctids tid[]);

-- Used by enqueue_bulk: one parsed element of its array.
CREATE TYPE pgrelay._job_spec AS (
    ord             bigint,
    queue           text,
    task            text,
    kind            "char",
    payload         jsonb,
    run_at          timestamptz,
    priority        integer,
    max_attempts    integer,
    timeout_seconds integer,
    idempotency_key text,
    dedupe_key      text,
    trace_id        text,
    error           text
);

-- ---------------------------------------------------------------------------------------------
-- Defaults (one place) and private helpers
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.1.0'::text $$;
COMMENT ON FUNCTION pgrelay.version() IS
'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';

CREATE FUNCTION pgrelay._default_max_attempts() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10 $$;
CREATE FUNCTION pgrelay._default_lease_seconds() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 30 $$;
CREATE FUNCTION pgrelay._default_backoff_base_seconds() RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1.0::double precision $$;
CREATE FUNCTION pgrelay._default_backoff_max_seconds() RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3600.0::double precision $$;
CREATE FUNCTION pgrelay._default_retention_succeeded_days() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 7 $$;
CREATE FUNCTION pgrelay._default_retention_dead_letter_days() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 30 $$;
-- The channel that enqueue and resume NOTIFY (payload: the queue name).
CREATE FUNCTION pgrelay._channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'pgrelay_jobs'::text $$;
-- The names of the one-byte codes the tables keep (SQL functions of one CASE, inlined where called).
CREATE FUNCTION pgrelay._kind_name(p_kind "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind WHEN 'h' THEN 'handler' WHEN 'u' THEN 'http' END
$$;
CREATE FUNCTION pgrelay._status_name(p_status "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_status WHEN 's' THEN 'succeeded' WHEN 'd' THEN 'dead_letter' WHEN 'c' THEN 'cancelled' END
$$;
-- ... and back, for _finish, whose callers name the status (NULL for any other name)
CREATE FUNCTION pgrelay._status_code(p_status text) RETURNS "char"
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_status WHEN 'succeeded' THEN 's' WHEN 'dead_letter' THEN 'd' WHEN 'cancelled' THEN 'c' END::"char"
$$;

-- Wake workers of p_queue: payload "<queue>" when a job is due now, "<queue> <unix time>" for the
-- time a job becomes due, so a listening worker can set a timer instead of polling.
-- NOTIFY serialises committing transactions; setting pgrelay.notify = off (per database, role or
-- session) skips it, and workers then find jobs by polling.
-- (PL/pgSQL, whose simple expressions run without planning: as an SQL function with a WHERE clause it
-- could not be inlined and was planned again on every call, 70 us of every single enqueue.)
CREATE FUNCTION pgrelay._notify(p_queue text, p_run_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(nullif(current_setting('pgrelay.notify', true), ''), 'on') <> 'off' THEN
        PERFORM pg_notify(pgrelay._channel(),
            CASE WHEN p_run_at <= now() THEN p_queue
                 ELSE p_queue || ' ' || round(extract(epoch FROM p_run_at), 3)::text END);
    END IF;
END
$$;

-- Exponential backoff with "equal jitter": the n-th retry waits between d/2 and d seconds,
-- d = min(max, base * 2^(n-1)).
-- (PL/pgSQL: as an SQL function with a FROM clause it was planned again on every nack.)
CREATE FUNCTION pgrelay._backoff(p_attempt integer, p_base double precision, p_max double precision)
RETURNS double precision
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    d double precision := LEAST(p_max, p_base * pg_catalog.power(2::double precision, LEAST(GREATEST(p_attempt, 1) - 1, 60)));
BEGIN
    RETURN d / 2 + pg_catalog.random() * d / 2;
END
$$;

-- Raise PR001 when p_error is not NULL.
CREATE FUNCTION pgrelay._check(p_error text, p_sqlstate text DEFAULT 'PR001', p_hint text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_error IS NOT NULL AND p_hint IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_error, HINT = p_hint;
    ELSIF p_error IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = p_sqlstate, MESSAGE = p_error;
    END IF;
END
$$;

-- Names: queues and workers are identifiers, tasks may also hold "/"; all bounded in length.
CREATE FUNCTION pgrelay._name_error(p_what text, p_value text, p_max integer, p_extra text DEFAULT '')
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_value IS NULL THEN p_what || ' must not be NULL'
        WHEN p_value !~ ('^[A-Za-z0-9_][A-Za-z0-9_.:' || p_extra || '-]*$') OR pg_catalog.length(p_value) > p_max
        THEN pg_catalog.format('invalid %s %s: use 1 to %s letters, digits or . _ - :%s, starting with a letter, digit or _',
                               p_what, pg_catalog.quote_literal(pg_catalog.left(p_value, 80)), p_max,
                               CASE WHEN p_extra = '' THEN '' ELSE ' ' || p_extra END)
    END
$$;

-- A number outside its range: the message naming the argument, the range and the value; NULL when in range.
CREATE FUNCTION pgrelay._range_error(p_what text, p_value double precision, p_low double precision,
                                     p_high double precision, p_extra text DEFAULT '')
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_value = 'NaN' OR p_value NOT BETWEEN p_low AND p_high
                THEN pg_catalog.format('%s must be between %s and %s%s, not %s', p_what, p_low, p_high, p_extra, p_value)
           END
$$;

-- A LIKE pattern PostgreSQL refuses (22025): one that ends with an escape character (\) escaping nothing.
CREATE FUNCTION pgrelay._bad_like(p_pattern text)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_pattern ~ '(^|[^\\])(\\\\)*\\$'
$$;

-- Every argument rule of a job, in one place: enqueue, enqueue_http and enqueue_bulk use it.
CREATE FUNCTION pgrelay._job_args_error(
    p_task text, p_queue text, p_payload jsonb, p_run_at timestamptz, p_priority integer,
    p_max_attempts integer, p_timeout_seconds integer, p_idempotency_key text, p_dedupe_key text,
    p_trace_id text)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_task IS NULL THEN 'task is required'
        WHEN pgrelay._name_error('task', p_task, 200, '/') IS NOT NULL THEN pgrelay._name_error('task', p_task, 200, '/')
        WHEN p_queue IS NULL THEN 'queue must not be NULL; leave it out to use the queue ''default'''
        WHEN pgrelay._name_error('queue', p_queue, 128) IS NOT NULL THEN pgrelay._name_error('queue', p_queue, 128)
        WHEN p_payload IS NULL THEN 'payload must not be NULL; pass ''{}'' for an empty payload'
        WHEN p_run_at IS NULL THEN 'run_at must not be NULL; leave it out to run now'
        WHEN NOT pg_catalog.isfinite(p_run_at) THEN 'run_at must be a finite timestamp, not infinity'
        WHEN p_priority IS NULL THEN 'priority must not be NULL; leave it out for priority 0'
        WHEN p_max_attempts < 1 OR p_max_attempts > 1000
        THEN pg_catalog.format('max_attempts must be between 1 and 1000 (or NULL for the queue''s setting), not %s', p_max_attempts)
        WHEN p_timeout_seconds < 1 OR p_timeout_seconds > 86400
        THEN pg_catalog.format('timeout_seconds must be between 1 and 86400 (or NULL for none), not %s', p_timeout_seconds)
        WHEN pg_catalog.length(p_idempotency_key) NOT BETWEEN 1 AND 255 THEN 'idempotency_key must be 1 to 255 characters (or NULL)'
        WHEN pg_catalog.length(p_dedupe_key) NOT BETWEEN 1 AND 255 THEN 'dedupe_key must be 1 to 255 characters (or NULL)'
        WHEN pg_catalog.length(p_trace_id) NOT BETWEEN 1 AND 255 THEN 'trace_id must be 1 to 255 characters (or NULL)'
    END
$$;

-- HTTP request rules for enqueue_http and HTTP elements of enqueue_bulk. Returns (sqlstate, message).
CREATE FUNCTION pgrelay._http_args_error(p_url text, p_method text, p_headers jsonb, OUT sqlstate text, OUT message text)
LANGUAGE sql STABLE AS $$
    SELECT e.sqlstate, e.message FROM (
        SELECT CASE
            WHEN p_url IS NULL THEN 'PR003'
            WHEN pg_catalog.length(p_url) > 2048 THEN 'PR003'
            WHEN p_url ~ '[[:space:][:cntrl:]]' THEN 'PR003'
            WHEN p_url !~* '^https?://' THEN 'PR003'
            WHEN p_url ~* '^https?://[^/?#]*@' THEN 'PR003'
            WHEN p_url !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9._~%!$&''()*+,;=-]+)(:[0-9]{1,5})?([/?#].*)?$' THEN 'PR003'
            WHEN pg_catalog.substring(p_url, '^[A-Za-z]+://[^/?#]*:([0-9]+)(?:[/?#]|$)')::integer NOT BETWEEN 1 AND 65535 THEN 'PR003'
            WHEN p_method IS NULL OR pg_catalog.upper(p_method) NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS') THEN 'PR004'
            WHEN p_headers IS NULL OR pg_catalog.jsonb_typeof(p_headers) <> 'object' THEN 'PR004'
            WHEN h.bad IS NOT NULL THEN 'PR004'
        END AS sqlstate,
        CASE
            WHEN p_url IS NULL THEN 'url is required'
            WHEN pg_catalog.length(p_url) > 2048 THEN 'url must be at most 2048 characters'
            WHEN p_url ~ '[[:space:][:cntrl:]]' THEN 'url must not contain spaces or control characters; percent-encode them'
            WHEN p_url !~* '^https?://' THEN pg_catalog.format('url %s must start with http:// or https://', pg_catalog.quote_literal(pg_catalog.left(p_url, 80)))
            WHEN p_url ~* '^https?://[^/?#]*@' THEN 'url must not contain user:password@; send credentials in a header'
            WHEN p_url !~* '^https?://(\[[0-9a-f:.]+\]|[a-z0-9._~%!$&''()*+,;=-]+)(:[0-9]{1,5})?([/?#].*)?$'
            THEN pg_catalog.format('url %s must name a host (http://host[:port]/path)', pg_catalog.quote_literal(pg_catalog.left(p_url, 80)))
            WHEN pg_catalog.substring(p_url, '^[A-Za-z]+://[^/?#]*:([0-9]+)(?:[/?#]|$)')::integer NOT BETWEEN 1 AND 65535
            THEN 'url port must be between 1 and 65535'
            WHEN p_method IS NULL OR pg_catalog.upper(p_method) NOT IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS')
            THEN pg_catalog.format('method %s is not supported: use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS', coalesce(pg_catalog.quote_literal(p_method), 'NULL'))
            WHEN p_headers IS NULL OR pg_catalog.jsonb_typeof(p_headers) <> 'object'
            THEN 'headers must be a JSON object of name -> string (or {"env": "VARIABLE"})'
            WHEN h.bad IS NOT NULL THEN h.bad
        END AS message
        FROM (SELECT (
            SELECT CASE
                WHEN kv.key !~ '^[!#$%&''*+.^_`|~0-9A-Za-z-]+$' OR pg_catalog.length(kv.key) > 256
                THEN pg_catalog.format('header name %s is not a valid HTTP token', pg_catalog.quote_literal(pg_catalog.left(kv.key, 80)))
                WHEN pg_catalog.jsonb_typeof(kv.value) = 'string' AND (kv.value #>> '{}') ~ '[[:cntrl:]]'
                THEN pg_catalog.format('header %s must not contain line breaks or other control characters', kv.key)
                WHEN pg_catalog.jsonb_typeof(kv.value) = 'object'
                     AND (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.jsonb_object_keys(kv.value) k) = ARRAY['env']
                     AND coalesce(kv.value ->> 'env', '') ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'
                THEN NULL
                WHEN pg_catalog.jsonb_typeof(kv.value) <> 'string'
                THEN pg_catalog.format('header %s must be a string or {"env": "VARIABLE"}', kv.key)
            END AS bad
            FROM pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(p_headers) = 'object' THEN p_headers ELSE '{}' END) kv
            ORDER BY 1 NULLS LAST LIMIT 1) AS bad) h
    ) e
$$;

-- What views and get_job show of an HTTP job's headers: values that look like credentials (by the
-- header's name or the value's shape) are replaced by "[redacted]". consume hands workers the real ones.
CREATE FUNCTION pgrelay._redact_http_payload(p_kind "char", p_payload jsonb)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_kind IS DISTINCT FROM 'u' OR pg_catalog.jsonb_typeof(p_payload -> 'headers') IS DISTINCT FROM 'object'
        THEN p_payload
        ELSE pg_catalog.jsonb_set(p_payload, '{headers}', (
            SELECT coalesce(pg_catalog.jsonb_object_agg(h.key, CASE
                       WHEN pg_catalog.jsonb_typeof(h.value) <> 'string' THEN h.value
                       WHEN h.key ~* 'auth|cookie|token|secret|passw|credential|api[-_]?key|access[-_]?key|private[-_]?key'
                         OR (h.value #>> '{}') ~* '^(bearer|basic|digest|token|apikey|aws4-hmac-sha256) '
                         OR (h.value #>> '{}') ~ '^(eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.|(sk|rk|pk)_(live|test)_|gh[pousr]_|github_pat_|xox[abprs]-|glpat-|whsec_|AKIA[0-9A-Z]{16})'
                       THEN '"[redacted]"'::jsonb
                       ELSE h.value END), '{}'::jsonb)
            FROM pg_catalog.jsonb_each(p_payload -> 'headers') h))
    END
$$;

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
    p_trace_id text, p_replayed_from bigint)
RETURNS pgrelay._job_options
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_max_attempts IS NOT NULL OR p_timeout_seconds IS NOT NULL OR p_idempotency_key IS NOT NULL
                  OR p_dedupe_key IS NOT NULL OR p_trace_id IS NOT NULL OR p_replayed_from IS NOT NULL
           THEN ROW(p_max_attempts, p_timeout_seconds, p_idempotency_key, p_dedupe_key, p_trace_id,
                    p_replayed_from)::pgrelay._job_options
           END
$$;

-- The one place that inserts a job (enqueue, enqueue_http, keyed enqueue_bulk elements).
-- Honours the idempotency key (global, as long as the job or its history is kept) and the
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
        -- The insert reads the queue's id itself; only a queue's first job makes its row and inserts
        -- again. (Counted with callgrind, a statement SELECT pgrelay.enqueue(...) took 3.9% more
        -- instructions than with no queue id when it called _queue_id first, 3.2% with the id as a
        -- subquery, 1.3% with this join.)
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
$$;

-- (The hot-path helpers are PL/pgSQL rather than SQL functions: PL/pgSQL caches their plans, a
-- non-inlined SQL function is planned again on every call. They forbid sequential and bitmap scans:
-- a queue table's statistics are nearly always stale, and planned as "almost empty" a 100,000-row
-- backlog was scanned on every claim and every ack; the indexes are always the right plan here.)
-- Move leased jobs (matched by id AND attempt, the fencing token) out of the hot table into the
-- history in one statement, and count them (see _counts); an attempt that did not succeed is
-- recorded first (a success is recorded by its _finished row). Returns the ids that moved ('{}' when
-- none did: an array, not a set of rows, which would cross one more result set). With p_leased false
-- it moves pending jobs instead (cancel()), recording no attempt.
-- Every job that finishes goes through here, so this function keeps the counters: an AFTER INSERT
-- trigger on _finished did the same with a second statement and a copy of every row, 0.7% of a
-- claim-and-complete cycle. The pass that collects the ids also finds whether the jobs share one
-- queue (nearly always: a worker's batch comes from one queue); then one counter row is added to,
-- by the number of ids. Jobs of several queues are counted per queue from their new history rows.
-- As a GROUP BY over the moved rows inside the move, counting cost the cycle 2.2% (make
-- bench-instructions: 12.66 M against 12.38 M without counting). This way, with the move returning
-- only the columns the history takes, the cycle is 1.8% cheaper (12.37 M against 12.60 M); the
-- same upsert as one more part of the move measured the same (12.39 M). (Two upserts, not one over
-- a UNION ALL of both sources: starting the unused branch cost the cycle 0.4%.)
-- The attempts are a statement of their own, run only for failures: as a part of the move that
-- never wrote a row on success, it still opened _attempts and its index for every ack (1% of a
-- claim-and-complete cycle, with the array result).
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
                  coalesce(i.error, j.last_error) AS last_error, i.result, j.leased_by, j.leased_at, j.created_at
    ), archived AS (
        INSERT INTO pgrelay._finished (id, queue, task, kind, status, priority, run_at, attempt, payload, options,
                                       last_error, result, leased_by, leased_at, created_at, finished_at)
        SELECT d.id, d.queue, d.task, d.kind, v_status, d.priority, d.run_at, d.attempt, d.payload, d.options,
               d.last_error, d.result, d.leased_by, d.leased_at, d.created_at, pg_catalog.now()
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
        INSERT INTO pgrelay._attempts (job_id, attempt, worker, started_at, finished_at, outcome, error, details)
        SELECT o.id, o.attempt, o.leased_by, o.leased_at, pg_catalog.now(), p_outcome, o.error, o.details
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
queue''s setting / no timeout. idempotency_key: an existing key returns the job it created (kept as long as
the job or its history). dedupe_key: an active job of the queue with this key is returned instead.
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
    i integer;
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
            INSERT INTO pgrelay._jobs (id, queue_id, queue, task, payload, run_at, priority, options)
            SELECT nextval('pgrelay._job_id_seq'), v_queue_id, v_queue, enqueue_many.task, coalesce(u.payload, '{}'), v_run_at,
                   v_priority, v_options
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
    -- general path below, a cycle of claiming 100 jobs and acking them took 9% more instructions
    -- (make bench-instructions: 13.11 M instead of 12.06 M) and an estimated 7% more CPU cycles.
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
    IF nack.retry_after_seconds IS NOT NULL
       AND (nack.retry_after_seconds = 'NaN' OR nack.retry_after_seconds NOT BETWEEN 0 AND 31536000) THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('retry_after_seconds must be between 0 and 31536000 (a year), not %s', nack.retry_after_seconds);
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
        ARRAY[coalesce(nack.retry_after_seconds,
                       pgrelay._backoff(v_job.attempt, v_job.backoff_base, v_job.backoff_max))],
        ARRAY[nack.details]) r;
    RETURN 'pending';
END
$$;
COMMENT ON FUNCTION pgrelay.nack(bigint, integer, text, double precision, boolean, text, jsonb) IS
'Report a failed attempt; returns the job''s new status: pending, dead_letter, cancelled, or stale.

pending: retried after exponential backoff with jitter (queue settings; default 1 s doubling up to 1 h), or
after retry_after_seconds when given. dead_letter: permanent => true, or no attempts left. cancelled: an
operator asked to cancel the job (cancel()) while it ran, so it is not retried. stale: this attempt
no longer holds the lease; nothing changed. outcome (failed, timeout, cancelled) and details (JSON, e.g. an
HTTP status) are recorded in the attempt history.

Example: SELECT pgrelay.nack(id => 101, attempt => 1, error => ''SMTP 451'', retry_after_seconds => 30);';

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
        RETURN '{}';
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

CREATE FUNCTION pgrelay.recover()
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_total integer := 0;
    v_batch record;
BEGIN
    LOOP
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
                  LIMIT 1000
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
COMMENT ON FUNCTION pgrelay.recover() IS
'Return jobs whose lease expired to pending (after backoff), or to dead_letter when no attempts are left
(to cancelled when cancel() was asked for); returns how many were recovered. Each is recorded as an attempt with outcome lease_expired.

Safe to run from many workers at once and from pg_cron (jobs being completed are skipped, never waited for).

Example: SELECT pgrelay.recover();';

-- ---------------------------------------------------------------------------------------------
-- Inspection
-- ---------------------------------------------------------------------------------------------

CREATE VIEW pgrelay.jobs AS
    SELECT j.id, j.queue, j.task, pgrelay._kind_name(j.kind) AS kind,
           CASE WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END AS status,
           j.priority, j.run_at, j.attempt,
           (j.options).max_attempts, (j.options).timeout_seconds,
           pgrelay._redact_http_payload(j.kind, j.payload) AS payload,
           (j.options).idempotency_key, (j.options).dedupe_key, (j.options).trace_id,
           (j.options).replayed_from, j.last_error, NULL::jsonb AS result, j.leased_by, j.lease_expires_at,
           j.created_at, NULL::timestamptz AS finished_at
    FROM pgrelay._jobs j
    UNION ALL
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind), pgrelay._status_name(f.status), f.priority, f.run_at, f.attempt,
           (f.options).max_attempts, (f.options).timeout_seconds, pgrelay._redact_http_payload(f.kind, f.payload),
           (f.options).idempotency_key, (f.options).dedupe_key, (f.options).trace_id,
           (f.options).replayed_from, f.last_error, f.result, NULL::text, NULL::timestamptz,
           f.created_at, f.finished_at
    FROM pgrelay._finished f;
COMMENT ON VIEW pgrelay.jobs IS
'Every job, active or finished, with its status: pending, leased, succeeded, dead_letter or cancelled.

Filter by id or queue; both tables are indexed by id. max_attempts NULL means the queue''s setting.';

CREATE FUNCTION pgrelay.get_job(id bigint)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_jsonb(j) - 'max_attempts'
           || jsonb_build_object('max_attempts',
                  coalesce(j.max_attempts, (SELECT q.max_attempts FROM pgrelay._queues q WHERE q.queue = j.queue),
                           pgrelay._default_max_attempts()))
    FROM pgrelay.jobs j WHERE j.id = get_job.id
$$;
COMMENT ON FUNCTION pgrelay.get_job(bigint) IS
'The job with this id as JSON, wherever it is (active or finished); NULL for an unknown id.

Keys: id, queue, task, kind, status, priority, run_at, attempt, max_attempts, timeout_seconds, payload,
idempotency_key, dedupe_key, trace_id, replayed_from, last_error, result, leased_by, lease_expires_at,
created_at, finished_at.

Example: SELECT pgrelay.get_job(101);';

CREATE FUNCTION pgrelay.get_attempts(id bigint)
RETURNS SETOF pgrelay.attempt
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM (
        SELECT a.job_id, a.attempt, a.worker, a.started_at, a.finished_at, a.outcome, a.error, a.details
        FROM pgrelay._attempts a WHERE a.job_id = get_attempts.id
        UNION ALL
        SELECT f.id, f.attempt, f.leased_by, f.leased_at, f.finished_at, 'succeeded', NULL, NULL
        FROM pgrelay._finished f WHERE f.id = get_attempts.id AND f.status = 's' AND f.attempt > 0
        UNION ALL
        SELECT j.id, j.attempt, j.leased_by, j.leased_at, NULL, 'running', NULL, NULL
        FROM pgrelay._jobs j WHERE j.id = get_attempts.id AND j.leased_by IS NOT NULL
    ) a
    ORDER BY a.attempt
$$;
COMMENT ON FUNCTION pgrelay.get_attempts(bigint) IS
'The attempt history of a job, oldest first: who ran it, when, how it ended (succeeded, failed, timeout,
lease_expired, cancelled, or running for the current lease) and the error.

Example: SELECT * FROM pgrelay.get_attempts(101);';

-- Cheap however long the history: finished jobs come from the _counts counters (a few rows per queue
-- and minute), never from _finished; active jobs from the hot table.
CREATE VIEW pgrelay.queue_stats AS
    WITH active AS (
        SELECT j.queue,
               count(*) FILTER (WHERE j.leased_by IS NULL AND j.run_at <= now()) AS pending,
               count(*) FILTER (WHERE j.leased_by IS NULL AND j.run_at > now()) AS scheduled,
               count(*) FILTER (WHERE j.leased_by IS NOT NULL) AS leased,
               min(j.run_at) FILTER (WHERE j.leased_by IS NULL AND j.run_at <= now()) AS oldest_due
        FROM pgrelay._jobs j GROUP BY j.queue
    ), counted AS (
        SELECT c.queue,
               sum(c.succeeded) AS succeeded,
               sum(c.dead_letter) AS dead_letter,
               sum(c.cancelled) AS cancelled,
               sum(c.succeeded) FILTER (WHERE c.minute = date_trunc('minute', now()) - interval '1 minute') AS succeeded_last_minute,
               sum(c.succeeded) FILTER (WHERE c.minute >= date_trunc('minute', now()) - interval '1 hour'
                                          AND c.minute < date_trunc('minute', now())) AS succeeded_last_hour,
               sum(c.dead_letter) FILTER (WHERE c.minute >= date_trunc('minute', now()) - interval '1 hour'
                                            AND c.minute < date_trunc('minute', now())) AS dead_letter_last_hour
        FROM pgrelay._counts c GROUP BY c.queue
    ), names AS (
        -- (every queue a job has named has a _queues row; it also has active jobs or counters)
        SELECT queue FROM active UNION SELECT queue FROM counted UNION SELECT queue FROM pgrelay._queues
    )
    SELECT n.queue,
           coalesce(a.pending, 0) AS pending,
           coalesce(a.scheduled, 0) AS scheduled,
           coalesce(a.leased, 0) AS leased,
           coalesce(c.succeeded, 0)::bigint AS succeeded,
           coalesce(c.dead_letter, 0)::bigint AS dead_letter,
           coalesce(c.cancelled, 0)::bigint AS cancelled,
           now() - a.oldest_due AS oldest_pending_age,
           coalesce(q.paused, false) AS paused,
           q.concurrency,
           coalesce(c.succeeded_last_minute, 0)::bigint AS succeeded_last_minute,
           coalesce(c.succeeded_last_hour, 0)::bigint AS succeeded_last_hour,
           coalesce(c.dead_letter_last_hour, 0)::bigint AS dead_letter_last_hour,
           coalesce(q.max_attempts, pgrelay._default_max_attempts()) AS max_attempts,
           coalesce(q.lease_seconds, pgrelay._default_lease_seconds()) AS lease_seconds,
           coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()) AS retention_succeeded_days,
           coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) AS retention_dead_letter_days
    FROM names n
    LEFT JOIN active a ON a.queue = n.queue
    LEFT JOIN counted c ON c.queue = n.queue
    LEFT JOIN pgrelay._queues q ON q.queue = n.queue;
COMMENT ON VIEW pgrelay.queue_stats IS
'Per queue: jobs due (pending), scheduled for later, leased; finished jobs held in the history (succeeded,
dead_letter, cancelled: until purge() removes them); the age of the oldest due job; paused and the limits.

succeeded_last_minute: jobs that succeeded in the last whole minute; succeeded_last_hour and
dead_letter_last_hour: in the 60 whole minutes before this one. max_attempts, lease_seconds and the
retention days are the queue''s effective settings; concurrency NULL means unlimited.';

CREATE VIEW pgrelay.expired_leases AS
    SELECT j.id, j.queue, j.task, j.attempt, j.leased_by, j.leased_at, j.lease_expires_at,
           now() - j.lease_expires_at AS expired_for
    FROM pgrelay._jobs j
    WHERE j.leased_by IS NOT NULL AND j.lease_expires_at < now();
COMMENT ON VIEW pgrelay.expired_leases IS
'Leased jobs whose lease has expired and that recover() has not yet returned to pending.';

CREATE VIEW pgrelay.dead_letters AS
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind) AS kind, f.attempt, f.last_error,
           pgrelay._redact_http_payload(f.kind, f.payload) AS payload, (f.options).trace_id, f.created_at, f.finished_at
    FROM pgrelay._finished f
    WHERE f.status = 'd' AND f.replayed_as IS NULL;
COMMENT ON VIEW pgrelay.dead_letters IS
'Jobs that failed permanently or ran out of attempts and have not been replayed, with their last error.

replay(id) or replay_dead_letters(queue) runs them again; purge() removes them after the queue''s retention.';

-- Bounded: the last hour of _attempts through its BRIN index, each attempt''s job by primary key.
CREATE VIEW pgrelay.recent_failures AS
    SELECT coalesce(j.queue, f.queue) AS queue, coalesce(j.task, f.task) AS task,
           count(*) AS failures,
           (array_agg(a.error ORDER BY a.finished_at DESC))[1] AS last_error,
           max(a.finished_at) AS last_failed_at
    FROM pgrelay._attempts a
    LEFT JOIN pgrelay._jobs j ON j.id = a.job_id
    LEFT JOIN pgrelay._finished f ON f.id = a.job_id
    WHERE a.finished_at > now() - interval '1 hour' AND a.outcome <> 'succeeded'
    GROUP BY 1, 2;
COMMENT ON VIEW pgrelay.recent_failures IS
'Failed attempts of the last hour per queue and task (failed, timed out, lease expired, cancelled), with
the latest error.';

-- Leases are counted through the lease index (only leased rows), once for all workers.
CREATE VIEW pgrelay.workers AS
    SELECT w.worker, w.host, w.pid, w.queues, w.started_at, w.last_seen,
           coalesce(l.leased, 0) AS leased,
           CASE WHEN w.last_seen >= now() - make_interval(secs => coalesce(w.lease_seconds, pgrelay._default_lease_seconds()))
                THEN 'alive' ELSE 'stale' END AS status,
           w.lease_seconds
    FROM pgrelay._workers w
    LEFT JOIN (SELECT j.leased_by, count(*) AS leased FROM pgrelay._jobs j
               WHERE j.lease_expires_at IS NOT NULL GROUP BY j.leased_by) l ON l.leased_by = w.worker;
COMMENT ON VIEW pgrelay.workers IS
'Workers by their last heartbeat, with the number of leases each holds now.

status: alive, or stale when not heard from for a whole lease period (lease_seconds, default 30; a worker
heartbeats three times per lease); purge() forgets workers gone for a week.';

-- ---------------------------------------------------------------------------------------------
-- Queue settings
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay._queue_settings(p_queue text)
RETURNS pgrelay.queue_settings
LANGUAGE sql STABLE AS $$
    SELECT n.queue, coalesce(q.paused, false), q.concurrency,
           coalesce(q.max_attempts, pgrelay._default_max_attempts()),
           coalesce(q.lease_seconds, pgrelay._default_lease_seconds()),
           coalesce(q.backoff_base_seconds, pgrelay._default_backoff_base_seconds()),
           coalesce(q.backoff_max_seconds, pgrelay._default_backoff_max_seconds()),
           coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()),
           coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days())
    FROM (SELECT p_queue AS queue) n LEFT JOIN pgrelay._queues q ON q.queue = n.queue
$$;

CREATE FUNCTION pgrelay.configure_queue(
    queue text,
    concurrency integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    lease_seconds integer DEFAULT NULL,
    backoff_base_seconds double precision DEFAULT NULL,
    backoff_max_seconds double precision DEFAULT NULL,
    reset text[] DEFAULT NULL,
    retention_succeeded_days integer DEFAULT NULL,
    retention_dead_letter_days integer DEFAULT NULL)
RETURNS pgrelay.queue_settings
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
    RETURN v_settings;
END
$$;
COMMENT ON FUNCTION pgrelay.configure_queue(text, integer, integer, integer, double precision, double precision, text[], integer, integer) IS
'Change a queue''s settings; returns its effective settings. NULL leaves a setting as it is.

concurrency: most jobs leased at once across all workers. max_attempts (default 10), lease_seconds (30),
backoff_base_seconds (1) and backoff_max_seconds (3600) apply to jobs that do not set their own.
retention_succeeded_days (7) and retention_dead_letter_days (30, also for cancelled jobs): how long purge()
keeps finished jobs and their attempts. reset: names of settings to return to their defaults, e.g.
reset => ''{concurrency}''.

Example: SELECT * FROM pgrelay.configure_queue(''mail'', concurrency => 3, max_attempts => 5);';

CREATE FUNCTION pgrelay.pause(queue text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', pause.queue, 128));
    SELECT q.paused INTO v_was FROM pgrelay._queues q WHERE q.queue = pause.queue FOR UPDATE;
    INSERT INTO pgrelay._queues AS q (queue, paused) VALUES (pause.queue, true)
    ON CONFLICT ON CONSTRAINT _queues_pkey DO UPDATE SET paused = true, updated_at = now();
    RETURN NOT coalesce(v_was, false);
END
$$;
COMMENT ON FUNCTION pgrelay.pause(text) IS
'Stop consume() from leasing jobs of this queue (enqueue still works; leased jobs finish); true if it was running.

Example: SELECT pgrelay.pause(''mail'');';

CREATE FUNCTION pgrelay.resume(queue text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', resume.queue, 128));
    UPDATE pgrelay._queues q SET paused = false, updated_at = now()
    FROM (SELECT o.queue, o.paused FROM pgrelay._queues o WHERE o.queue = resume.queue FOR UPDATE) old
    WHERE q.queue = old.queue
    RETURNING old.paused INTO v_was;
    IF coalesce(v_was, false) THEN
        PERFORM pgrelay._notify(resume.queue, now());
    END IF;
    RETURN coalesce(v_was, false);
END
$$;
COMMENT ON FUNCTION pgrelay.resume(text) IS
'Let consume() lease jobs of a paused queue again and wake the workers; true if it was paused.

Example: SELECT pgrelay.resume(''mail'');';

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
           (f.options).timeout_seconds, (f.options).trace_id, f.replayed_as
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
    -- a new job: its own id, attempts and keys (the original's keys stay with the original)
    v_new := pgrelay._enqueue(v_job.queue, v_job.task, v_job.kind, v_job.payload, now(), v_job.priority,
                              v_job.max_attempts, v_job.timeout_seconds, NULL, NULL, v_job.trace_id, replay.id);
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

CREATE FUNCTION pgrelay.replay_dead_letters(queue text, task text DEFAULT NULL, since timestamptz DEFAULT NULL)
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
    -- (a queue without a row has never had a job, so it has no dead letters)
    SELECT q.id INTO v_queue_id FROM pgrelay._queues q WHERE q.queue = replay_dead_letters.queue;
    IF v_queue_id IS NULL THEN
        RETURN 0;
    END IF;
    -- SKIP LOCKED: a dead letter being replayed or purged right now is left to that caller
    WITH picked AS (
        SELECT f.id, f.queue, f.task, f.kind, f.payload, f.priority, f.options, f.finished_at
        FROM pgrelay._finished f
        WHERE f.status = 'd' AND f.queue = replay_dead_letters.queue AND f.replayed_as IS NULL
          AND (replay_dead_letters.task IS NULL OR f.task LIKE replay_dead_letters.task)
          AND (replay_dead_letters.since IS NULL OR f.finished_at >= replay_dead_letters.since)
        FOR UPDATE OF f SKIP LOCKED
    ), created AS (
        INSERT INTO pgrelay._jobs (id, queue_id, queue, task, kind, payload, run_at, priority, options)
        SELECT pg_catalog.nextval('pgrelay._job_id_seq'), v_queue_id, p.queue, p.task, p.kind, p.payload, now(), p.priority,
               pgrelay._job_options((p.options).max_attempts, (p.options).timeout_seconds, NULL, NULL,
                                    (p.options).trace_id, p.id)
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
COMMENT ON FUNCTION pgrelay.replay_dead_letters(text, text, timestamptz) IS
'Replay every dead letter of a queue that has not been replayed yet; returns how many new jobs it created.

task: a LIKE pattern (''orders.%''; NULL: all tasks). since: only jobs dead-lettered at or after this time.
Each new job is what replay() would create; running it twice replays nothing twice.

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

CREATE FUNCTION pgrelay.purge(older_than_days integer DEFAULT NULL, max_jobs integer DEFAULT 10000)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off SET enable_seqscan = off AS $$
DECLARE
    v_total integer := 0;
    v_removed integer;
    v_cutoff timestamptz;
    v_due bigint[];
    v_after bigint := 0;   -- the walk's place: the last id it read
    v_past boolean;
    v_max integer := coalesce(purge.max_jobs, 10000);
BEGIN
    PERFORM pgrelay._check(coalesce(
        pgrelay._range_error('older_than_days', purge.older_than_days, 0, 36500, ' (or NULL for each queue''s retention)'),
        pgrelay._range_error('max_jobs', v_max, 1, 10000000, ' (or NULL for 10000)')));
    -- one purge at a time (a second caller returns 0 at once): the counters it folds stay exact
    IF NOT pg_try_advisory_xact_lock(123589603914343) THEN
        RETURN 0;
    END IF;
    -- The history is walked in id order, by its primary key, a thousand rows at a time, from the
    -- oldest job; the due ones among them are removed. Ids are handed out as jobs are created, and a
    -- job finishes after it is created, so the walk ends at the first thousand that holds a job
    -- created after the shortest retention of any queue: past it, nothing is due yet. (What a long
    -- transaction created out of id order is reached by a later purge, whose bound is later.) A job
    -- kept longer than the rows around it (a dead letter, a queue of longer retention) is read again
    -- by each purge until its day comes, as any index on finished_at would read it.
    v_cutoff := now() - make_interval(days => coalesce(purge.older_than_days, least(
        (SELECT min(least(coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()),
                          coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days())))
         FROM pgrelay._queues q),
        pgrelay._default_retention_succeeded_days(), pgrelay._default_retention_dead_letter_days())));
    LOOP
        SELECT array_agg(c.id) FILTER (WHERE c.due), max(c.id), bool_or(c.created_at >= v_cutoff)
            INTO v_due, v_after, v_past
        FROM (SELECT f.id, f.created_at,
                     f.finished_at < now() - make_interval(days => coalesce(purge.older_than_days,
                         CASE WHEN f.status = 's'
                              THEN coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days())
                              ELSE coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) END))
                     AS due
              FROM pgrelay._finished f LEFT JOIN pgrelay._queues q ON q.queue = f.queue
              WHERE f.id > v_after
              ORDER BY f.id
              LIMIT 1000) c;
        EXIT WHEN v_after IS NULL;
        IF v_due IS NOT NULL THEN
            WITH doomed AS (
                SELECT f.id FROM pgrelay._finished f
                WHERE f.id = ANY (v_due[1:v_max - v_total])
                FOR UPDATE SKIP LOCKED
            ), gone AS (
                DELETE FROM pgrelay._finished f USING doomed d WHERE f.id = d.id
                RETURNING f.id, (f.options).idempotency_key
            ), attempts AS (
                DELETE FROM pgrelay._attempts a USING gone g WHERE a.job_id = g.id
            ), keys AS (
                DELETE FROM pgrelay._idempotency_keys k USING gone g WHERE k.key = g.idempotency_key AND k.job_id = g.id
            )
            SELECT count(*) INTO v_removed FROM gone;
            v_total := v_total + v_removed;
        END IF;
        EXIT WHEN v_past OR v_total >= v_max;
    END LOOP;

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
$$;
COMMENT ON FUNCTION pgrelay.purge(integer, integer) IS
'Remove finished jobs older than their retention, with their attempts and idempotency keys; returns how many.

older_than_days: NULL for each queue''s retention (configure_queue: retention_succeeded_days, default 7;
retention_dead_letter_days, default 30, also for cancelled jobs); 0 removes every finished job. Works in
batches of 1,000 and stops after max_jobs, so it never holds many locks for long: call it again while it
returns max_jobs. Active jobs are never touched. One purge runs at a time; a concurrent call returns 0.

Example: SELECT pgrelay.purge(older_than_days => 30);';

CREATE FUNCTION pgrelay.maintain(max_jobs integer DEFAULT 10000)
RETURNS pgrelay.maintenance
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_done pgrelay.maintenance;
BEGIN
    v_done.recovered := pgrelay.recover();
    v_done.purged := pgrelay.purge(NULL, maintain.max_jobs);
    RETURN v_done;
END
$$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS
'Routine maintenance: recover() expired leases, then purge() finished jobs by each queue''s retention (at
most max_jobs); returns what it did. Run it from pg_cron every minute, or let the workers run it.

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
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job j WHERE j.active AND j.command ~ ''pgrelay\.(maintain|purge)\M'')'
        INTO v_found;
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

-- ---------------------------------------------------------------------------------------------
-- Privileges: nothing for PUBLIC; group roles get EXECUTE on their functions and SELECT on views,
-- never a table. The roles are created when the installing user may create roles.
-- ---------------------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA pgrelay FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgrelay FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrelay FROM PUBLIC;

DO $roles$
DECLARE
    v_role text;
    v_can_create boolean;
BEGIN
    SELECT r.rolsuper OR r.rolcreaterole INTO v_can_create FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    FOREACH v_role IN ARRAY ARRAY['pgrelay_producer', 'pgrelay_worker', 'pgrelay_admin', 'pgrelay_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
            IF NOT v_can_create THEN
                RAISE NOTICE 'pgrelay: role % not created (the installing user lacks CREATEROLE); grant EXECUTE by hand', v_role;
                CONTINUE;
            END IF;
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA pgrelay TO %I', v_role);
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'pgrelay_producer') THEN
        GRANT EXECUTE ON FUNCTION
            pgrelay.version(),
            pgrelay.enqueue(text, jsonb, text, timestamptz, integer, integer, integer, text, text, text),
            pgrelay.enqueue_http(text, jsonb, text, jsonb, text, text, timestamptz, integer, integer, integer, text, text, text),
            pgrelay.enqueue_bulk(jsonb),
            pgrelay.enqueue_many(text, jsonb[], text, timestamptz, integer, integer, integer, text),
            pgrelay.enqueue_trigger(),
            pgrelay.get_job(bigint)
        TO pgrelay_producer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'pgrelay_worker') THEN
        GRANT EXECUTE ON FUNCTION
            pgrelay.version(),
            pgrelay.consume(text, text[], integer, integer, text[], text[], text[]),
            pgrelay.ack(bigint, integer, jsonb),
            pgrelay.ack_many(bigint[], integer[], jsonb[]),
            pgrelay.ack_each(bigint[], integer[], jsonb[]),
            pgrelay.release(bigint, integer, text),
            pgrelay.nack(bigint, integer, text, double precision, boolean, text, jsonb),
            pgrelay.heartbeat(text, bigint[], integer, text, integer, text[]),
            pgrelay.recover(),
            pgrelay.maintain(integer),
            pgrelay.maintenance_scheduled(),
            pgrelay.enqueue(text, jsonb, text, timestamptz, integer, integer, integer, text, text, text),
            pgrelay.enqueue_http(text, jsonb, text, jsonb, text, text, timestamptz, integer, integer, integer, text, text, text),
            pgrelay.enqueue_bulk(jsonb),
            pgrelay.enqueue_many(text, jsonb[], text, timestamptz, integer, integer, integer, text),
            pgrelay.get_job(bigint),
            pgrelay.get_attempts(bigint)
        TO pgrelay_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'pgrelay_reader') THEN
        GRANT EXECUTE ON FUNCTION pgrelay.version(), pgrelay.get_job(bigint), pgrelay.get_attempts(bigint) TO pgrelay_reader;
        -- a function called by a view runs with the privileges of whoever queries the view
        GRANT EXECUTE ON FUNCTION pgrelay._redact_http_payload("char", jsonb), pgrelay._kind_name("char"),
            pgrelay._status_name("char"), pgrelay._default_max_attempts(),
            pgrelay._default_lease_seconds(), pgrelay._default_retention_succeeded_days(),
            pgrelay._default_retention_dead_letter_days()
        TO pgrelay_reader;
        GRANT SELECT ON pgrelay.jobs, pgrelay.queue_stats, pgrelay.expired_leases, pgrelay.dead_letters, pgrelay.workers,
                        pgrelay.recent_failures
        TO pgrelay_reader;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = 'pgrelay_admin') THEN
        GRANT EXECUTE ON FUNCTION
            pgrelay.version(),
            pgrelay.get_job(bigint),
            pgrelay.get_attempts(bigint),
            pgrelay.recover(),
            pgrelay.configure_queue(text, integer, integer, integer, double precision, double precision, text[], integer, integer),
            pgrelay.pause(text),
            pgrelay.resume(text),
            pgrelay.replay(bigint, boolean),
            pgrelay.replay_dead_letters(text, text, timestamptz),
            pgrelay.cancel(bigint),
            pgrelay.purge(integer, integer),
            pgrelay.maintain(integer),
            pgrelay.maintenance_scheduled()
        TO pgrelay_admin;
        GRANT SELECT ON pgrelay.jobs, pgrelay.queue_stats, pgrelay.expired_leases, pgrelay.dead_letters, pgrelay.workers,
                        pgrelay.recent_failures
        TO pgrelay_admin;
        GRANT EXECUTE ON FUNCTION pgrelay._redact_http_payload("char", jsonb), pgrelay._kind_name("char"),
            pgrelay._status_name("char"), pgrelay._default_max_attempts(),
            pgrelay._default_lease_seconds(), pgrelay._default_retention_succeeded_days(),
            pgrelay._default_retention_dead_letter_days()
        TO pgrelay_admin;
    END IF;
END
$roles$;

-- Under CREATE EXTENSION, have pg_dump keep the data of every table; record how this version arrived.
DO $dump$
DECLARE
    v_table regclass;
BEGIN
    IF coalesce(pg_catalog.current_setting('pgrelay.installer', true), '') = '' THEN
        FOREACH v_table IN ARRAY ARRAY['pgrelay._jobs', 'pgrelay._finished', 'pgrelay._attempts',
                                       'pgrelay._idempotency_keys', 'pgrelay._queues', 'pgrelay._workers',
                                       'pgrelay._counts', 'pgrelay._job_id_seq']::regclass[] LOOP
            PERFORM pg_catalog.pg_extension_config_dump(v_table, '');
        END LOOP;
    END IF;
END
$dump$;

INSERT INTO pgrelay._migrations (version, method)
VALUES ('0.1.0', coalesce(nullif(pg_catalog.current_setting('pgrelay.installer', true), ''), 'create extension'));

