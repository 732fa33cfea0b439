-- ---------------------------------------------------------------------------------------------
-- Tables (private: reached only through the functions and views) and their indexes
-- ---------------------------------------------------------------------------------------------

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
-- each time, set or NULL: as six columns of each table they made every claim and ack dearer. The
-- price is paid by jobs that set one: the value carries a row header of its own, about 30 bytes.
CREATE TYPE pgrelay._job_options AS (
    max_attempts    integer,   -- NULL: the queue's setting
    timeout_seconds integer,
    idempotency_key text,      -- also in _idempotency_keys (per queue), as long as the job or its history is kept
    dedupe_key      text,      -- unique among the active jobs of a queue (_jobs_dedupe_key_idx)
    trace_id        text,
    replayed_from   bigint,    -- the finished job replay() made this one from
    delivery_id     text       -- a replay's: the first job's of its replay chain (its idempotency key, else its id)
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
    -- it was added to the lease index. Written once, with the name, by every insert; no foreign key,
    -- which would look _queues up again for each row.
    queue_id         integer NOT NULL,
    -- The lease's times (see below) before the first variable-length column. A lease is an update:
    -- PostgreSQL compares every indexed column of the old and the new row, and adds
    -- lease_expires_at to the lease index; placed here, a leased row has it at a fixed offset.
    leased_at        timestamptz,
    lease_expires_at timestamptz,
    queue            text COLLATE "C" NOT NULL,
    task             text COLLATE "C" NOT NULL,
    -- Kinds and statuses are one-byte codes, as in pg_catalog (relkind): every job row is written
    -- three times (enqueue, lease, history), and their names as text made each of those writes, and
    -- its WAL, longer. _kind_name and _status_name give the names the views and functions show.
    kind             "char" NOT NULL DEFAULT 'h',   -- h: handler, u: http (a URL)
    -- the lease: leased_by, leased_at and lease_expires_at all set (leased) or none (pending);
    -- attempt is the lease's fencing token
    leased_by        text,
    payload          jsonb NOT NULL,
    options          pgrelay._job_options,   -- NULL: none set (never a row of NULLs: _job_options)
    last_error       text,
    cancel_requested_at timestamptz,   -- cancel() of a leased job: it ends cancelled at the next heartbeat
    enqueued_by      oid,   -- the role that enqueued it (_caller); get_job shows a producer only its own
    -- The one check on the hot table, and it tests only NULLs: PostgreSQL reads and prepares every
    -- CHECK of a table again for each statement that writes it and evaluates it for every row, on
    -- every claim and ack. The values themselves (kind, attempts, timeouts) are checked by the
    -- functions that write them, the only writers.
    CONSTRAINT _jobs_lease_complete CHECK (
        (leased_at IS NULL) = (leased_by IS NULL) AND (lease_expires_at IS NULL) = (leased_by IS NULL)
        AND (leased_by IS NULL OR attempt >= 1))
);
COMMENT ON TABLE pgrelay._jobs IS 'Private: pending and leased jobs. Use the functions and views, never this table.';

-- Exactly the claim order of consume() within a queue: due pending jobs, higher priority first, then
-- run_at, then id. The only claim index: each index makes every enqueue's insert markedly slower,
-- so consume() merges several queues from this one (see _pick) rather than keeping a second,
-- queue-less index. A backlog in one queue is never scanned by a worker of another. Its keys end in
-- the id, so they never repeat: deduplication would only cost each page split a wasted pass.
CREATE INDEX _jobs_queue_claim_idx ON pgrelay._jobs (queue_id, priority DESC, run_at, id) WITH (deduplicate_items = off)
    WHERE leased_by IS NULL;
