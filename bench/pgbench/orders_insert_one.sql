-- (3) one order per transaction; the AFTER INSERT trigger (if any) enqueues one job for it.
\set customer random(1, 100000)
\set cents random(100, 100000)
INSERT INTO bench_orders (customer, total) VALUES (:customer, :cents / 100.0);
