-- (b) baseline: one plain single-row INSERT per transaction.
INSERT INTO plain_jobs (queue, task, payload, priority, run_at, status)
VALUES ('default', 'bench.noop', '{"n":1}', 0, now(), 'pending');
