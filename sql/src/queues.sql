-- ---------------------------------------------------------------------------------------------
-- Queue settings
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay._queue_settings(p_queue text)
RETURNS pgrelay.queue_settings
LANGUAGE sql STABLE AS $$
    SELECT n.queue, coalesce(q.paused, false), q.concurrency,
           coalesce(q.max_attempts, pgrelay._default_max_attempts()),
           coalesce(q.lease_seconds, pgrelay._default_lease_seconds()),
           coalesce(q.backoff_base_seconds, pgrelay._default_backoff_base_seconds()),
           coalesce(q.backoff_max_seconds, pgrelay._default_backoff_max_seconds()),
           coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()),
           coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days())
    FROM (SELECT p_queue AS queue) n LEFT JOIN pgrelay._queues q ON q.queue = n.queue
$$;

CREATE FUNCTION pgrelay.configure_queue(
    queue text,
    concurrency integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    lease_seconds integer DEFAULT NULL,
    backoff_base_seconds double precision DEFAULT NULL,
    backoff_max_seconds double precision DEFAULT NULL,
    reset text[] DEFAULT NULL,
    retention_succeeded_days integer DEFAULT NULL,
    retention_dead_letter_days integer DEFAULT NULL)
RETURNS pgrelay.queue_settings
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_settings pgrelay.queue_settings;
    v_reset text[] := coalesce(configure_queue.reset, '{}');
    v_bad text;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', configure_queue.queue, 128));
    SELECT r INTO v_bad FROM unnest(v_reset) r
    WHERE r IS NULL OR r NOT IN ('concurrency', 'max_attempts', 'lease_seconds', 'backoff_base_seconds', 'backoff_max_seconds',
                                 'retention_succeeded_days', 'retention_dead_letter_days')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('cannot reset %s: reset takes concurrency, max_attempts, lease_seconds, backoff_base_seconds, '
                             'backoff_max_seconds, retention_succeeded_days, retention_dead_letter_days',
                             coalesce(quote_literal(v_bad), 'NULL'));
    END IF;
    PERFORM pgrelay._check(pgrelay._range_error('concurrency', configure_queue.concurrency, 1, 100000), 'PR001',
                           'pause the queue to stop it; reset => ''{concurrency}'' removes the limit');
    PERFORM pgrelay._check(coalesce(
        pgrelay._range_error('max_attempts', configure_queue.max_attempts, 1, 1000),
        pgrelay._range_error('lease_seconds', configure_queue.lease_seconds, 1, 86400),
        pgrelay._range_error('backoff_base_seconds', configure_queue.backoff_base_seconds, 0.001, 86400),
        pgrelay._range_error('backoff_max_seconds', configure_queue.backoff_max_seconds, 0.001, 604800, ' (a week)'),
        pgrelay._range_error('retention_succeeded_days', configure_queue.retention_succeeded_days, 0, 36500),
        pgrelay._range_error('retention_dead_letter_days', configure_queue.retention_dead_letter_days, 0, 36500)));
    SELECT r INTO v_bad FROM unnest(v_reset) r
    WHERE (r = 'concurrency' AND configure_queue.concurrency IS NOT NULL)
       OR (r = 'max_attempts' AND configure_queue.max_attempts IS NOT NULL)
       OR (r = 'lease_seconds' AND configure_queue.lease_seconds IS NOT NULL)
       OR (r = 'backoff_base_seconds' AND configure_queue.backoff_base_seconds IS NOT NULL)
       OR (r = 'backoff_max_seconds' AND configure_queue.backoff_max_seconds IS NOT NULL)
       OR (r = 'retention_succeeded_days' AND configure_queue.retention_succeeded_days IS NOT NULL)
       OR (r = 'retention_dead_letter_days' AND configure_queue.retention_dead_letter_days IS NOT NULL)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001', MESSAGE = format('%s is both set and reset; do one or the other', v_bad);
    END IF;

    INSERT INTO pgrelay._queues AS q (queue, concurrency, max_attempts, lease_seconds, backoff_base_seconds, backoff_max_seconds,
                                      retention_succeeded_days, retention_dead_letter_days)
    VALUES (configure_queue.queue, configure_queue.concurrency, configure_queue.max_attempts, configure_queue.lease_seconds,
            configure_queue.backoff_base_seconds, configure_queue.backoff_max_seconds,
            configure_queue.retention_succeeded_days, configure_queue.retention_dead_letter_days)
    ON CONFLICT ON CONSTRAINT _queues_pkey DO UPDATE SET
        concurrency = CASE WHEN 'concurrency' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.concurrency, q.concurrency) END,
        max_attempts = CASE WHEN 'max_attempts' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.max_attempts, q.max_attempts) END,
        lease_seconds = CASE WHEN 'lease_seconds' = ANY (v_reset) THEN NULL ELSE coalesce(excluded.lease_seconds, q.lease_seconds) END,
        backoff_base_seconds = CASE WHEN 'backoff_base_seconds' = ANY (v_reset) THEN NULL
                                    ELSE coalesce(excluded.backoff_base_seconds, q.backoff_base_seconds) END,
        backoff_max_seconds = CASE WHEN 'backoff_max_seconds' = ANY (v_reset) THEN NULL
                                   ELSE coalesce(excluded.backoff_max_seconds, q.backoff_max_seconds) END,
        retention_succeeded_days = CASE WHEN 'retention_succeeded_days' = ANY (v_reset) THEN NULL
                                        ELSE coalesce(excluded.retention_succeeded_days, q.retention_succeeded_days) END,
        retention_dead_letter_days = CASE WHEN 'retention_dead_letter_days' = ANY (v_reset) THEN NULL
                                          ELSE coalesce(excluded.retention_dead_letter_days, q.retention_dead_letter_days) END,
        updated_at = now();

    v_settings := pgrelay._queue_settings(configure_queue.queue);
    IF v_settings.backoff_base_seconds > v_settings.backoff_max_seconds THEN
        RAISE EXCEPTION USING ERRCODE = 'PR001',
            MESSAGE = format('backoff_base_seconds (%s) must not exceed backoff_max_seconds (%s)',
                             v_settings.backoff_base_seconds, v_settings.backoff_max_seconds);
    END IF;
    IF configure_queue.retention_succeeded_days IS NOT NULL OR configure_queue.retention_dead_letter_days IS NOT NULL
       OR v_reset && '{retention_succeeded_days,retention_dead_letter_days}' THEN
        -- the jobs purge() noted as kept longer become due by the new retention
        UPDATE pgrelay._purge_later l
        SET due_at = l.finished_at + make_interval(days => CASE WHEN l.succeeded THEN v_settings.retention_succeeded_days
                                                                ELSE v_settings.retention_dead_letter_days END)
        WHERE l.queue = configure_queue.queue;
    END IF;
    RETURN v_settings;
