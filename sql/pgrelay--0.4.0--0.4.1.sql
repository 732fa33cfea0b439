-- pgrelay 0.4.0 -> 0.4.1: a fix. Run by jobs-migrate (in one transaction, under its lock) and by ALTER
-- EXTENSION pgrelay UPDATE.
--
-- - maintain(max_jobs) took purge()'s range (up to 10,000,000) but passed max_jobs on to recover(),
--   which takes at most 100,000 a call, so maintain(100001) and above failed with recover()'s message
--   (found by the hostile-input suite at full size). It now checks its own range and recovers at most
--   100,000 a call.

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.4.1'::text $$;

-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)
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
    RETURN v_done;
END
$function$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS 'Routine maintenance: recover() expired leases (at most max_jobs, and 100,000), then purge() finished jobs by
each queue''s retention (at most max_jobs), then tick() the schedules; returns what it did. max_jobs: 1 to
10,000,000 (NULL: 10,000). A count of max_jobs (or 100,000 recovered) says more may be left: call again.
Run it from pg_cron every minute, or let the workers run it.

Example: SELECT * FROM pgrelay.maintain();';

CREATE OR REPLACE FUNCTION pgrelay.version()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT '0.4.1'::text $function$;
COMMENT ON FUNCTION pgrelay.version() IS 'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';
-- end: functions whose definition changed

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.4.1');
