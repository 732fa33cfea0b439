-- ---------------------------------------------------------------------------------------------
-- Inspection
-- ---------------------------------------------------------------------------------------------

CREATE FUNCTION pgrelay.job_statuses()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['pending', 'leased'] || ARRAY(SELECT pgrelay._status_name(c) FROM unnest('{s,d,c}'::"char"[]) c)
$$;
COMMENT ON FUNCTION pgrelay.job_statuses() IS
'The statuses a job shows (the jobs view, get_job), in the order of a job''s life: pending, leased, then
how it finished: succeeded, dead_letter or cancelled.

Example: SELECT pgrelay.job_statuses();';

CREATE VIEW pgrelay.jobs AS
    SELECT j.id, j.queue, j.task, pgrelay._kind_name(j.kind) AS kind,
           CASE WHEN j.leased_by IS NULL THEN 'pending' ELSE 'leased' END AS status,
           j.priority, j.run_at, j.attempt,
           (j.options).max_attempts, (j.options).timeout_seconds,
           pgrelay._redact_http_payload(j.kind, j.payload) AS payload,
           (j.options).idempotency_key, (j.options).dedupe_key, (j.options).trace_id,
           (j.options).replayed_from, j.last_error, NULL::jsonb AS result, j.leased_by, j.lease_expires_at,
           j.created_at, NULL::timestamptz AS finished_at, pg_catalog.pg_get_userbyid(j.enqueued_by) AS enqueued_by
    FROM pgrelay._jobs j
    UNION ALL
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind), pgrelay._status_name(f.status), f.priority, f.run_at, f.attempt,
           (f.options).max_attempts, (f.options).timeout_seconds, pgrelay._redact_http_payload(f.kind, f.payload),
           (f.options).idempotency_key, (f.options).dedupe_key, (f.options).trace_id,
           (f.options).replayed_from, f.last_error, f.result, NULL::text, NULL::timestamptz,
           f.created_at, f.finished_at, pg_catalog.pg_get_userbyid(f.enqueued_by)
    FROM pgrelay._finished f;
COMMENT ON VIEW pgrelay.jobs IS
'Every job, active or finished, with its status: pending, leased, succeeded, dead_letter or cancelled.

Filter by id: both tables are indexed by it. A filter by queue reads the whole history (an index for it
would cost every ack); for a queue use queue_stats and dead_letters (indexed), or filter by id range too.
max_attempts NULL means the queue''s setting.
enqueued_by: the role that enqueued the job (NULL for jobs enqueued before pgrelay 0.3.0).';

CREATE FUNCTION pgrelay.get_job(id bigint)
RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_jsonb(j) - 'max_attempts'
           || jsonb_build_object('max_attempts',
                  coalesce(j.max_attempts, (SELECT q.max_attempts FROM pgrelay._queues q WHERE q.queue = j.queue),
                           pgrelay._default_max_attempts()))
    FROM pgrelay.jobs j
    WHERE j.id = get_job.id
      -- who may read the jobs view (readers, admins) reads every job; anyone else (a producer) only
      -- those its role enqueued: another's job is as unknown as a missing one
      AND (pg_catalog.has_table_privilege(pgrelay._caller(), 'pgrelay.jobs', 'SELECT')
           OR j.enqueued_by = pg_catalog.pg_get_userbyid(pgrelay._caller()))
$$;
COMMENT ON FUNCTION pgrelay.get_job(bigint) IS
'The job with this id as JSON, wherever it is (active or finished); NULL for an unknown id.

A caller who may read the jobs view (pgrelay_reader, pgrelay_admin) reads any job; any other (a producer,
through PostgREST too) reads only the jobs its role enqueued, and NULL for the others.
Keys: id, queue, task, kind, status, priority, run_at, attempt, max_attempts, timeout_seconds, payload,
idempotency_key, dedupe_key, trace_id, replayed_from, last_error, result, leased_by, lease_expires_at,
created_at, finished_at, enqueued_by.

Example: SELECT pgrelay.get_job(101);';

