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
    idempotency_key  text,
    delivery_id      text
);
COMMENT ON TYPE pgrelay.claimed_job IS
'A job leased by consume(): what a worker needs to run it and to ack/nack it (id + attempt).

delivery_id: set on a replay, the id its deliveries carry: that of the first job of the replay chain (its
idempotency key, else its id), so a receiver can tell a resent delivery from new work.';

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

CREATE TYPE pgrelay.maintenance AS (recovered integer, purged integer, ticked integer);
COMMENT ON TYPE pgrelay.maintenance IS
'What maintain() did: expired leases recovered, finished jobs purged by the queues'' retention, jobs
enqueued by the schedules'' ticks.';

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