-- Leases: counted per queue for concurrency limits, scanned by expiry in recover(). The predicate is
-- the lease expiry, not leased_by (the two agree: _jobs_lease_complete), so that lookups of a leased
-- job by id, which test leased_by IS NOT NULL, cannot be planned over it: with statistics taken while few
-- jobs were leased, the planner would otherwise read every lease instead of probing the primary key.
CREATE INDEX _jobs_lease_expiry_idx ON pgrelay._jobs (queue_id, lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- Every job row is updated once and deleted once, so the hot table churns completely: vacuum it after
-- every 1,000 dead rows, however many live ones a backlog holds, and at full speed. Under a backlog
-- that vacuums far more often than the defaults, with fewer dead rows and a smaller peak; it is
-- unthrottled (no cost delay) so that it keeps up at the rates tuned workers reach.
-- Fillfactor 70: no job update can be HOT (lease_expires_at is indexed and leased_by is in the claim
-- index's predicate), but with free space on its page a lease writes its new row there: that logs
-- only the part of the row from the first to the last changed byte, and not the extra lock record a
-- move to another page takes. So claims and acks write less WAL, in the same CPU time. It costs
-- space: a backlog takes more heap pages. A table that must hold a large backlog can be set back
-- with ALTER TABLE pgrelay._jobs SET (fillfactor = 100).
ALTER TABLE pgrelay._jobs SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                               autovacuum_vacuum_cost_delay = 0, fillfactor = 70);
-- A dedupe key is unique among the active jobs of a queue. (By the queue's id, not its name: every
-- lease compares the indexed columns of the old and the new row, and the name was one more text.)
CREATE UNIQUE INDEX _jobs_dedupe_key_idx ON pgrelay._jobs (queue_id, ((options).dedupe_key))
    WHERE (options).dedupe_key IS NOT NULL;

-- Finished jobs. Rows arrive here in one statement with the delete from _jobs, copies of its rows
-- made by _finish, the only writer (and so with the values _jobs holds NOT NULL). Like the hot
-- table's, its constraints are in the functions that write it: NOT NULL columns and a CHECK here
-- would cost every ack, each statement re-reading the CHECK's expression and taking every checked
-- row apart column by column.
-- Partitioned by the day a job finished (UTC), then by status: succeeded (s) and the rest (x: dead
-- letters and cancelled jobs, which share a retention), so that retention drops whole tables
-- (_drop_partitions) instead of deleting rows: no dead tuples, no vacuum, however long the history.
-- pgrelay makes the partitions itself (_make_partitions, from purge() and so from maintain(), a few
-- days ahead): _finished_YYYYMMDD, with _finished_YYYYMMDD_s and _finished_YYYYMMDD_x. A row no day
-- covers (maintain() not run for days) goes to _finished_default, which purge() handles row by row;
-- so does _finished_before_YYYYMMDD, the history of a database upgraded from 0.4 (everything that
-- finished before that day), until it is empty (_legacy_history).
-- Indexes are made per partition (no index of the partitioned table): the legacy table keeps its own.
CREATE TABLE pgrelay._finished (
    id               bigint,
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
    replayed_as      bigint,        -- the job replay() created from this one (the latest, when forced again)
    enqueued_by      oid            -- as in _jobs
) PARTITION BY RANGE (finished_at);
COMMENT ON TABLE pgrelay._finished IS 'Private: succeeded, dead-lettered and cancelled jobs, kept until purged; partitioned by day.';
CREATE TABLE pgrelay._finished_default PARTITION OF pgrelay._finished DEFAULT;
CREATE INDEX _finished_default_id_idx ON pgrelay._finished_default (id);
CREATE INDEX _finished_default_dead_letter_idx ON pgrelay._finished_default (queue, finished_at) WHERE status = 'd';

-- One row per ended attempt, except a successful last attempt, which _finished records (leased_by,
-- leased_at, finished_at): one row fewer written per job on the hot path. get_attempts joins the
-- three places; the running attempt is read from _jobs.
-- Partitioned like _finished, so that a job's attempts go with it: by the day its job finished
-- (job_finished_at), then by its job's status class (job_class: s or x). The attempts of a job
-- still active are in _attempts_active (job_finished_at infinity), and move to their day when the
-- job finishes (_finish).
CREATE TABLE pgrelay._attempts (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL CONSTRAINT _attempts_attempt_check CHECK (attempt >= 1),
    worker      text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    outcome     text NOT NULL CONSTRAINT _attempts_outcome_check
                CHECK (outcome IN ('succeeded', 'failed', 'timeout', 'lease_expired', 'cancelled')),
    error       text,
    details     jsonb,
    -- (last: added by 0.5.0)
    job_finished_at timestamptz NOT NULL,   -- infinity while the job is active
    job_class   "char"                      -- its job's status class, s or x, once it finished
) PARTITION BY RANGE (job_finished_at);
COMMENT ON TABLE pgrelay._attempts IS 'Private: the audit trail, one row per ended attempt; partitioned like _finished.';
CREATE TABLE pgrelay._attempts_active PARTITION OF pgrelay._attempts FOR VALUES FROM ('infinity') TO (MAXVALUE);
CREATE TABLE pgrelay._attempts_default PARTITION OF pgrelay._attempts DEFAULT;
-- Attempts arrive in finished_at order: the recent_failures view reads the last hour through BRIN
-- indexes, and purge() and get_attempts find a job's attempts by (job_id, attempt).
CREATE UNIQUE INDEX _attempts_active_pkey ON pgrelay._attempts_active (job_id, attempt);
CREATE INDEX _attempts_active_finished_at_idx ON pgrelay._attempts_active USING brin (finished_at);
CREATE INDEX _attempts_default_job_idx ON pgrelay._attempts_default (job_id, attempt);
CREATE INDEX _attempts_default_finished_at_idx ON pgrelay._attempts_default USING brin (finished_at);

-- Idempotency keys outlive the active job: they are kept as long as the job or its history is. A key
-- belongs to its queue: the same key in another queue is another job, and no caller learns anything
-- of another queue's keys.
CREATE TABLE pgrelay._idempotency_keys (
    key        text NOT NULL,
    job_id     bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    queue_id   integer NOT NULL,   -- (last: added by 0.3.0, when keys became the queue's)
    CONSTRAINT _idempotency_keys_pkey PRIMARY KEY (queue_id, key)
);
COMMENT ON TABLE pgrelay._idempotency_keys IS 'Private: (queue, idempotency key) -> the job it created.';

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

-- Workers waiting for jobs (see idle()): a producer sends NOTIFY only for a queue some worker waits
-- on, so busy workers cost producers nothing (NOTIFY serialises the commits of the transactions that
-- send it). One row per waiting worker, until it is awake again or its registration lapses.
CREATE TABLE pgrelay._waiting (
    worker text PRIMARY KEY,
    queues text[],               -- NULL: every queue
    until  timestamptz NOT NULL  -- a worker that died waiting stops counting then
);
COMMENT ON TABLE pgrelay._waiting IS 'Private: workers waiting for a NOTIFY, and for which queues (see pgrelay.idle).';

-- What producers read of _waiting, kept by idle(), awake() and maintain(): bit n is set when a
-- worker waits on a queue whose name hashes to n (_wakeup_bit), every bit for a worker of all queues.
-- A sequence, because its value is read as it is now, not as the reader's snapshot saw it: a producer
-- reads it after its insert, so either it sees a worker's bit or the worker's idle() sees the
-- producer's transaction, still running or committed (see idle()). Distinct queues may share a bit:
-- that costs a NOTIFY no one needed, never a missed one.
CREATE SEQUENCE pgrelay._wakeup_bits AS bigint MINVALUE 0 MAXVALUE 4611686018427387903 START 0 NO CYCLE;
