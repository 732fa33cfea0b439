-- (a) pgrelay: enqueue one job per transaction.
SELECT pgrelay.enqueue('bench.noop', '{"n":1}');
