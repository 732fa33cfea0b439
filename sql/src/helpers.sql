-- ---------------------------------------------------------------------------------------------
-- Small private helpers: wakeups, backoff, argument checks, redaction
-- ---------------------------------------------------------------------------------------------

-- Wake workers of p_queue: payload "<queue>" when a job is due now, "<queue> <unix time>" for the
-- time a job becomes due, so a listening worker can set a timer instead of polling. Sent only while
-- some worker waits on the queue (_wakeup_bits, see idle()): NOTIFY serialises the commits of the
-- transactions that send it, and a busy worker finds jobs by claiming. Callers call it after their
-- write to _jobs (that order is what idle() relies on). Setting pgrelay.notify (per database, role
-- or session) to off skips it (workers then find jobs by polling), to always sends it whether or not
-- a worker waits (for consumers of the channel that do not call idle()).
-- (PL/pgSQL, whose simple expressions run without planning: as an SQL function with a WHERE clause it
-- could not be inlined and was planned again on every call, a large part of every single enqueue.)
CREATE FUNCTION pgrelay._notify(p_queue text, p_run_at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_mode text := coalesce(nullif(current_setting('pgrelay.notify', true), ''), 'on');
BEGIN
    IF v_mode = 'always'
       OR (v_mode <> 'off'
           AND coalesce(pg_sequence_last_value('pgrelay._wakeup_bits'), 0) & pgrelay._wakeup_bit(p_queue) <> 0) THEN
        PERFORM pg_notify(pgrelay._channel(),
            CASE WHEN p_run_at <= now() THEN p_queue
                 ELSE p_queue || ' ' || round(extract(epoch FROM p_run_at), 3)::text END);
    END IF;
END
$$;

-- The bit of _wakeup_bits that stands for p_queue (62 bits: the sequence's values are positive).
CREATE FUNCTION pgrelay._wakeup_bit(p_queue text)
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 1::bigint << ((pg_catalog.hashtext(p_queue) & 2147483647) % 62)
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

-- The role in effect for the caller, who is recorded as a job's enqueuer: the role SET ROLE chose (or
-- PostgREST, with set_config('role', ...) under its one login), else the login. Not current_user,
-- which inside a SECURITY DEFINER function is the function's owner. One expression: inlined, and
-- evaluated once per statement where it stands in a scalar subquery.
CREATE FUNCTION pgrelay._caller()
RETURNS oid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT pg_catalog.quote_ident(CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user::text
                                       ELSE pg_catalog.current_setting('role') END)::regrole::oid
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