CREATE FUNCTION pgrelay.get_attempts(id bigint)
RETURNS SETOF pgrelay.attempt
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM (
        SELECT a.job_id, a.attempt, a.worker, a.started_at, a.finished_at, a.outcome, a.error, a.details
        FROM pgrelay._attempts a WHERE a.job_id = get_attempts.id
        UNION ALL
        SELECT f.id, f.attempt, f.leased_by, f.leased_at, f.finished_at, 'succeeded', NULL, NULL
        FROM pgrelay._finished f WHERE f.id = get_attempts.id AND f.status = 's' AND f.attempt > 0
        UNION ALL
        SELECT j.id, j.attempt, j.leased_by, j.leased_at, NULL, 'running', NULL, NULL
        FROM pgrelay._jobs j WHERE j.id = get_attempts.id AND j.leased_by IS NOT NULL
    ) a
    ORDER BY a.attempt
$$;
COMMENT ON FUNCTION pgrelay.get_attempts(bigint) IS
'The attempt history of a job, oldest first: who ran it, when, how it ended (succeeded, failed, timeout,
lease_expired, cancelled, or running for the current lease) and the error.

Example: SELECT * FROM pgrelay.get_attempts(101);';

-- Cheap however long the history: finished jobs come from the _counts counters (a few rows per queue
-- and minute), never from _finished; active jobs from the hot table.
CREATE VIEW pgrelay.queue_stats AS
    WITH active AS (
        SELECT j.queue,
               count(*) FILTER (WHERE j.leased_by IS NULL AND j.run_at <= now()) AS pending,
               count(*) FILTER (WHERE j.leased_by IS NULL AND j.run_at > now()) AS scheduled,
               count(*) FILTER (WHERE j.leased_by IS NOT NULL) AS leased,
               min(j.run_at) FILTER (WHERE j.leased_by IS NULL AND j.run_at <= now()) AS oldest_due
        FROM pgrelay._jobs j GROUP BY j.queue
    ), counted AS (
        SELECT c.queue,
               sum(c.succeeded) AS succeeded,
               sum(c.dead_letter) AS dead_letter,
               sum(c.cancelled) AS cancelled,
               sum(c.succeeded) FILTER (WHERE c.minute = date_trunc('minute', now()) - interval '1 minute') AS succeeded_last_minute,
               sum(c.succeeded) FILTER (WHERE c.minute >= date_trunc('minute', now()) - interval '1 hour'
                                          AND c.minute < date_trunc('minute', now())) AS succeeded_last_hour,
               sum(c.dead_letter) FILTER (WHERE c.minute >= date_trunc('minute', now()) - interval '1 hour'
                                            AND c.minute < date_trunc('minute', now())) AS dead_letter_last_hour
        FROM pgrelay._counts c GROUP BY c.queue
    ), names AS (
        -- (every queue a job has named has a _queues row; it also has active jobs or counters)
        SELECT queue FROM active UNION SELECT queue FROM counted UNION SELECT queue FROM pgrelay._queues
    )
    SELECT n.queue,
           coalesce(a.pending, 0) AS pending,
           coalesce(a.scheduled, 0) AS scheduled,
           coalesce(a.leased, 0) AS leased,
           coalesce(c.succeeded, 0)::bigint AS succeeded,
           coalesce(c.dead_letter, 0)::bigint AS dead_letter,
           coalesce(c.cancelled, 0)::bigint AS cancelled,
           now() - a.oldest_due AS oldest_pending_age,
           coalesce(q.paused, false) AS paused,
           q.concurrency,
           coalesce(c.succeeded_last_minute, 0)::bigint AS succeeded_last_minute,
           coalesce(c.succeeded_last_hour, 0)::bigint AS succeeded_last_hour,
           coalesce(c.dead_letter_last_hour, 0)::bigint AS dead_letter_last_hour,
           coalesce(q.max_attempts, pgrelay._default_max_attempts()) AS max_attempts,
           coalesce(q.lease_seconds, pgrelay._default_lease_seconds()) AS lease_seconds,
           coalesce(q.retention_succeeded_days, pgrelay._default_retention_succeeded_days()) AS retention_succeeded_days,
           coalesce(q.retention_dead_letter_days, pgrelay._default_retention_dead_letter_days()) AS retention_dead_letter_days
    FROM names n
    LEFT JOIN active a ON a.queue = n.queue
    LEFT JOIN counted c ON c.queue = n.queue
    LEFT JOIN pgrelay._queues q ON q.queue = n.queue;