END
$$;
COMMENT ON FUNCTION pgrelay.configure_queue(text, integer, integer, integer, double precision, double precision, text[], integer, integer) IS
'Change a queue''s settings; returns its effective settings. NULL leaves a setting as it is.

concurrency: most jobs leased at once across all workers. max_attempts (default 10), lease_seconds (30),
backoff_base_seconds (1) and backoff_max_seconds (3600) apply to jobs that do not set their own.
retention_succeeded_days (7) and retention_dead_letter_days (30, also for cancelled jobs): how long purge()
keeps finished jobs and their attempts. reset: names of settings to return to their defaults, e.g.
reset => ''{concurrency}''.

Example: SELECT * FROM pgrelay.configure_queue(''mail'', concurrency => 3, max_attempts => 5);';

CREATE FUNCTION pgrelay.pause(queue text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', pause.queue, 128));
    SELECT q.paused INTO v_was FROM pgrelay._queues q WHERE q.queue = pause.queue FOR UPDATE;
    INSERT INTO pgrelay._queues AS q (queue, paused) VALUES (pause.queue, true)
    ON CONFLICT ON CONSTRAINT _queues_pkey DO UPDATE SET paused = true, updated_at = now();
    RETURN NOT coalesce(v_was, false);
END
$$;
COMMENT ON FUNCTION pgrelay.pause(text) IS
'Stop consume() from leasing jobs of this queue (enqueue still works; leased jobs finish); true if it was running.

Example: SELECT pgrelay.pause(''mail'');';

CREATE FUNCTION pgrelay.resume(queue text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    SET plan_cache_mode = force_generic_plan SET jit = off AS $$
DECLARE
    v_was boolean;
BEGIN
    PERFORM pgrelay._check(pgrelay._name_error('queue', resume.queue, 128));
    UPDATE pgrelay._queues q SET paused = false, updated_at = now()
    FROM (SELECT o.queue, o.paused FROM pgrelay._queues o WHERE o.queue = resume.queue FOR UPDATE) old
    WHERE q.queue = old.queue
    RETURNING old.paused INTO v_was;
    IF coalesce(v_was, false) THEN
        PERFORM pgrelay._notify(resume.queue, now());
    END IF;
    RETURN coalesce(v_was, false);
END
$$;
COMMENT ON FUNCTION pgrelay.resume(text) IS
'Let consume() lease jobs of a paused queue again and wake the workers; true if it was paused.

Example: SELECT pgrelay.resume(''mail'');';
