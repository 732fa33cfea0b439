-- pgrelay 0.3.0 -> 0.4.0: schedules (issue 23). Run by jobs-migrate (in one transaction, under its
-- lock) and by ALTER EXTENSION pgrelay UPDATE.
--
-- - Cron arithmetic (_cron type and functions) and schedules: the _schedules table, schedule(),
--   declare_schedule(), unschedule(), pause_schedule(), resume_schedule(), run_schedule_now(),
--   tick() and the schedules view.
-- - maintain() ticks the schedules too: its result gains ticked (the last attribute).

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.4.0'::text $$;

-- ---------------------------------------------------------------------------------------------
-- Schedules: the table (its functions below), maintain() reporting the ticks it enqueued
-- ---------------------------------------------------------------------------------------------
CREATE TYPE pgrelay._cron AS (
    minutes    bigint,
    hours      bigint,
    days       bigint,
    months     bigint,
    weekdays   bigint,
    either_day boolean,
    error      text
);
COMMENT ON TYPE pgrelay._cron IS 'Private: a parsed cron expression (see pgrelay._cron_parse).';

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

ALTER TYPE pgrelay.maintenance ADD ATTRIBUTE ticked integer;
COMMENT ON TYPE pgrelay.maintenance IS
'What maintain() did: expired leases recovered, finished jobs purged by the queues'' retention, jobs
enqueued by the schedules'' ticks.';

-- begin: functions whose definition changed (python -m tests.harness.upgrade_draft --write)
CREATE OR REPLACE FUNCTION pgrelay._cron_days(p_cron pgrelay._cron, p_year integer, p_month integer)
 RETURNS bigint
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_length integer := CASE WHEN p_month = 2 THEN
                                 CASE WHEN p_year % 4 = 0 AND (p_year % 100 <> 0 OR p_year % 400 = 0) THEN 29 ELSE 28 END
                             WHEN p_month IN (4, 6, 9, 11) THEN 30 ELSE 31 END;
    v_first integer := pg_catalog.date_part('dow', pg_catalog.make_date(p_year, p_month, 1)::timestamp)::integer;
    v_week bigint;
BEGIN
    -- bit k: the weekday of day k + 1 is allowed; repeated for five weeks and moved to bit 1 = the 1st
    v_week := ((p_cron.weekdays >> v_first) | (p_cron.weekdays << (7 - v_first))) & 127;
    v_week := (v_week | (v_week << 7) | (v_week << 14) | (v_week << 21) | (v_week << 28)) << 1;
    RETURN CASE WHEN p_cron.either_day THEN p_cron.days | v_week ELSE p_cron.days & v_week END
           & ((2::bigint << v_length) - 2);
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_error(p_cron text, p_timezone text DEFAULT 'UTC'::text)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    c_use CONSTANT text := 'use a name from pg_timezone_names, such as ''Europe/Berlin'' or ''UTC''';
    v_error text := (pgrelay._cron_parse(p_cron)).error;
    v_offset interval;
