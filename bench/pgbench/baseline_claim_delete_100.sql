-- (d) baseline: claim 100 due jobs with SKIP LOCKED and delete them, in one statement.
WITH c AS (
    SELECT id FROM plain_jobs
    WHERE queue = 'bench' AND status = 'pending' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
)
DELETE FROM plain_jobs t USING c WHERE t.id = c.id;
