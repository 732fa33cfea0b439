-- ---------------------------------------------------------------------------------------------
-- Schedules: periodic jobs. A schedule is a row; tick() enqueues its due ticks. Any number of
-- sessions (every worker, pg_cron, a person) may call tick() at once: the schedule's row lock and
-- its next_run decide, so each (schedule, tick) becomes exactly one job, with no leader.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE pgrelay._schedules (
    name            text COLLATE "C" PRIMARY KEY,
    cron            text NOT NULL,
    timezone        text NOT NULL,
    task            text NOT NULL,
    payload         jsonb NOT NULL,
    queue           text COLLATE "C" NOT NULL,
    catch_up        text NOT NULL CHECK (catch_up IN ('all', 'latest', 'none')),
    priority        integer,
    max_attempts    integer,
    timeout_seconds integer,
    paused          boolean NOT NULL DEFAULT false,
    next_run        timestamptz,            -- the next tick to enqueue; NULL: the expression runs no more
    last_tick       timestamptz,            -- the latest tick enqueued
    last_job_id     bigint,                 -- the job of the latest tick, or of run_schedule_now
    declared_by     text NOT NULL CHECK (declared_by IN ('sql', 'worker')),
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    updated_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE pgrelay._schedules IS 'Private: schedules (see schedule() and tick()).';
-- what tick() reads every second: only the due rows, by one index probe
CREATE INDEX _schedules_next_run_idx ON pgrelay._schedules (next_run) WHERE NOT paused;

-- Every argument of a schedule checked at once: the message naming the first bad one, NULL when fine.
CREATE FUNCTION pgrelay._schedule_error(
    p_name text, p_cron text, p_task text, p_payload jsonb, p_queue text, p_timezone text, p_catch_up text,
    p_priority integer, p_max_attempts integer, p_timeout_seconds integer)
RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(
        pgrelay._name_error('schedule name', p_name, 128),
        pgrelay._cron_error(p_cron, coalesce(p_timezone, 'UTC')),
        pgrelay._job_args_error(p_task, p_queue, p_payload, now(), coalesce(p_priority, 0), p_max_attempts,
                                p_timeout_seconds, NULL, NULL, NULL),
        CASE WHEN jsonb_typeof(p_payload) <> 'object'
             THEN format('payload must be a JSON object (each job gets the key scheduled_for), not %s', jsonb_typeof(p_payload))
             WHEN p_payload ? 'scheduled_for'
             THEN 'payload must not hold scheduled_for: each job gets it, the tick it is for' END,
        CASE WHEN p_catch_up IS NULL OR p_catch_up NOT IN ('all', 'latest', 'none')
             THEN format('catch_up must be all, latest or none, not %s', coalesce(quote_literal(p_catch_up), 'NULL')) END)
$$;

-- Create or change a schedule (declared_by: sql or worker); returns its next run. A schedule whose
-- expression or time zone changes runs next at its first tick after now and after its last tick, so
-- no tick is ever enqueued twice; other changes keep its next run.
CREATE FUNCTION pgrelay._schedule_upsert(
    p_name text, p_cron text, p_task text, p_payload jsonb, p_queue text, p_timezone text, p_catch_up text,
    p_priority integer, p_max_attempts integer, p_timeout_seconds integer, p_declared_by text)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_next timestamptz;
BEGIN
    PERFORM pgrelay._check(pgrelay._schedule_error(p_name, p_cron, p_task, p_payload, p_queue, p_timezone, p_catch_up,
                                                   p_priority, p_max_attempts, p_timeout_seconds));
    INSERT INTO pgrelay._schedules AS s (name, cron, timezone, task, payload, queue, catch_up, priority, max_attempts,
                                         timeout_seconds, next_run, declared_by)
    VALUES (p_name, p_cron, p_timezone, p_task, p_payload, p_queue, p_catch_up, p_priority, p_max_attempts,
            p_timeout_seconds, pgrelay._cron_next(p_cron, now(), p_timezone), p_declared_by)
    ON CONFLICT (name) DO UPDATE SET
        cron = excluded.cron, timezone = excluded.timezone, task = excluded.task, payload = excluded.payload,
        queue = excluded.queue, catch_up = excluded.catch_up, priority = excluded.priority,
        max_attempts = excluded.max_attempts, timeout_seconds = excluded.timeout_seconds,
        declared_by = excluded.declared_by,
        next_run = CASE WHEN (s.cron, s.timezone) = (excluded.cron, excluded.timezone) THEN s.next_run
                        ELSE pgrelay._cron_next(excluded.cron, greatest(now(), s.last_tick), excluded.timezone) END,
        updated_at = now()
    -- (a worker's declaration never changes a schedule made in SQL, even one made concurrently: this
    -- condition is checked on the row as it is once the conflicting insert or update committed)
    WHERE (s.declared_by = 'worker' OR excluded.declared_by = 'sql')
      AND (s.cron, s.timezone, s.task, s.payload, s.queue, s.catch_up, s.priority, s.max_attempts,
           s.timeout_seconds, s.declared_by)
          IS DISTINCT FROM (excluded.cron, excluded.timezone, excluded.task, excluded.payload, excluded.queue,
                            excluded.catch_up, excluded.priority, excluded.max_attempts, excluded.timeout_seconds,
                            excluded.declared_by)
    RETURNING s.next_run INTO v_next;
    IF NOT FOUND THEN   -- unchanged, or a worker's declaration of a schedule made in SQL (NULL)
        SELECT s.next_run INTO v_next FROM pgrelay._schedules s
        WHERE s.name = p_name AND NOT (s.declared_by = 'sql' AND p_declared_by = 'worker');
    END IF;
    RETURN v_next;
END
$$;

CREATE FUNCTION pgrelay.schedule(
    name text,
    cron text,
    task text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    timezone text DEFAULT 'UTC',
    catch_up text DEFAULT 'latest',
    priority integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    RETURN pgrelay._schedule_upsert(schedule.name, schedule.cron, schedule.task, coalesce(schedule.payload, '{}'),
        coalesce(schedule.queue, 'default'), coalesce(schedule.timezone, 'UTC'), coalesce(schedule.catch_up, 'latest'),
        schedule.priority, schedule.max_attempts, schedule.timeout_seconds, 'sql');
END
$$;
COMMENT ON FUNCTION pgrelay.schedule(text, text, text, jsonb, text, text, text, integer, integer, integer) IS
'Create or replace the schedule name; returns its next run. tick() enqueues one job of task per tick.

cron: five fields (minute hour day-of-month month day-of-week: *, lists, ranges, steps, JAN-DEC, SUN-SAT,
0 or 7 for Sunday; when both day fields are restricted either may match) or @hourly, @daily, @weekly,
@monthly, @yearly. timezone: the ticks are wall-clock times there (default UTC); a time skipped by a
daylight-saving change does not run that day, a repeated one runs once, at its first occurrence.
catch_up, after a time with no tick() calls: all (every missed tick, at most 1,000 per call), latest (the
newest missed tick; the default) or none (the newest tick only if at most 60 seconds old).
Each job: payload (a JSON object) plus scheduled_for, the tick it is for (ISO 8601 in UTC, e.g.
2026-12-07T06:00:00Z); run_at the tick; the idempotency key schedule:<name>@<that tick>. A new schedule starts from now, never the past; a new
expression or time zone runs from its first tick after now and after the last tick enqueued. A schedule
made or changed here is the database''s: workers declaring the same name leave it alone. PR001 for a bad
argument (the message says which and why).

Example: SELECT pgrelay.schedule(''reports.daily'', ''0 6 * * *'', ''reports.build'', timezone => ''Europe/Berlin'');';

CREATE FUNCTION pgrelay.declare_schedule(
    name text,
    cron text,
    task text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    timezone text DEFAULT 'UTC',
    catch_up text DEFAULT 'latest',
    priority integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL)
RETURNS timestamptz
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    RETURN pgrelay._schedule_upsert(declare_schedule.name, declare_schedule.cron, declare_schedule.task,
        coalesce(declare_schedule.payload, '{}'), coalesce(declare_schedule.queue, 'default'),
        coalesce(declare_schedule.timezone, 'UTC'), coalesce(declare_schedule.catch_up, 'latest'),
        declare_schedule.priority, declare_schedule.max_attempts, declare_schedule.timeout_seconds, 'worker');
END
$$;
COMMENT ON FUNCTION pgrelay.declare_schedule(text, text, text, jsonb, text, text, text, integer, integer, integer) IS
'A worker''s schedule(), for the schedules declared next to its handlers; returns the next run, or NULL when
a schedule of that name was made or changed in SQL (schedule()), which a worker never changes. Between
workers, the declaration made last wins (a worker starting with new code); changing a schedule never
enqueues a tick twice. Workers never remove schedules: unschedule() does.

Example: SELECT pgrelay.declare_schedule(''reports.daily'', ''0 6 * * *'', ''reports.build'');';

CREATE FUNCTION pgrelay.unschedule(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    DELETE FROM pgrelay._schedules s WHERE s.name = unschedule.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION pgrelay.unschedule(text) IS
'Remove a schedule; true when it existed. Jobs it already enqueued stay. (A tick() enqueuing it right now
finishes first.)

Example: SELECT pgrelay.unschedule(''reports.daily'');';

CREATE FUNCTION pgrelay.pause_schedule(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    UPDATE pgrelay._schedules s SET paused = true, updated_at = now() WHERE s.name = pause_schedule.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION pgrelay.pause_schedule(text) IS
'Stop enqueuing a schedule''s ticks until resume_schedule(); false when there is no such schedule.

Example: SELECT pgrelay.pause_schedule(''reports.daily'');';

CREATE FUNCTION pgrelay.resume_schedule(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    UPDATE pgrelay._schedules s
    SET paused = false, updated_at = now(),
        next_run = CASE WHEN s.paused THEN pgrelay._cron_next(s.cron, greatest(now(), s.last_tick), s.timezone)
                        ELSE s.next_run END
    WHERE s.name = resume_schedule.name;
    RETURN FOUND;
END
$$;
COMMENT ON FUNCTION pgrelay.resume_schedule(text) IS
'Enqueue a paused schedule''s ticks again, from its first tick after now: the ticks of the pause are not made
up; false when there is no such schedule.

Example: SELECT pgrelay.resume_schedule(''reports.daily'');';

-- A tick as its jobs carry it (scheduled_for, the idempotency key): ISO 8601 in UTC, whatever the
-- session's TimeZone.
CREATE FUNCTION pgrelay._tick_text(p_tick timestamptz)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_char(p_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- One tick's job: the schedule's payload plus the tick, due at the tick, keyed by schedule and tick.
CREATE FUNCTION pgrelay._schedule_enqueue(p_schedule pgrelay._schedules, p_tick timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
BEGIN
    RETURN pgrelay._enqueue(p_schedule.queue, p_schedule.task, 'h',
        p_schedule.payload || jsonb_build_object('scheduled_for', pgrelay._tick_text(p_tick)), p_tick,
        coalesce(p_schedule.priority, 0), p_schedule.max_attempts, p_schedule.timeout_seconds,
        format('schedule:%s@%s', p_schedule.name, pgrelay._tick_text(p_tick)), NULL, NULL);
END
$$;

CREATE FUNCTION pgrelay.run_schedule_now(name text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_schedule pgrelay._schedules;
    v_id bigint;
BEGIN
    SELECT * INTO v_schedule FROM pgrelay._schedules s WHERE s.name = run_schedule_now.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PT404', MESSAGE = format('schedule %s not found', quote_literal(run_schedule_now.name));
    END IF;
    v_id := pgrelay._enqueue(v_schedule.queue, v_schedule.task, 'h',
        v_schedule.payload || jsonb_build_object('scheduled_for', pgrelay._tick_text(now())), now(),
        coalesce(v_schedule.priority, 0),
        v_schedule.max_attempts, v_schedule.timeout_seconds, NULL, NULL, NULL);
    UPDATE pgrelay._schedules s SET last_job_id = v_id WHERE s.name = run_schedule_now.name;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION pgrelay.run_schedule_now(text) IS
'Enqueue one extra run of a schedule now, outside its ticks (scheduled_for: now); returns the job''s id. The
ticks go on as before. PT404 when there is no such schedule.

Example: SELECT pgrelay.run_schedule_now(''reports.daily'');';

CREATE FUNCTION pgrelay.tick(now timestamptz DEFAULT pg_catalog.now())
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off SET enable_seqscan = off AS $$
DECLARE
    v_now timestamptz := coalesce(tick.now, pg_catalog.now());
    v_schedule pgrelay._schedules;
    v_tick timestamptz;
    v_next timestamptz;
    v_last timestamptz;
    v_job bigint;
    v_made integer := 0;
    v_n integer;
BEGIN
    IF NOT isfinite(v_now) THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = 'now must be a finite timestamp (or NULL for the current time)';
    END IF;
    -- Each due schedule is locked for the rest of the caller's transaction; a concurrent tick() skips
    -- it, and once this one commits, finds its next_run moved past the ticks enqueued here.
    FOR v_schedule IN
        SELECT * FROM pgrelay._schedules s WHERE NOT s.paused AND s.next_run <= v_now
        ORDER BY s.next_run FOR UPDATE SKIP LOCKED
    LOOP
        v_last := NULL;
        v_job := NULL;
        IF v_schedule.catch_up = 'all' THEN
            -- every tick from the next due one, at most 1,000 a call: the next call goes on
            v_tick := v_schedule.next_run;
            v_n := 0;
            WHILE v_tick IS NOT NULL AND v_tick <= v_now AND v_n < 1000 LOOP
                v_job := pgrelay._schedule_enqueue(v_schedule, v_tick);
                v_last := v_tick;
                v_n := v_n + 1;
                v_tick := pgrelay._cron_next(v_schedule.cron, v_tick, v_schedule.timezone);
            END LOOP;
            v_made := v_made + v_n;
            v_next := v_tick;
        ELSE
            -- the newest due tick, found directly however long the gap (not one period at a time)
            v_tick := pgrelay._cron_prev(v_schedule.cron, v_now, v_schedule.timezone);
            -- (NULL: no tick any more, e.g. a time zone that tzdata no longer knows: next_run NULL shows it)
            IF v_tick IS NOT NULL AND (v_schedule.catch_up = 'latest' OR v_now - v_tick <= interval '60 seconds') THEN
                v_job := pgrelay._schedule_enqueue(v_schedule, v_tick);
                v_last := v_tick;
                v_made := v_made + 1;
            END IF;
            v_next := pgrelay._cron_next(v_schedule.cron, coalesce(v_tick, v_now), v_schedule.timezone);
        END IF;
        UPDATE pgrelay._schedules s
        SET next_run = v_next, last_tick = coalesce(v_last, s.last_tick), last_job_id = coalesce(v_job, s.last_job_id)
        WHERE s.name = v_schedule.name;
    END LOOP;
    RETURN v_made;
END
$$;
COMMENT ON FUNCTION pgrelay.tick(timestamptz) IS
'Enqueue every due tick of every active schedule; returns how many jobs it made. Exactly one job per
(schedule, tick), however many sessions call it at once: every worker calls it about once a second, and
maintain() calls it, so no leader is needed (pg_cron may call it too). Cheap when nothing is due: one
index probe. now: the time to tick at (tests); NULL or left out: the current time.

Example: SELECT pgrelay.tick();';

CREATE VIEW pgrelay.schedules AS
    SELECT s.name, s.cron, s.timezone, s.task, s.queue, s.catch_up, s.paused, s.last_tick, s.next_run,
           s.last_job_id, CASE WHEN j.id IS NULL THEN pgrelay._status_name(f.status)
                               WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END AS last_job_status,
           s.payload, s.priority, s.max_attempts, s.timeout_seconds, s.declared_by, s.created_at, s.updated_at
    FROM pgrelay._schedules s
    LEFT JOIN pgrelay._jobs j ON j.id = s.last_job_id
    LEFT JOIN pgrelay._finished f ON f.id = s.last_job_id AND j.id IS NULL;
COMMENT ON VIEW pgrelay.schedules IS
'Every schedule: its expression and time zone, what it enqueues, whether paused, the latest tick enqueued,
the next run (NULL: its expression runs no more), and the latest job it made with that job''s status
(NULL once purged). declared_by: sql (schedule()) or worker (declared next to a handler).';