BEGIN
    IF v_error IS NOT NULL THEN
        RETURN v_error;
    ELSIF p_timezone IS NULL THEN
        RETURN 'time zone must not be NULL';
    END IF;
    BEGIN
        PERFORM '2000-01-01 00:00+00'::timestamptz AT TIME ZONE p_timezone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN pg_catalog.format('unknown time zone %s: %s', pg_catalog.quote_literal(pg_catalog.left(p_timezone, 100)), c_use);
    END;
    -- Besides zone names, AT TIME ZONE takes POSIX specifications (UTC+3, which is 3 hours BEHIND
    -- UTC) and abbreviations (PST; CET too, read as the abbreviation, a fixed +01:00, before the zone
    -- of that name): fixed offsets that ignore daylight saving time. Zone names are letters, digits
    -- and _ + - /; POSIX needs a digit and has no '/' before a ','; abbreviations have neither.
    IF p_timezone ~* '^right/' THEN
        RETURN pg_catalog.format('time zone %s counts leap seconds, so its clocks are off by them: use %s',
                                 pg_catalog.quote_literal(p_timezone), pg_catalog.quote_literal(pg_catalog.substr(p_timezone, 7)));
    ELSIF p_timezone ~ '/' AND p_timezone ~ '^[A-Za-z0-9_+/-]+$' THEN
        RETURN NULL;
    END IF;
    SELECT a.utc_offset INTO v_offset
    FROM pg_catalog.pg_timezone_abbrevs a WHERE pg_catalog.lower(a.abbrev) = pg_catalog.lower(p_timezone);
    IF FOUND AND pg_catalog.upper(p_timezone) NOT IN ('UTC', 'GMT', 'UCT', 'UT', 'Z', 'ZULU') THEN
        RETURN pg_catalog.format('time zone %s is an abbreviation, read as a fixed UTC offset (%s) that ignores daylight saving time: %s',
                                 pg_catalog.quote_literal(p_timezone), v_offset, c_use);
    END IF;
    -- the names with digits and no '/' (EST5EDT, GMT0) are few: look them up (slow: it reads every zone file)
    IF p_timezone !~ '^[A-Za-z0-9_+-]+$'
       OR (p_timezone ~ '[0-9]' AND NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names n
                                                 WHERE pg_catalog.lower(n.name) = pg_catalog.lower(p_timezone))) THEN
        RETURN pg_catalog.format('time zone %s is a POSIX offset, not a time zone name: %s', pg_catalog.quote_literal(p_timezone), c_use);
    END IF;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_instant(p_wall timestamp without time zone, p_timezone text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    -- PostgreSQL reads a repeated time with the offset after the jump back: the later occurrence
    v_later timestamptz := p_wall AT TIME ZONE p_timezone;
    -- the same wall time read with the offset of a day before: the earlier occurrence, if there is one
    v_earlier timestamptz := ((p_wall - interval '24 hours') AT TIME ZONE p_timezone) + interval '24 hours';
BEGIN
    IF (v_later AT TIME ZONE p_timezone) <> p_wall THEN
        RETURN NULL;    -- skipped: PostgreSQL gave it the offset from before the jump, another wall time
    END IF;
    IF v_earlier < v_later AND (v_earlier AT TIME ZONE p_timezone) = p_wall THEN
        RETURN v_earlier;
    END IF;
    RETURN v_later;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_next(p_cron text, p_after timestamp with time zone, p_timezone text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_cron  pgrelay._cron := pgrelay._cron_parse(p_cron);
    v_wall  timestamp;
    v_tick  timestamptz;
    v_later timestamptz;
    v_gap   interval;
BEGIN
    IF v_cron.error IS NOT NULL OR NOT p_after BETWEEN '0001-01-01 00:00+00' AND '294000-01-01 00:00+00' THEN
        RETURN NULL;    -- also infinity, and the ends of timestamptz's range
    END IF;
    BEGIN
        v_wall := pgrelay._cron_shown(p_after, p_timezone);
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN NULL;    -- an unknown time zone
    END;
    -- every wall time up to v_wall has had its tick by p_after, every later one is still to come
    v_wall := pgrelay._cron_wall_next(v_cron, v_wall);
    WHILE v_wall IS NOT NULL LOOP
        v_tick := pgrelay._cron_instant(v_wall, p_timezone);
        IF v_tick IS NOT NULL THEN
            RETURN v_tick;
        END IF;
        -- skipped by a jump forward: go on from the first wall time after the jump (the jump came
        -- less than the gap before the instant PostgreSQL reads the skipped time as)
        v_later := v_wall AT TIME ZONE p_timezone;
        v_gap := pg_catalog.make_interval(secs => pg_catalog.date_part('epoch', (v_later AT TIME ZONE p_timezone) - v_wall));
        v_wall := pgrelay._cron_wall_next(v_cron, GREATEST(v_wall,
            (pgrelay._cron_switch(v_later - v_gap, v_later, p_timezone) AT TIME ZONE p_timezone) - interval '1 microsecond'));
    END LOOP;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_parse(p_cron text)
 RETURNS pgrelay._cron
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    c_field CONSTANT text[] := ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'];
    c_low   CONSTANT integer[] := ARRAY[0, 0, 1, 1, 0];
    c_high  CONSTANT integer[] := ARRAY[59, 23, 31, 12, 7];
    c_end   CONSTANT integer[] := ARRAY[59, 23, 31, 12, 6];      -- where * and a/s end
    c_all   CONSTANT bigint[] := ARRAY[1152921504606846975, 16777215, 4294967294, 8190, 127];
    c_month CONSTANT text[] := ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
    c_day   CONSTANT text[] := ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
    v_text   text;
    v_fields text[];
    v_masks  bigint[] := ARRAY[0, 0, 0, 0, 0]::bigint[];
    v_items  text[];
    v_item   text;
    v_slash  integer;
    v_range  text;
    v_dash   integer;
    v_parts  text[];
    v_tokens text[];
    v_bounds integer[];
    v_value  integer;
    v_step   integer;
    v_dom_all boolean;
    v_dow_all boolean;
    v_where  text;
    v_result pgrelay._cron;
BEGIN
    IF p_cron IS NULL THEN
        v_result.error := 'cron expression must not be NULL';
        RETURN v_result;
    END IF;
    v_where := pg_catalog.format('invalid cron expression %s: ', pg_catalog.quote_literal(pg_catalog.left(p_cron, 100)));
    v_text := pg_catalog.btrim(p_cron, E' \t');
    v_text := CASE pg_catalog.lower(v_text)
                  WHEN '@hourly' THEN '0 * * * *'
                  WHEN '@daily' THEN '0 0 * * *'
                  WHEN '@midnight' THEN '0 0 * * *'
                  WHEN '@weekly' THEN '0 0 * * 0'
                  WHEN '@monthly' THEN '0 0 1 * *'
                  WHEN '@yearly' THEN '0 0 1 1 *'
                  WHEN '@annually' THEN '0 0 1 1 *'
                  ELSE v_text END;
    IF v_text LIKE '@%' THEN
        v_result.error := v_where || pg_catalog.format(
            'unknown macro %s: use @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually',
            pg_catalog.quote_literal(pg_catalog.split_part(pg_catalog.translate(v_text, E'\t', ' '), ' ', 1)));
        RETURN v_result;
    END IF;
    v_fields := pg_catalog.array_remove(pg_catalog.string_to_array(pg_catalog.translate(v_text, E'\t', ' '), ' '), '');
    IF pg_catalog.cardinality(v_fields) <> 5 THEN
        v_result.error := v_where || pg_catalog.format(
            'needs 5 fields (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly, not %s',
            pg_catalog.cardinality(v_fields));
        RETURN v_result;
    END IF;

    FOR f IN 1..5 LOOP
        IF v_fields[f] = '*' THEN
            v_masks[f] := c_all[f];
            CONTINUE;
        END IF;
        v_items := pg_catalog.string_to_array(v_fields[f], ',');
        FOREACH v_item IN ARRAY v_items LOOP
            IF v_item = '' THEN
                v_result.error := v_where || pg_catalog.format('%s field %s has an empty list item',
                                                               c_field[f], pg_catalog.quote_literal(v_fields[f]));
                RETURN v_result;
            END IF;
            IF v_item ~ '[^0-9A-Za-z*/-]' THEN
                v_result.error := v_where || pg_catalog.format('unexpected character %s in %s field %s',
                    pg_catalog.quote_literal(pg_catalog.substring(v_item, '[^0-9A-Za-z*/-]')), c_field[f],
                    pg_catalog.quote_literal(v_fields[f]));
                RETURN v_result;
            END IF;
            -- {*, low, high, step} of *, a or a-b, each with an optional /step (string functions:
            -- regexp_match with its capture groups took most of the time of a call)
            v_slash := pg_catalog.strpos(v_item, '/');
            v_range := CASE WHEN v_slash > 0 THEN pg_catalog.left(v_item, v_slash - 1) ELSE v_item END;
            v_dash := pg_catalog.strpos(v_range, '-');
            v_parts := ARRAY[CASE WHEN v_range = '*' THEN '*' END,
                             CASE WHEN v_range = '*' THEN NULL WHEN v_dash > 0 THEN pg_catalog.left(v_range, v_dash - 1) ELSE v_range END,
                             CASE WHEN v_range <> '*' AND v_dash > 0 THEN pg_catalog.substr(v_range, v_dash + 1) END,
                             CASE WHEN v_slash > 0 THEN pg_catalog.substr(v_item, v_slash + 1) END];
            IF v_range <> '*' AND (v_parts[2] !~ '^[0-9A-Za-z]+$' OR coalesce(v_parts[3], '0') !~ '^[0-9A-Za-z]+$') THEN
                v_result.error := v_where || pg_catalog.format(
                    '%s in %s field is not a value, a range (a-b) or a step (*/s, a-b/s, a/s)',
                    pg_catalog.quote_literal(v_item), c_field[f]);
                RETURN v_result;
            END IF;
            IF v_item = '*' AND pg_catalog.cardinality(v_items) > 1 THEN
                v_result.error := v_where || pg_catalog.format('* cannot be combined with other values in %s field %s',
                                                               c_field[f], pg_catalog.quote_literal(v_fields[f]));
                RETURN v_result;
            END IF;
            -- the step
            v_step := 1;
            IF v_parts[4] IS NOT NULL THEN
                IF v_parts[4] !~ '^[0-9]{1,9}$' THEN
                    v_result.error := v_where || pg_catalog.format('step %s in %s field %s is not a number',
                        pg_catalog.quote_literal(v_parts[4]), c_field[f], pg_catalog.quote_literal(v_fields[f]));
                    RETURN v_result;
                END IF;
                v_step := v_parts[4]::integer;
                IF v_step < 1 OR v_step > c_end[f] - c_low[f] + 1 THEN
                    v_result.error := v_where || pg_catalog.format('step %s in %s field %s must be between 1 and %s',
                        v_parts[4], c_field[f], pg_catalog.quote_literal(v_fields[f]), c_end[f] - c_low[f] + 1);
                    RETURN v_result;
                END IF;
            END IF;
            -- the bounds: numbers or names, each in the field's range
            v_tokens := ARRAY[v_parts[2], v_parts[3]];
            v_bounds := ARRAY[NULL, NULL]::integer[];
            FOR b IN 1..2 LOOP
                CONTINUE WHEN v_tokens[b] IS NULL;
                IF v_tokens[b] ~ '^[0-9]+$' THEN
                    v_value := CASE WHEN pg_catalog.length(pg_catalog.ltrim(v_tokens[b], '0')) > 4 THEN 99999
                                    ELSE v_tokens[b]::integer END;
                    IF v_value NOT BETWEEN c_low[f] AND c_high[f] THEN
                        v_result.error := v_where || pg_catalog.format('%s %s is out of range %s-%s',
                                                                       c_field[f], v_tokens[b], c_low[f], c_high[f]);
                        RETURN v_result;
                    END IF;
                ELSIF f = 4 AND pg_catalog.lower(v_tokens[b]) = ANY (c_month) THEN
                    v_value := pg_catalog.array_position(c_month, pg_catalog.lower(v_tokens[b]));
                ELSIF f = 5 AND pg_catalog.lower(v_tokens[b]) = ANY (c_day) THEN
                    v_value := pg_catalog.array_position(c_day, pg_catalog.lower(v_tokens[b])) - 1;
                ELSE
                    v_result.error := v_where || CASE f
                        WHEN 4 THEN pg_catalog.format('%s is not a month: use 1-12 or JAN-DEC', pg_catalog.quote_literal(v_tokens[b]))
                        WHEN 5 THEN pg_catalog.format('%s is not a day of the week: use 0-7 or SUN-SAT', pg_catalog.quote_literal(v_tokens[b]))
                        ELSE pg_catalog.format('%s %s is not a number', c_field[f], pg_catalog.quote_literal(v_tokens[b])) END;
                    RETURN v_result;
                END IF;
                v_bounds[b] := v_value;
            END LOOP;
            IF v_parts[1] IS NOT NULL THEN                        -- * or */s
                v_bounds := ARRAY[c_low[f], c_end[f]];
            ELSIF v_parts[3] IS NOT NULL THEN                     -- a-b or a-b/s
                IF v_bounds[1] > v_bounds[2] THEN
                    v_result.error := v_where || pg_catalog.format('%s range %s is reversed: its start is after its end%s',
                        c_field[f], v_parts[2] || '-' || v_parts[3],
                        CASE WHEN f = 5 AND v_bounds[2] = 0 THEN ' (end a range on Sunday with 7: ' || v_parts[2] || '-7)' ELSE '' END);
                    RETURN v_result;
                END IF;
            ELSIF v_parts[4] IS NOT NULL THEN                     -- a/s: from a to the field's end
                v_bounds[1] := CASE WHEN f = 5 THEN v_bounds[1] % 7 ELSE v_bounds[1] END;
                v_bounds[2] := c_end[f];
            ELSE                                                  -- a
                v_bounds[2] := v_bounds[1];
            END IF;
            FOR v IN v_bounds[1]..v_bounds[2] BY v_step LOOP
                v_masks[f] := v_masks[f] | (1::bigint << CASE WHEN f = 5 THEN v % 7 ELSE v END);
            END LOOP;
        END LOOP;
    END LOOP;

    -- croniter's rule for a day field that covers its whole range: unrestricted only next to a *
    v_dom_all := v_fields[3] = '*' OR (v_masks[3] = c_all[3] AND pg_catalog.strpos(v_fields[5], '*') > 0);
    v_dow_all := v_fields[5] = '*' OR (v_masks[5] = c_all[5] AND pg_catalog.strpos(v_fields[3], '*') > 0);
    -- with a weekday restriction, every month has a day; else some named month must have a named day
    -- (1-29 is in every month, Feb 29 in leap years; 30 in all but February; 31 in seven months)
    IF v_dow_all AND NOT v_dom_all
       AND v_masks[3] & 1073741822 = 0
       AND (v_masks[3] & (1::bigint << 30) = 0 OR v_masks[4] & ~4::bigint = 0)
       AND (v_masks[3] & (1::bigint << 31) = 0 OR v_masks[4] & 5546 = 0) THEN
        v_result.error := v_where || pg_catalog.format('never runs: day-of-month %s does not occur in month %s',
                                                       v_fields[3], v_fields[4]);
        RETURN v_result;
    END IF;
    v_result.minutes := v_masks[1];
    v_result.hours := v_masks[2];
    v_result.days := v_masks[3];
    v_result.months := v_masks[4];
    v_result.weekdays := v_masks[5];
    v_result.either_day := NOT v_dom_all AND NOT v_dow_all;
    RETURN v_result;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_prev(p_cron text, p_at timestamp with time zone, p_timezone text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE STRICT
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_cron  pgrelay._cron := pgrelay._cron_parse(p_cron);
    v_wall  timestamp;
    v_tick  timestamptz;
    v_later timestamptz;
    v_gap   interval;
BEGIN
    IF v_cron.error IS NOT NULL OR NOT p_at BETWEEN '0001-01-01 00:00+00' AND '294000-01-01 00:00+00' THEN
        RETURN NULL;    -- also infinity, and the ends of timestamptz's range
    END IF;
    BEGIN
        v_wall := pgrelay._cron_shown(p_at, p_timezone);
    EXCEPTION WHEN invalid_parameter_value THEN
        RETURN NULL;    -- an unknown time zone
    END;
    -- every wall time up to v_wall has had its tick by p_at, every later one is still to come
    v_wall := pgrelay._cron_wall_prev(v_cron, v_wall);
    WHILE v_wall IS NOT NULL LOOP
        v_tick := pgrelay._cron_instant(v_wall, p_timezone);
        IF v_tick IS NOT NULL THEN
            RETURN v_tick;
        END IF;
        -- skipped by a jump forward: go on from the last wall time before the jump
        v_later := v_wall AT TIME ZONE p_timezone;
        v_gap := pg_catalog.make_interval(secs => pg_catalog.date_part('epoch', (v_later AT TIME ZONE p_timezone) - v_wall));
        v_wall := pgrelay._cron_wall_prev(v_cron, LEAST(v_wall - interval '1 minute',
            (pgrelay._cron_switch(v_later - v_gap, v_later, p_timezone) - interval '1 microsecond') AT TIME ZONE p_timezone));
    END LOOP;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_shown(p_at timestamp with time zone, p_timezone text)
 RETURNS timestamp without time zone
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_wall   timestamp := p_at AT TIME ZONE p_timezone;
    v_offset interval := v_wall - (p_at AT TIME ZONE 'UTC');
    v_back   interval := ((p_at - interval '24 hours') AT TIME ZONE p_timezone)
                         - ((p_at - interval '24 hours') AT TIME ZONE 'UTC') - v_offset;
BEGIN
    -- the clocks went back by v_back within the last day, and showed this wall time v_back ago too
    IF v_back > interval '0' AND ((p_at - v_back) AT TIME ZONE p_timezone) = v_wall THEN
        RETURN (pgrelay._cron_switch(p_at - v_back, p_at, p_timezone) - interval '1 microsecond') AT TIME ZONE p_timezone;
    END IF;
    RETURN v_wall;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_switch(p_before timestamp with time zone, p_after timestamp with time zone, p_timezone text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_low   timestamptz := p_before;
    v_high  timestamptz := p_after;
    v_mid   timestamptz;
    v_offset interval := (p_after AT TIME ZONE p_timezone) - (p_after AT TIME ZONE 'UTC');
BEGIN
    WHILE v_high - v_low > interval '1 microsecond' LOOP
        v_mid := v_low + (v_high - v_low) / 2;
        IF (v_mid AT TIME ZONE p_timezone) - (v_mid AT TIME ZONE 'UTC') = v_offset THEN
            v_high := v_mid;
        ELSE
            v_low := v_mid;
        END IF;
    END LOOP;
    RETURN v_high;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_wall_next(p_cron pgrelay._cron, p_after timestamp without time zone)
 RETURNS timestamp without time zone
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_start  timestamp := pg_catalog.date_trunc('minute', p_after) + interval '1 minute';
    v_year   integer := pg_catalog.date_part('year', v_start)::integer;
    v_month  integer := pg_catalog.date_part('month', v_start)::integer;
    v_day    integer := pg_catalog.date_part('day', v_start)::integer;
    v_hour   integer := pg_catalog.date_part('hour', v_start)::integer;
    v_minute integer := pg_catalog.date_part('minute', v_start)::integer;
    v_last   integer := LEAST(v_year + 8, 294275);
    v_bits   bigint;
    v_found  integer;
BEGIN
    -- at each level: the lowest allowed value >= the current one (the lowest set bit of the mask with
    -- the bits below cleared); none: carry into the level above and start it over from its lowest
    LOOP
        IF v_year > v_last THEN
            RETURN NULL;
        END IF;
        v_bits := p_cron.months & ~((1::bigint << v_month) - 1);
        IF v_bits = 0 THEN
            v_year := v_year + 1; v_month := 1; v_day := 1; v_hour := 0; v_minute := 0;
            CONTINUE;
        END IF;
        v_found := pg_catalog.bit_count(((v_bits & -v_bits) - 1)::bit(64))::integer;
        IF v_found > v_month THEN
            v_month := v_found; v_day := 1; v_hour := 0; v_minute := 0;
        END IF;
        v_bits := pgrelay._cron_days(p_cron, v_year, v_month) & ~((1::bigint << v_day) - 1);
        IF v_bits = 0 THEN
            v_month := v_month + 1; v_day := 1; v_hour := 0; v_minute := 0;
            IF v_month > 12 THEN
                v_year := v_year + 1; v_month := 1;
            END IF;
            CONTINUE;
        END IF;
        v_found := pg_catalog.bit_count(((v_bits & -v_bits) - 1)::bit(64))::integer;
        IF v_found > v_day THEN
            v_day := v_found; v_hour := 0; v_minute := 0;
        END IF;
        v_bits := p_cron.hours & ~((1::bigint << v_hour) - 1);
        IF v_bits = 0 THEN
            v_day := v_day + 1; v_hour := 0; v_minute := 0;    -- past the month's end: no day, next month
            CONTINUE;
        END IF;
        v_found := pg_catalog.bit_count(((v_bits & -v_bits) - 1)::bit(64))::integer;
        IF v_found > v_hour THEN
            v_hour := v_found; v_minute := 0;
        END IF;
        v_bits := p_cron.minutes & ~((1::bigint << v_minute) - 1);
        IF v_bits = 0 THEN
            v_hour := v_hour + 1; v_minute := 0;                -- hour 24: no hour, next day
            CONTINUE;
        END IF;
        v_minute := pg_catalog.bit_count(((v_bits & -v_bits) - 1)::bit(64))::integer;
        RETURN pg_catalog.make_timestamp(v_year, v_month, v_day, v_hour, v_minute, 0);
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._cron_wall_prev(p_cron pgrelay._cron, p_at timestamp without time zone)
 RETURNS timestamp without time zone
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_year   integer := pg_catalog.date_part('year', p_at)::integer;
    v_month  integer := pg_catalog.date_part('month', p_at)::integer;
    v_day    integer := pg_catalog.date_part('day', p_at)::integer;
    v_hour   integer := pg_catalog.date_part('hour', p_at)::integer;
    v_minute integer := pg_catalog.date_part('minute', p_at)::integer;
    v_first  integer := GREATEST(v_year - 8, 1);
    v_bits   bigint;
    v_found  integer;
BEGIN
    -- at each level: the highest allowed value <= the current one (the highest set bit of the mask
    -- with the bits above cleared); none: borrow from the level above and start it from its highest
    LOOP
        IF v_year < v_first THEN
            RETURN NULL;
        END IF;
        v_bits := p_cron.months & ((2::bigint << v_month) - 1);
        IF v_bits = 0 THEN
            v_year := v_year - 1; v_month := 12; v_day := 31; v_hour := 23; v_minute := 59;
            CONTINUE;
        END IF;
        v_found := 64 - pg_catalog.position(v_bits::bit(64), B'1');
        IF v_found < v_month THEN
            v_month := v_found; v_day := 31; v_hour := 23; v_minute := 59;
        END IF;
        v_bits := CASE WHEN v_day < 1 THEN 0
                       ELSE pgrelay._cron_days(p_cron, v_year, v_month) & ((2::bigint << v_day) - 1) END;
        IF v_bits = 0 THEN
            v_month := v_month - 1; v_day := 31; v_hour := 23; v_minute := 59;
            IF v_month < 1 THEN
                v_year := v_year - 1; v_month := 12;
            END IF;
            CONTINUE;
        END IF;
        v_found := 64 - pg_catalog.position(v_bits::bit(64), B'1');
        IF v_found < v_day THEN
            v_day := v_found; v_hour := 23; v_minute := 59;
        END IF;
        v_bits := CASE WHEN v_hour < 0 THEN 0 ELSE p_cron.hours & ((2::bigint << v_hour) - 1) END;
        IF v_bits = 0 THEN
            v_day := v_day - 1; v_hour := 23; v_minute := 59;  -- day 0: no day, previous month
            CONTINUE;
        END IF;
        v_found := 64 - pg_catalog.position(v_bits::bit(64), B'1');
        IF v_found < v_hour THEN
            v_hour := v_found; v_minute := 59;
        END IF;
        v_bits := CASE WHEN v_minute < 0 THEN 0 ELSE p_cron.minutes & ((2::bigint << v_minute) - 1) END;
        IF v_bits = 0 THEN
            v_hour := v_hour - 1; v_minute := 59;               -- hour -1: no hour, previous day
            CONTINUE;
        END IF;
        v_minute := 64 - pg_catalog.position(v_bits::bit(64), B'1');
        RETURN pg_catalog.make_timestamp(v_year, v_month, v_day, v_hour, v_minute, 0);
    END LOOP;
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._privileges()
 RETURNS TABLE(role name, object name)
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT pg_catalog.format('pgrelay_%s', r)::name, m.object::name
    FROM (VALUES
        -- producers: record jobs, read a job back
        ('version',               '{producer,worker,reader,admin}'::text[]),
        ('job_statuses',          '{producer,worker,reader,admin}'),
        ('check_task_names',      '{producer,worker,reader,admin}'),
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
        ('tick',                  '{worker,admin}'),
        ('declare_schedule',      '{worker,admin}'),
        -- operators
        ('configure_queue',       '{admin}'),
        ('pause',                 '{admin}'),
        ('resume',                '{admin}'),
        ('replay',                '{admin}'),
        ('replay_dead_letters',   '{admin}'),
        ('cancel',                '{admin}'),
        ('purge',                 '{admin}'),
        ('schedule',              '{admin}'),
        ('unschedule',            '{admin}'),
        ('pause_schedule',        '{admin}'),
        ('resume_schedule',       '{admin}'),
        ('run_schedule_now',      '{admin}'),
        -- the views (and, derived by _apply_privileges, the functions they call)
        ('jobs',                  '{reader,admin}'),
        ('queue_stats',           '{reader,admin}'),
        ('expired_leases',        '{reader,admin}'),
        ('dead_letters',          '{reader,admin}'),
        ('workers',               '{reader,admin}'),
        ('recent_failures',       '{reader,admin}'),
        ('schedules',             '{reader,admin}'),
        -- this matrix, for `pgrelay doctor`
        ('_privileges',           '{reader,admin}')
    ) m(object, roles), pg_catalog.unnest(m.roles) r
$function$;
COMMENT ON FUNCTION pgrelay._privileges() IS 'Private: which group role may call which function (every overload of the name) or read which view.';

CREATE OR REPLACE FUNCTION pgrelay._schedule_enqueue(p_schedule pgrelay._schedules, p_tick timestamp with time zone)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    RETURN pgrelay._enqueue(p_schedule.queue, p_schedule.task, 'h',
        p_schedule.payload || jsonb_build_object('scheduled_for', pgrelay._tick_text(p_tick)), p_tick,
        coalesce(p_schedule.priority, 0), p_schedule.max_attempts, p_schedule.timeout_seconds,
        format('schedule:%s@%s', p_schedule.name, pgrelay._tick_text(p_tick)), NULL, NULL);
END
$function$;

CREATE OR REPLACE FUNCTION pgrelay._schedule_error(p_name text, p_cron text, p_task text, p_payload jsonb, p_queue text, p_timezone text, p_catch_up text, p_priority integer, p_max_attempts integer, p_timeout_seconds integer)
 RETURNS text
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._schedule_upsert(p_name text, p_cron text, p_task text, p_payload jsonb, p_queue text, p_timezone text, p_catch_up text, p_priority integer, p_max_attempts integer, p_timeout_seconds integer, p_declared_by text)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION pgrelay._tick_text(p_tick timestamp with time zone)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT to_char(p_tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$function$;

CREATE OR REPLACE FUNCTION pgrelay.declare_schedule(name text, cron text, task text, payload jsonb DEFAULT '{}'::jsonb, queue text DEFAULT 'default'::text, timezone text DEFAULT 'UTC'::text, catch_up text DEFAULT 'latest'::text, priority integer DEFAULT NULL::integer, max_attempts integer DEFAULT NULL::integer, timeout_seconds integer DEFAULT NULL::integer)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    RETURN pgrelay._schedule_upsert(declare_schedule.name, declare_schedule.cron, declare_schedule.task,
        coalesce(declare_schedule.payload, '{}'), coalesce(declare_schedule.queue, 'default'),
        coalesce(declare_schedule.timezone, 'UTC'), coalesce(declare_schedule.catch_up, 'latest'),
        declare_schedule.priority, declare_schedule.max_attempts, declare_schedule.timeout_seconds, 'worker');
END
$function$;
COMMENT ON FUNCTION pgrelay.declare_schedule(text,text,text,jsonb,text,text,text,integer,integer,integer) IS 'A worker''s schedule(), for the schedules declared next to its handlers; returns the next run, or NULL when
a schedule of that name was made or changed in SQL (schedule()), which a worker never changes. Between
workers, the declaration made last wins (a worker starting with new code); changing a schedule never
enqueues a tick twice. Workers never remove schedules: unschedule() does.

Example: SELECT pgrelay.declare_schedule(''reports.daily'', ''0 6 * * *'', ''reports.build'');';

CREATE OR REPLACE FUNCTION pgrelay.maintain(max_jobs integer DEFAULT 10000)
 RETURNS pgrelay.maintenance
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
DECLARE
    v_done pgrelay.maintenance;
BEGIN
    v_done.recovered := pgrelay.recover(maintain.max_jobs);
    v_done.purged := pgrelay.purge(NULL, maintain.max_jobs);
    v_done.ticked := pgrelay.tick();
    RETURN v_done;
END
$function$;
COMMENT ON FUNCTION pgrelay.maintain(integer) IS 'Routine maintenance: recover() expired leases, then purge() finished jobs by each queue''s retention (at
most max_jobs of each), then tick() the schedules; returns what it did. A count of max_jobs says more may be left: call again. Run it from pg_cron every minute, or let the workers run it.

Example: SELECT * FROM pgrelay.maintain();';

CREATE OR REPLACE FUNCTION pgrelay.pause_schedule(name text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    UPDATE pgrelay._schedules s SET paused = true, updated_at = now() WHERE s.name = pause_schedule.name;
    RETURN FOUND;
END
$function$;
COMMENT ON FUNCTION pgrelay.pause_schedule(text) IS 'Stop enqueuing a schedule''s ticks until resume_schedule(); false when there is no such schedule.

Example: SELECT pgrelay.pause_schedule(''reports.daily'');';

CREATE OR REPLACE FUNCTION pgrelay.resume_schedule(name text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    UPDATE pgrelay._schedules s
    SET paused = false, updated_at = now(),
        next_run = CASE WHEN s.paused THEN pgrelay._cron_next(s.cron, greatest(now(), s.last_tick), s.timezone)
                        ELSE s.next_run END
    WHERE s.name = resume_schedule.name;
    RETURN FOUND;
END
$function$;
COMMENT ON FUNCTION pgrelay.resume_schedule(text) IS 'Enqueue a paused schedule''s ticks again, from its first tick after now: the ticks of the pause are not made
up; false when there is no such schedule.

Example: SELECT pgrelay.resume_schedule(''reports.daily'');';

CREATE OR REPLACE FUNCTION pgrelay.run_schedule_now(name text)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.run_schedule_now(text) IS 'Enqueue one extra run of a schedule now, outside its ticks (scheduled_for: now); returns the job''s id. The
ticks go on as before. PT404 when there is no such schedule.

Example: SELECT pgrelay.run_schedule_now(''reports.daily'');';

CREATE OR REPLACE FUNCTION pgrelay.schedule(name text, cron text, task text, payload jsonb DEFAULT '{}'::jsonb, queue text DEFAULT 'default'::text, timezone text DEFAULT 'UTC'::text, catch_up text DEFAULT 'latest'::text, priority integer DEFAULT NULL::integer, max_attempts integer DEFAULT NULL::integer, timeout_seconds integer DEFAULT NULL::integer)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    RETURN pgrelay._schedule_upsert(schedule.name, schedule.cron, schedule.task, coalesce(schedule.payload, '{}'),
        coalesce(schedule.queue, 'default'), coalesce(schedule.timezone, 'UTC'), coalesce(schedule.catch_up, 'latest'),
        schedule.priority, schedule.max_attempts, schedule.timeout_seconds, 'sql');
END
$function$;
COMMENT ON FUNCTION pgrelay.schedule(text,text,text,jsonb,text,text,text,integer,integer,integer) IS 'Create or replace the schedule name; returns its next run. tick() enqueues one job of task per tick.

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

CREATE OR REPLACE FUNCTION pgrelay.tick(now timestamp with time zone DEFAULT now())
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
 SET enable_seqscan TO 'off'
AS $function$
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
$function$;
COMMENT ON FUNCTION pgrelay.tick(timestamp with time zone) IS 'Enqueue every due tick of every active schedule; returns how many jobs it made. Exactly one job per
(schedule, tick), however many sessions call it at once: every worker calls it about once a second, and
maintain() calls it, so no leader is needed (pg_cron may call it too). Cheap when nothing is due: one
index probe. now: the time to tick at (tests); NULL or left out: the current time.

Example: SELECT pgrelay.tick();';

CREATE OR REPLACE FUNCTION pgrelay.unschedule(name text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_generic_plan'
 SET jit TO 'off'
AS $function$
BEGIN
    DELETE FROM pgrelay._schedules s WHERE s.name = unschedule.name;
    RETURN FOUND;
END
$function$;
COMMENT ON FUNCTION pgrelay.unschedule(text) IS 'Remove a schedule; true when it existed. Jobs it already enqueued stay. (A tick() enqueuing it right now
finishes first.)

Example: SELECT pgrelay.unschedule(''reports.daily'');';

CREATE OR REPLACE FUNCTION pgrelay.version()
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT '0.4.0'::text $function$;
COMMENT ON FUNCTION pgrelay.version() IS 'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';
-- end: functions whose definition changed

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


SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.4.0');
