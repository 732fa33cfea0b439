"""pgrelay.enqueue_trigger: a trigger function that enqueues every row change as a job with payload
{op, schema, table, old, new}, in the transaction that changed the row."""

from __future__ import annotations

import psycopg
import pytest

from tests.sql.helpers import job_count, raises_sqlstate


@pytest.fixture
def items(db):
    """A table shop.items with the documented trigger, task 'search.reindex' on queue 'idx'."""
    db.execute("""
        CREATE SCHEMA shop;
        CREATE TABLE shop.items (id int PRIMARY KEY, name text, tags text[]);
        CREATE TRIGGER reindex AFTER INSERT OR UPDATE OR DELETE ON shop.items
            FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('search.reindex', 'idx');
    """)
    return db


def jobs(db):
    return db.execute("SELECT task, queue, kind, status, payload FROM pgrelay.jobs ORDER BY id").fetchall()


def test_insert_update_and_delete_each_enqueue_a_job_with_the_row_change(items):
    items.execute("INSERT INTO shop.items VALUES (1, 'lamp', '{a}')")
    items.execute("UPDATE shop.items SET name = 'desk lamp' WHERE id = 1")
    items.execute("DELETE FROM shop.items WHERE id = 1")

    lamp = {"id": 1, "name": "lamp", "tags": ["a"]}
    desk_lamp = {"id": 1, "name": "desk lamp", "tags": ["a"]}
    common = {"schema": "shop", "table": "items"}
    assert jobs(items) == [
        ("search.reindex", "idx", "handler", "pending", {"op": "INSERT", **common, "old": None, "new": lamp}),
        ("search.reindex", "idx", "handler", "pending", {"op": "UPDATE", **common, "old": lamp, "new": desk_lamp}),
        ("search.reindex", "idx", "handler", "pending", {"op": "DELETE", **common, "old": desk_lamp, "new": None}),
    ]


def test_one_job_per_row_of_a_multi_row_statement(items):
    items.execute("INSERT INTO shop.items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 3) g")
    items.execute("UPDATE shop.items SET name = upper(name)")

    payloads = [row[4] for row in jobs(items)]
    assert [(p["op"], (p["new"] or {}).get("id")) for p in payloads] == [
        ("INSERT", 1), ("INSERT", 2), ("INSERT", 3), ("UPDATE", 1), ("UPDATE", 2), ("UPDATE", 3)]


def test_the_queue_argument_is_optional(db):
    db.execute("""
        CREATE TABLE notes (id int);
        CREATE TRIGGER t AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('notes.created');
        INSERT INTO notes VALUES (1);
    """)
    assert db.execute("SELECT task, queue, payload->>'schema' FROM pgrelay.jobs").fetchall() == [
        ("notes.created", "default", "public")]


def test_a_rolled_back_insert_leaves_no_job(items):
    with items.transaction() as tx:
        items.execute("INSERT INTO shop.items VALUES (1, 'lamp')")
        assert job_count(items) == 1
        raise psycopg.Rollback(tx)

    assert job_count(items) == 0
    assert items.execute("SELECT count(*) FROM shop.items").fetchone()[0] == 0


def test_a_failing_statement_after_the_trigger_rolls_its_job_back(items):
    items.execute("INSERT INTO shop.items VALUES (1, 'lamp')")
    with raises_sqlstate("23505"):
        items.execute("INSERT INTO shop.items VALUES (2, 'chair'), (1, 'duplicate')")
    assert [row[4]["new"]["id"] for row in jobs(items)] == [1]


def test_a_before_trigger_enqueues_and_still_lets_the_row_change_through(db):
    db.execute("""
        CREATE TABLE items (id int PRIMARY KEY, name text);
        CREATE TRIGGER reindex BEFORE INSERT OR UPDATE OR DELETE ON items
            FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('search.reindex');
    """)

    db.execute("INSERT INTO items VALUES (1, 'lamp'), (2, 'chair')")
    assert db.execute("SELECT array_agg(name ORDER BY id) FROM items").fetchone()[0] == ["lamp", "chair"]
    db.execute("UPDATE items SET name = 'desk' WHERE id = 1")
    assert db.execute("SELECT array_agg(name ORDER BY id) FROM items").fetchone()[0] == ["desk", "chair"]
    db.execute("DELETE FROM items WHERE id = 2")
    assert db.execute("SELECT array_agg(name ORDER BY id) FROM items").fetchone()[0] == ["desk"]

    assert [row[4]["op"] for row in jobs(db)] == ["INSERT", "INSERT", "UPDATE", "DELETE"]


