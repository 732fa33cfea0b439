-- bench/compare.py's cycle_reference, the physical reference for pgrelay's consume + ack_many
-- (consume_ack_100.sql): the same two transactions in plain SQL on plain_jobs. The first claims 100 due
-- jobs in claim order (FOR UPDATE SKIP LOCKED) and marks them taken; the second moves them, still
-- taken, to plain_jobs_archive. pgbench (-M simple) substitutes :ids inside the quotes too.
WITH c AS (
    SELECT id FROM plain_jobs
    WHERE queue = 'bench' AND status = 'pending' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT 100
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE plain_jobs t SET status = 'running' FROM c WHERE t.id = c.id RETURNING t.id
)
SELECT array_to_string(array_agg(id), ',') AS ids FROM claimed \gset
WITH d AS (
    DELETE FROM plain_jobs WHERE id = ANY (string_to_array(':ids', ',')::bigint[]) AND status = 'running'
    RETURNING id, queue, task, payload, priority, run_at
)
INSERT INTO plain_jobs_archive (id, queue, task, payload, priority, run_at) SELECT * FROM d;
