-- pgrelay 0.2.0 -> 0.3.0 (in the making; frozen when 0.3.0 is released). Run by jobs-migrate (in one
-- transaction, under its lock) and by ALTER EXTENSION pgrelay UPDATE.

CREATE OR REPLACE FUNCTION pgrelay.version() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0.3.0'::text $$;

SELECT pgrelay._apply_privileges();
SELECT pgrelay._record_install('0.3.0');
