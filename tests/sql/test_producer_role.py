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


# --- a producer reads only the jobs it enqueued (get_job) ---------------------------------------


def login(db, connect, name: str, *groups: str):
    """A login role in the given group roles, and a connection as it (dropped by the test's database)."""
    db.execute(f'DROP ROLE IF EXISTS "{name}"')
    db.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {", ".join(groups)}')
    return connect(user=name)


def get_job(conn, job_id: int):
    return conn.execute("SELECT pgrelay.get_job(%s)", (job_id,)).fetchone()[0]


def test_a_producer_login_reads_its_own_jobs_and_no_one_elses(db, connect):
    try:
        alice = login(db, connect, "alice_app", "pgrelay_producer")
        bob = login(db, connect, "bob_app", "pgrelay_producer")
        reader = login(db, connect, "ops_reader", "pgrelay_reader")
        mine = call(alice, "enqueue", task="alice.t", payload={"card": "4242"})
        theirs = call(bob, "enqueue", task="bob.t")

        assert get_job(alice, mine)["enqueued_by"] == "alice_app"
        assert get_job(alice, theirs) is None  # as unknown as an id that never existed
        assert get_job(bob, mine) is None
        assert get_job(bob, theirs)["task"] == "bob.t"
        assert {get_job(reader, mine)["task"], get_job(reader, theirs)["task"]} == {"alice.t", "bob.t"}
    finally:
        for name in ("alice_app", "bob_app", "ops_reader"):
            db.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_under_one_authenticator_login_the_role_postgrest_sets_is_the_enqueuer(db, connect):
    """PostgREST logs in once and sets the role per request with set_config('role', ..., true)."""
    try:
        db.execute('CREATE ROLE "tenant_a" NOLOGIN IN ROLE pgrelay_producer')
        db.execute('CREATE ROLE "tenant_b" NOLOGIN IN ROLE pgrelay_producer')
        authenticator = login(db, connect, "authenticator_login", "tenant_a", "tenant_b", "pgrelay_reader")
        db.execute('ALTER ROLE "authenticator_login" NOINHERIT')

        def request(role: str, sql: str, *args):
            with authenticator.transaction():
                authenticator.execute("SELECT set_config('role', %s, true)", (role,))
                return authenticator.execute(sql, args).fetchone()[0]

        job_a = request("tenant_a", "SELECT pgrelay.enqueue('tenant.a')")
        job_b = request("tenant_b", "SELECT pgrelay.enqueue('tenant.b')")

        assert request("tenant_a", "SELECT pgrelay.get_job(%s)", job_a)["enqueued_by"] == "tenant_a"
        assert request("tenant_a", "SELECT pgrelay.get_job(%s)", job_b) is None
        assert request("tenant_b", "SELECT pgrelay.get_job(%s)", job_a) is None
        assert request("pgrelay_reader", "SELECT pgrelay.get_job(%s)", job_b)["enqueued_by"] == "tenant_b"
    finally:
        for name in ("authenticator_login", "tenant_a", "tenant_b"):
            db.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_every_way_of_enqueuing_records_the_enqueuer(db, connect):
    db.execute("""
        CREATE TABLE orders (id int);
        CREATE TRIGGER row_t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.row');
        CREATE TRIGGER stmt_t AFTER INSERT ON orders REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('orders.statement');
        GRANT INSERT ON orders TO pgrelay_producer;
    """)
    try:
        producer = login(db, connect, "shop_app", "pgrelay_producer")
        call(producer, "enqueue", task="single")
        call(producer, "enqueue", task="keyed", idempotency_key="k", dedupe_key="d")
        call(producer, "enqueue_http", url="https://example.com/")
        bulk(producer, [{"task": "b1"}, {"task": "b2"}])
        bulk(producer, [{"task": "b3", "idempotency_key": "k3"}])
        producer.execute("SELECT pgrelay.enqueue_many('many', ARRAY['{}'::jsonb, '{}'::jsonb])")
        producer.execute("INSERT INTO orders VALUES (1), (2)")

        by = db.execute("SELECT task, enqueued_by FROM pgrelay.jobs ORDER BY id").fetchall()
        assert len(by) == 12 and {who for _, who in by} == {"shop_app"}, by
    finally:
        db.execute("DROP TABLE orders")
        db.execute('DROP ROLE IF EXISTS "shop_app"')


def test_a_replay_stays_the_original_enqueuers_job(db, connect):
    try:
        producer = login(db, connect, "replayed_app", "pgrelay_producer")
        original = call(producer, "enqueue", task="to.replay", queue="replays")
        [claimed] = db.execute("SELECT id, attempt FROM pgrelay.consume('w', '{replays}')").fetchall()
        db.execute("SELECT pgrelay.nack(%s, %s, 'no', permanent => true)", claimed)

        replay = db.execute("SELECT pgrelay.replay(%s)", (original,)).fetchone()[0]  # by an operator

        assert get_job(producer, replay)["replayed_from"] == original
    finally:
        db.execute('DROP ROLE IF EXISTS "replayed_app"')
