-- (c) pgrelay: lease a batch of 100 in one transaction, ack them with ack_many in a second one.
-- pgbench (-M simple, the default) substitutes :ids and :atts inside the quotes too.
SELECT array_to_string(array_agg(id), ',') AS ids, array_to_string(array_agg(attempt), ',') AS atts
FROM pgrelay.consume('bench-worker', queues => '{bench}', batch => 100) \gset
SELECT pgrelay.ack_many(string_to_array(':ids', ',')::bigint[], string_to_array(':atts', ',')::int[]);
