"""The pgrelay_producer role: enough to enqueue through every producer function, nothing more."""

from __future__ import annotations

from tests.sql.helpers import bulk, call, job, job_count, raises_sqlstate


def test_the_producer_role_enqueues_through_every_producer_function(db, connect):
    db.execute("""
        CREATE TABLE orders (id int);
        CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.created');
        GRANT INSERT ON orders TO pgrelay_producer;
    """)
    producer = connect()
    producer.execute("SET ROLE pgrelay_producer")

    ids = [
        call(producer, "enqueue", task="a", idempotency_key="k"),
        call(producer, "enqueue_http", url="https://example.com/"),
        *bulk(producer, [{"task": "b"}, {"task": "c", "dedupe_key": "d"}]),
    ]
    producer.execute("INSERT INTO orders VALUES (1)")

    assert job(producer, ids[0])["task"] == "a"
    assert job_count(db) == 5


def test_the_producer_role_cannot_read_the_tables_or_consume(db, connect):
    producer = connect()
    producer.execute("SET ROLE pgrelay_producer")

    with raises_sqlstate("42501"):
        producer.execute("SELECT count(*) FROM pgrelay._jobs")
    with raises_sqlstate("42501"):
        producer.execute("SELECT * FROM pgrelay.consume('w')")
