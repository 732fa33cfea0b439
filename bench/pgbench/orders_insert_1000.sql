-- (3) 1000 orders in one statement; a FOR EACH ROW trigger (if any) enqueues 1000 jobs.
INSERT INTO bench_orders (customer, total)
SELECT 1 + (random() * 99999)::int, round((1 + random() * 999)::numeric, 2) FROM generate_series(1, 1000);
