-- ---------------------------------------------------------------------------------------------
-- Privileges, declared once. _privileges() is the matrix: which group role may call which function
-- (every overload of the name) or read which view. _apply_privileges() makes the catalog say
-- exactly that and nothing more: nothing for PUBLIC, no table for anyone, and a group role keeps
-- only what the matrix gives it. The install script and every upgrade script end by calling it
-- (finish.sql: after every object is made, or the last ones would keep PUBLIC's EXECUTE),
-- and jobs-migrate calls it after every run, so a function an upgrade (or the schema's owner) adds
-- is callable by no one until the matrix names it. (ALTER DEFAULT PRIVILEGES IN SCHEMA could not
-- do this: per-schema defaults only add to PUBLIC's EXECUTE on new functions, never take it away.)
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay._privileges()
RETURNS TABLE (role name, object name)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
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
        ('idle',                  '{worker}'),
        ('idle_check',            '{worker}'),
        ('awake',                 '{worker}'),
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
$$;
COMMENT ON FUNCTION pgrelay._privileges() IS
'Private: which group role may call which function (every overload of the name) or read which view.';

-- Makes the privileges exactly what _privileges() declares. Creates the group roles when the
-- installing user may create roles (a NOTICE names each one it could not). Every name in the matrix
-- must exist (42704 otherwise). Runs as its caller, the owner of the schema; granted to no one.
CREATE FUNCTION pgrelay._apply_privileges()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_can_create boolean;
    v_role name;
    v_missing text;
    v_grant record;
BEGIN
    SELECT pg_catalog.string_agg(DISTINCT m.object, ', ') INTO v_missing
    FROM pgrelay._privileges() m
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = 'pgrelay'::regnamespace AND p.proname = m.object)
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                      WHERE c.relnamespace = 'pgrelay'::regnamespace AND c.relname = m.object AND c.relkind = 'v');
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'pgrelay._privileges() names what schema pgrelay does not have: %', v_missing
            USING ERRCODE = 'undefined_object', HINT = 'create it first, or take it out of the matrix';
    END IF;

    REVOKE ALL ON ALL TABLES IN SCHEMA pgrelay FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgrelay FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrelay FROM PUBLIC;

    SELECT r.rolsuper OR r.rolcreaterole INTO v_can_create FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    FOR v_role IN SELECT DISTINCT m.role FROM pgrelay._privileges() m ORDER BY 1 LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_role) THEN
            IF NOT v_can_create THEN
                RAISE NOTICE 'pgrelay: role % not created (the installing user lacks CREATEROLE); grant EXECUTE by hand', v_role;
                CONTINUE;
            END IF;
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA pgrelay FROM %I', v_role);
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA pgrelay TO %I', v_role);
    END LOOP;

    -- Targets are rendered by regprocedure and regclass with search_path = pg_catalog: schema-qualified
    -- and quoted by PostgreSQL. A function a view calls runs with the privileges of whoever queries
    -- the view, so the view's readers get EXECUTE on the pgrelay functions it calls.
    FOR v_grant IN
        WITH granted AS (
            SELECT m.role, p.oid AS object, false AS is_view
            FROM pgrelay._privileges() m
            JOIN pg_catalog.pg_proc p ON p.pronamespace = 'pgrelay'::regnamespace AND p.proname = m.object
            UNION
            SELECT m.role, c.oid, true
            FROM pgrelay._privileges() m
            JOIN pg_catalog.pg_class c ON c.relnamespace = 'pgrelay'::regnamespace AND c.relname = m.object
                                       AND c.relkind = 'v'
        )
        SELECT g.role, g.object, g.is_view FROM granted g
        UNION
        SELECT g.role, d.refobjid, false
        FROM granted g
        JOIN pg_catalog.pg_rewrite rw ON g.is_view AND rw.ev_class = g.object
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                                   AND d.refclassid = 'pg_proc'::regclass
        JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid AND p.pronamespace = 'pgrelay'::regnamespace
        ORDER BY 1, 3, 2
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = v_grant.role);
        IF v_grant.is_view THEN
            EXECUTE pg_catalog.format('GRANT SELECT ON TABLE %s TO %I', v_grant.object::regclass, v_grant.role);
        ELSE
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', v_grant.object::regprocedure, v_grant.role);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgrelay._apply_privileges() IS
'Private: make the privileges on schema pgrelay exactly what _privileges() declares (run by the installer).';
