-- (3) The application table the trigger workloads insert into, the same in every system's database.
-- Not a pgbench script; bench/trigger_bench.py runs it once per database, then adds that system's trigger
-- (none in the baseline database).
CREATE TABLE bench_orders (
    id         bigserial PRIMARY KEY,
    customer   integer NOT NULL,
    total      numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
