-- pgrelay @PGRELAY_VERSION@: a job queue and transactional outbox whose semantics live in PostgreSQL.
--
-- This list, read top to bottom, is the install script of the current version: `make sql` puts the
-- files it includes (\ir lines) in this order into sql/pgrelay.sql, with the version from
-- pgrelay.control. That file is run by `jobs-migrate` (inside one transaction, under an advisory
-- lock, after it has created the schema, with check_function_bodies on) and by
-- `CREATE EXTENSION pgrelay` (which creates the schema from pgrelay.control, with
-- check_function_bodies off): an object must come after everything its definition names.
--
-- Released versions are frozen: sql/pgrelay--X.Y.Z.sql installs release X.Y.Z and
-- sql/pgrelay--A--B.sql upgrades release A to release B; neither is edited once released. A change
-- to the schema goes into these files AND into the upgrade script from the last release to the
-- version pgrelay.control names.
--
-- Public objects have plain names; private tables and helpers start with "_" and are not an
-- interface. Every function that changes state is SECURITY DEFINER with a fixed search_path and
-- refers to every object schema-qualified. The PL/pgSQL entry points also SET plan_cache_mode =
-- force_generic_plan: their queries are written for one plan (the planner settings pinned on the
-- helpers that need them), and PostgreSQL's default would plan most of them afresh on every call,
-- because a plan for "p_tasks IS NULL OR ..." looks cheaper once the parameters are known. That
-- re-planning was most of consume()'s fixed cost.
-- And they SET jit = off: a plan that needs a step the helper disabled (a sort under enable_sort =
-- off) carries PostgreSQL's huge disable_cost, which crossed jit_above_cost, so consume() from more
-- than one queue compiled its query with LLVM on every call, at many times the cost of the claim
-- itself. A queue's queries are short; JIT never pays for itself here.
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

-- Tables, their indexes, and the types their columns use
\ir tables.sql
-- Result types of the public functions, and private record types
\ir types.sql

-- Private helpers
\ir defaults.sql
\ir helpers.sql
\ir cron.sql
\ir core.sql
\ir partitions.sql

-- The public API: producers, workers, inspection, queue settings, operators
\ir producer.sql
\ir worker.sql
\ir wakeups.sql
\ir inspection.sql
\ir queues.sql
\ir operators.sql
\ir schedules.sql

-- Who may call what, and the record of each install
\ir privileges.sql
\ir record.sql
-- Last: apply the privileges, record the install
\ir finish.sql
