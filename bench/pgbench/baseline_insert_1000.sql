-- (e) baseline: INSERT 1000 rows in one statement.
INSERT INTO plain_jobs (queue, task, payload, priority, run_at, status)
SELECT 'default', 'bench.noop', '{"n":1}', 0, now(), 'pending' FROM generate_series(1, 1000);
