-- ---------------------------------------------------------------------------------------------
-- Extension membership and the record of this install
-- ---------------------------------------------------------------------------------------------

-- Called last by the install script and by every upgrade script, with the version they leave.
-- Under CREATE EXTENSION (and ALTER EXTENSION UPDATE), has pg_dump keep the data of every table and
-- sequence of the extension, those an upgrade added included; records in _migrations how this version arrived.
CREATE FUNCTION pgrelay._record_install(p_version text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table regclass;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'pgrelay') THEN
        FOR v_table IN
            SELECT c.oid FROM pg_catalog.pg_class c
            WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relkind IN ('r', 'S')
              -- (the history's day partitions are not members: pg_dump dumps them as tables)
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
            ORDER BY c.relname
        LOOP
            PERFORM pg_catalog.pg_extension_config_dump(v_table, '');
        END LOOP;
    END IF;
    INSERT INTO pgrelay._migrations (version, method)
    VALUES (p_version, coalesce(nullif(pg_catalog.current_setting('pgrelay.installer', true), ''),
                                CASE WHEN EXISTS (SELECT 1 FROM pgrelay._migrations) THEN 'alter extension update'
                                     ELSE 'create extension' END));
END
$$;
