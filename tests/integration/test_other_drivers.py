"""Enqueuing inside an existing transaction from psycopg 3 and SQLAlchemy's AsyncSession, exactly as
the README shows it: these call the SQL function directly."""

from __future__ import annotations

import json

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine


def test_psycopg3_enqueues_in_its_transaction(db, dsn):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    with psycopg.connect(dsn) as conn:  # psycopg opens a transaction on the first statement
        conn.execute("INSERT INTO orders VALUES (1)")
        job_id = conn.execute(
            "SELECT pgrelay.enqueue(task => %s, payload => %s::jsonb)", ["orders.created", json.dumps({"id": 1})]
        ).fetchone()[0]
        conn.rollback()
        conn.execute("INSERT INTO orders VALUES (2)")
        kept = conn.execute(
            "SELECT pgrelay.enqueue(task => %s, payload => %s::jsonb)", ["orders.created", json.dumps({"id": 2})]
        ).fetchone()[0]
        conn.commit()
    assert db.execute("SELECT array_agg(id) FROM pgrelay.jobs").fetchone()[0] == [kept]
    assert job_id != kept


@pytest.mark.asyncio
async def test_sqlalchemy_async_session_enqueues_in_its_transaction(db, dsn):
    db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        async with AsyncSession(engine) as session:
            async with session.begin():
                await session.execute(text("INSERT INTO orders VALUES (1)"))
                job_id = (await session.execute(
                    text("SELECT pgrelay.enqueue(task => :task, payload => CAST(:payload AS jsonb))"),
                    {"task": "orders.created", "payload": json.dumps({"id": 1})},
                )).scalar_one()
            with pytest.raises(RuntimeError):
                async with session.begin():
                    await session.execute(text("INSERT INTO orders VALUES (2)"))
                    await session.execute(text("SELECT pgrelay.enqueue(task => 'orders.created')"))
                    raise RuntimeError("rolled back")
    finally:
        await engine.dispose()
    assert db.execute("SELECT array_agg(id) FROM pgrelay.jobs").fetchone()[0] == [job_id]
    assert db.execute("SELECT array_agg(id) FROM orders").fetchone()[0] == [1]