def test_a_statement_trigger_enqueues_the_same_jobs_as_a_row_trigger_for_insert_and_delete(db):
    db.execute("""
        CREATE SCHEMA shop;
        CREATE TABLE shop.items (id int PRIMARY KEY, name text, tags text[]);
        CREATE TRIGGER added AFTER INSERT ON shop.items REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('search.reindex', 'idx');
        CREATE TRIGGER removed AFTER DELETE ON shop.items REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('search.forget', 'idx');
    """)
    db.execute("INSERT INTO shop.items SELECT g, 'item ' || g, '{a}' FROM generate_series(1, 3) g")
    db.execute("DELETE FROM shop.items WHERE id = 2")
    db.execute("INSERT INTO shop.items SELECT 9, 'none' WHERE false")   # no rows: no job

    common = {"schema": "shop", "table": "items"}
    row = {"id": 2, "name": "item 2", "tags": ["a"]}
    found = jobs(db)
    assert [(task, queue, kind, status) for task, queue, kind, status, _ in found] == \
        [("search.reindex", "idx", "handler", "pending")] * 3 + [("search.forget", "idx", "handler", "pending")]
    inserted = [payload for *_, payload in found[:3]]
    assert sorted(p["new"]["id"] for p in inserted) == [1, 2, 3]
    assert {"op": "INSERT", **common, "old": None, "new": row} in inserted
    assert found[3][4] == {"op": "DELETE", **common, "old": row, "new": None}


def test_a_statement_trigger_without_its_transition_table_is_refused_with_pr001(db):
    db.execute("""
        CREATE TABLE items (id int);
        CREATE TRIGGER reindex AFTER INSERT ON items
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('search.reindex');
    """)

    with raises_sqlstate("PR001") as error:
        db.execute("INSERT INTO items VALUES (1)")

    assert "NEW TABLE AS new_rows" in error.value.diag.message_primary
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    assert job_count(db) == 0


def test_a_statement_trigger_on_update_is_refused_with_pr001_pointing_to_a_row_trigger(db):
    db.execute("""
        CREATE TABLE items (id int);
        INSERT INTO items VALUES (1);
        CREATE TRIGGER reindex AFTER UPDATE ON items REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('search.reindex');
    """)

    with raises_sqlstate("PR001") as error:
        db.execute("UPDATE items SET id = 2")

    assert "FOR EACH ROW" in error.value.diag.message_hint
    assert db.execute("SELECT id FROM items").fetchone()[0] == 1
    assert job_count(db) == 0


def test_a_statement_trigger_with_a_bad_task_is_refused_and_writes_nothing(db):
    db.execute("""
        CREATE TABLE items (id int);
        CREATE TRIGGER t AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION pgrelay.enqueue_trigger('bad task');
    """)

    with raises_sqlstate("PR001") as error:
        db.execute("INSERT INTO items SELECT generate_series(1, 5)")

    assert "task" in error.value.diag.message_primary
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    assert job_count(db) == 0


@pytest.mark.parametrize("arguments", ["", "'a', 'b', 'c'"], ids=["none", "three"])
def test_a_wrong_number_of_arguments_is_refused_with_pr001_naming_the_trigger(db, arguments):
    db.execute(f"""
        CREATE TABLE items (id int);
        CREATE TRIGGER reindex_items AFTER INSERT ON items
            FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger({arguments});
    """)

    with raises_sqlstate("PR001") as error:
        db.execute("INSERT INTO items VALUES (1)")

    assert "reindex_items" in error.value.diag.message_primary
    assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 0
    assert job_count(db) == 0


def test_a_bad_task_or_queue_argument_is_refused_with_pr001_and_the_row_is_not_written(db):
    db.execute("""
        CREATE TABLE a (id int);
        CREATE TRIGGER t AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('bad task');
        CREATE TABLE b (id int);
        CREATE TRIGGER t AFTER INSERT ON b FOR EACH ROW EXECUTE FUNCTION pgrelay.enqueue_trigger('ok', 'bad/queue');
    """)

    with raises_sqlstate("PR001") as error:
        db.execute("INSERT INTO a VALUES (1)")
    assert "task" in error.value.diag.message_primary
    with raises_sqlstate("PR001") as error:
        db.execute("INSERT INTO b VALUES (1)")
    assert "queue" in error.value.diag.message_primary

    assert db.execute("SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b)").fetchone()[0] == 0
    assert job_count(db) == 0
