-- ---------------------------------------------------------------------------------------------
-- Cron arithmetic for schedules: parse an expression, check it, find the tick after or at an instant
-- ---------------------------------------------------------------------------------------------
--
-- An expression has five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
-- JAN-DEC), day of week (0-7, 0 and 7 = Sunday, or SUN-SAT); names in any case. A field is *, or a
-- list a,b,... of a value, a range a-b, or a step */s, a-b/s, a/s (a to the field's end; for the day
-- of week that end is 6, Saturday). Fields are separated by spaces or tabs. @hourly, @daily (=
-- @midnight), @weekly, @monthly and @yearly (= @annually) stand for 0 * * * *, 0 0 * * *, 0 0 * * 0,
-- 0 0 1 * * and 0 0 1 1 *.
--
-- The day rule is croniter's (the Python library; the tests compare with it): when both the day of
-- month and the day of week are restricted, a day matches if EITHER matches; otherwise both must.
-- A day field is unrestricted when it is * or when its values cover the whole field (1-31; all seven
-- days) AND the other day field's text contains a *. So 0 0 */2 * 1 runs on odd days and on Mondays,
-- 0 0 1-31 * 1 every day, and 0 0 1-31 * */2 on Sundays, Tuesdays, Thursdays and Saturdays.
--
-- Ticks are wall-clock times in the schedule's time zone, one per matching minute, at the first
-- instant the zone's clocks show it: a time skipped when the clocks jump forward has no tick that
-- day, a time repeated when they jump back has one tick, at its first occurrence. Built on how
-- PostgreSQL reads a local time (timestamp AT TIME ZONE zone; documented in "Handling of Invalid or
-- Ambiguous Timestamps"): a skipped time gets the UTC offset from before the jump (so it comes back
-- as another wall time, after the jump); a repeated time gets the offset from after the jump back,
-- which is its LATER occurrence (the earlier one is the same wall time read with the offset of a
-- day before).
--
-- The search is field by field (month, day, hour, minute) over bit masks, so the cost does not grow
-- with the gap; it looks 8 years ahead or back (Feb 29 across 2100 needs 8), then gives up (NULL).

-- A parsed expression: one bit per allowed value (bit n = value n; the day of week in bits 0-6,
-- Sunday = 0), either_day when a day matches by its day of month OR its day of week; error: what is
-- wrong with the expression (then the masks are NULL).
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

-- Parse a cron expression (the rules at the top of this file); a message in .error when it is
-- malformed or never runs. (STABLE rather than IMMUTABLE only because format() is.)
CREATE FUNCTION pgrelay._cron_parse(p_cron text)
RETURNS pgrelay._cron
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The days of month p_month of year p_year that p_cron allows, one bit per day (bit 1 = the 1st).
CREATE FUNCTION pgrelay._cron_days(p_cron pgrelay._cron, p_year integer, p_month integer)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The first wall-clock minute after p_after that p_cron matches, searched field by field; NULL when
-- there is none within 8 years.
CREATE FUNCTION pgrelay._cron_wall_next(p_cron pgrelay._cron, p_after timestamp)
RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The last wall-clock minute at or before p_at that p_cron matches, searched field by field; NULL
-- when there is none within 8 years.
CREATE FUNCTION pgrelay._cron_wall_prev(p_cron pgrelay._cron, p_at timestamp)
RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The first instant at which the clocks of p_timezone show p_wall: of a repeated wall time, the
-- earlier one; NULL for a wall time the clocks skip.
CREATE FUNCTION pgrelay._cron_instant(p_wall timestamp, p_timezone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The instant in (p_before, p_after] at which the UTC offset of p_timezone changes from p_before's to
-- p_after's (one change between them), to the microsecond, by bisection.
CREATE FUNCTION pgrelay._cron_switch(p_before timestamptz, p_after timestamptz, p_timezone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The latest wall time the clocks of p_timezone have shown by p_at: the wall time at p_at, except
-- while a jump back repeats wall times already shown, when it is the one just before the jump.
CREATE FUNCTION pgrelay._cron_shown(p_at timestamptz, p_timezone text)
RETURNS timestamp
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- NULL when p_cron is a valid cron expression (see the top of this file) that runs, in a time zone
-- PostgreSQL knows by name; otherwise one message saying what is wrong and where.
CREATE FUNCTION pgrelay._cron_error(p_cron text, p_timezone text DEFAULT 'UTC')
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The first tick of p_cron in p_timezone strictly after p_after; NULL when there is none within 8
-- years, or the expression or the time zone is not valid (pgrelay._cron_error says why), or p_after
-- is not between the years 1 and 294000.
CREATE FUNCTION pgrelay._cron_next(p_cron text, p_after timestamptz, p_timezone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;

-- The last tick of p_cron in p_timezone at or before p_at; NULL when there is none within 8 years,
-- or the expression or the time zone is not valid (pgrelay._cron_error says why), or p_at is not
-- between the years 1 and 294000.
CREATE FUNCTION pgrelay._cron_prev(p_cron text, p_at timestamptz, p_timezone text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
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
$$;