COMMENT ON VIEW pgrelay.queue_stats IS
'Per queue: jobs due (pending), scheduled for later, leased; finished jobs held in the history (succeeded,
dead_letter, cancelled: until purge() removes them); the age of the oldest due job; paused and the limits.

succeeded_last_minute: jobs that succeeded in the last whole minute; succeeded_last_hour and
dead_letter_last_hour: in the 60 whole minutes before this one. max_attempts, lease_seconds and the
retention days are the queue''s effective settings; concurrency NULL means unlimited.';

CREATE VIEW pgrelay.expired_leases AS
    SELECT j.id, j.queue, j.task, j.attempt, j.leased_by, j.leased_at, j.lease_expires_at,
           now() - j.lease_expires_at AS expired_for
    FROM pgrelay._jobs j
    WHERE j.leased_by IS NOT NULL AND j.lease_expires_at < now();
COMMENT ON VIEW pgrelay.expired_leases IS
'Leased jobs whose lease has expired and that recover() has not yet returned to pending.';

CREATE VIEW pgrelay.dead_letters AS
    SELECT f.id, f.queue, f.task, pgrelay._kind_name(f.kind) AS kind, f.attempt, f.last_error,
           pgrelay._redact_http_payload(f.kind, f.payload) AS payload, (f.options).trace_id, f.created_at, f.finished_at
    FROM pgrelay._finished f
    WHERE f.status = 'd' AND f.replayed_as IS NULL;
COMMENT ON VIEW pgrelay.dead_letters IS
'Jobs that failed permanently or ran out of attempts and have not been replayed, with their last error.

replay(id) or replay_dead_letters(queue) runs them again; purge() removes them after the queue''s retention.';

-- Bounded: the last hour of _attempts through its BRIN index, each attempt''s job by primary key.
CREATE VIEW pgrelay.recent_failures AS
    SELECT coalesce(j.queue, f.queue) AS queue, coalesce(j.task, f.task) AS task,
           count(*) AS failures,
           (array_agg(a.error ORDER BY a.finished_at DESC))[1] AS last_error,
           max(a.finished_at) AS last_failed_at
    FROM pgrelay._attempts a
    LEFT JOIN pgrelay._jobs j ON j.id = a.job_id
    LEFT JOIN pgrelay._finished f ON f.id = a.job_id
    WHERE a.finished_at > now() - interval '1 hour' AND a.outcome <> 'succeeded'
    GROUP BY 1, 2;
COMMENT ON VIEW pgrelay.recent_failures IS
'Failed attempts of the last hour per queue and task (failed, timed out, lease expired, cancelled), with
the latest error.';

-- Leases are counted through the lease index (only leased rows), once for all workers.
CREATE VIEW pgrelay.workers AS
    SELECT w.worker, w.host, w.pid, w.queues, w.started_at, w.last_seen,
           coalesce(l.leased, 0) AS leased,
           CASE WHEN w.last_seen >= now() - make_interval(secs => coalesce(w.lease_seconds, pgrelay._default_lease_seconds()))
                THEN 'alive' ELSE 'stale' END AS status,
           w.lease_seconds,
           EXISTS (SELECT 1 FROM pgrelay._waiting i WHERE i.worker = w.worker AND i.until >= now()) AS waiting
    FROM pgrelay._workers w
    LEFT JOIN (SELECT j.leased_by, count(*) AS leased FROM pgrelay._jobs j
               WHERE j.lease_expires_at IS NOT NULL GROUP BY j.leased_by) l ON l.leased_by = w.worker;
COMMENT ON VIEW pgrelay.workers IS
'Workers by their last heartbeat, with the number of leases each holds now.

status: alive, or stale when not heard from for a whole lease period (lease_seconds, default 30; a worker
heartbeats three times per lease); purge() forgets workers gone for a week. waiting: it found nothing to
claim and waits for a NOTIFY (idle()).';
