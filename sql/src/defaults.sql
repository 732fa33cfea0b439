-- ---------------------------------------------------------------------------------------------
-- The version, the defaults (one place), and the names of the one-byte codes the tables keep
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '@PGRELAY_VERSION@'::text $$;
COMMENT ON FUNCTION pgrelay.version() IS
'The installed pgrelay schema version.

Example: SELECT pgrelay.version();';

CREATE FUNCTION pgrelay._default_max_attempts() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 10 $$;
CREATE FUNCTION pgrelay._default_lease_seconds() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 30 $$;
CREATE FUNCTION pgrelay._default_backoff_base_seconds() RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1.0::double precision $$;
CREATE FUNCTION pgrelay._default_backoff_max_seconds() RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3600.0::double precision $$;
CREATE FUNCTION pgrelay._default_retention_succeeded_days() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 7 $$;
CREATE FUNCTION pgrelay._default_retention_dead_letter_days() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 30 $$;
-- The channel that enqueue and resume NOTIFY (payload: the queue name).
CREATE FUNCTION pgrelay._channel() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 'pgrelay_jobs'::text $$;
-- The names of the one-byte codes the tables keep (SQL functions of one CASE, inlined where called).
CREATE FUNCTION pgrelay._kind_name(p_kind "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_kind WHEN 'h' THEN 'handler' WHEN 'u' THEN 'http' END
$$;
CREATE FUNCTION pgrelay._status_name(p_status "char") RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_status WHEN 's' THEN 'succeeded' WHEN 'd' THEN 'dead_letter' WHEN 'c' THEN 'cancelled' END
$$;
-- ... and back, for _finish, whose callers name the status (NULL for any other name)
CREATE FUNCTION pgrelay._status_code(p_status text) RETURNS "char"
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_status WHEN 'succeeded' THEN 's' WHEN 'dead_letter' THEN 'd' WHEN 'cancelled' THEN 'c' END::"char"
$$;
