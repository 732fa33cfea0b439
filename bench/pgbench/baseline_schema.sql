-- The plain-SQL baseline: a job table shaped like pgrelay._jobs's hot columns, with one claim index.
-- Not a pgbench script; bench/sql_bench.py and bench/compare.py run it once into the benchmark database.
CREATE TABLE plain_jobs (
    id       bigserial PRIMARY KEY,
    queue    text NOT NULL,
    task     text NOT NULL,
    payload  jsonb NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    run_at   timestamptz NOT NULL DEFAULT now(),
    status   text NOT NULL DEFAULT 'pending'
);
CREATE INDEX plain_jobs_claim_idx ON plain_jobs (queue, priority DESC, run_at, id) WHERE status = 'pending';
-- Where baseline_claim_archive_100.sql moves the jobs it completes (the history pgrelay._finished and
-- pgmq's archive table keep).
CREATE TABLE plain_jobs_archive (
    id          bigint PRIMARY KEY,
    queue       text NOT NULL,
    task        text NOT NULL,
    payload     jsonb NOT NULL,
    priority    integer NOT NULL,
    run_at      timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
